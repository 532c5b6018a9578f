/*
 * VirtioAdmin run-time plugin ABI, version 1.
 *
 * A plugin is a shared object that exports
 *
 *     const va_plugin_v1 *virtio_admin_plugin_entry(uint32_t host_abi_version);
 *
 * returning a static table (or NULL when it cannot serve that host ABI). The host checks
 * abi_version and struct_size before reading anything else, so a mismatch is a clear
 * error rather than a crash. Everything is plain C: a plugin built with any toolchain
 * (or Swift via @_cdecl) works with any host build.
 *
 * An operation turns arguments into ONE admin command (encode) and its result into
 * output (decode). Arguments and output are text: lines of "key=value\n".
 * The host always passes "vf=N" (0-based, as sysfs virtfnN) when the user gave --vf; the
 * SR-IOV group member id on the wire is N + 1.
 */
#ifndef VIRTIO_ADMIN_PLUGIN_H
#define VIRTIO_ADMIN_PLUGIN_H

#include <stdint.h>

#define VIRTIO_ADMIN_PLUGIN_ABI_VERSION 1u
#define VIRTIO_ADMIN_PLUGIN_ENTRY "virtio_admin_plugin_entry"

/* Return values of encode/decode. */
#define VA_PLUGIN_OK 0
#define VA_PLUGIN_BAD_ARGUMENT 1   /* message says which argument and why */
#define VA_PLUGIN_BAD_RESULT 2     /* the device's result does not decode */

typedef struct va_plugin_operation_v1 {
    const char *name;        /* e.g. "get" */
    const char *summary;     /* one line */
    const char *parameters;  /* comma-separated names the operation reads, "vf,mac"; a trailing '?' marks optional */
    /* Builds the command. data_length: in = capacity of data, out = bytes used. */
    int32_t (*encode)(const char *arguments, uint16_t *opcode, uint64_t *member, uint8_t *data, uint32_t *data_length,
                      uint32_t *result_length, char *message, uint32_t message_capacity);
    /* Formats the command-specific result as "key=value\n" lines into output. */
    int32_t (*decode)(const uint8_t *result, uint32_t result_length, char *output, uint32_t output_capacity,
                      char *message, uint32_t message_capacity);
} va_plugin_operation_v1;

typedef struct va_plugin_v1 {
    uint32_t abi_version;    /* VIRTIO_ADMIN_PLUGIN_ABI_VERSION the plugin was built for */
    uint32_t struct_size;    /* sizeof(va_plugin_v1) as the plugin saw it */
    const char *name;
    const char *version;
    const char *summary;
    uint16_t group_type;     /* 1 = SR-IOV */
    uint16_t reserved;
    uint32_t opcode_count;
    const uint16_t *opcodes;           /* opcodes the plugin sends (checked against LIST_QUERY) */
    const char *const *opcode_names;   /* their names, same order */
    uint32_t operation_count;
    const va_plugin_operation_v1 *operations;
} va_plugin_v1;

typedef const va_plugin_v1 *(*va_plugin_entry_fn)(uint32_t host_abi_version);

#endif
