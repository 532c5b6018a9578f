/*
 * VirtioAdmin run-time plugin ABI, versions 1 and 2.
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
 *
 * ABI 2 (va_plugin_v2): an operation runs any number of admin commands through a host
 * callback (host->run) and gets structured arguments (name/value pairs, the VF index
 * already checked). The host checks every command before sending it: its opcode must be
 * one the plugin declared, its group type one the plugin declared and the PF has, and its
 * member a member of that group (SR-IOV: 0 for the owner or 1..NumVFs; self group: 0).
 * The host calls virtio_admin_plugin_entry(2) first and, when that returns NULL,
 * virtio_admin_plugin_entry(1); it reads abi_version to tell the two tables apart, so
 * ABI 1 plugins still load.
 *
 * A plugin loaded by the service (`virtio-admin serve`) runs in a process that may hold
 * more than 1024 open descriptors (the service raises its soft RLIMIT_NOFILE to 4096): a
 * plugin that waits on descriptors of its own must use poll(2), not select(2).
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

/* ---- ABI 2 ---- */

#define VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2 2u

/* More return values of an ABI 2 operation's run. */
#define VA_PLUGIN_HOST_REFUSED 3   /* host->run refused a command (message from the host) */
#define VA_PLUGIN_DEVICE_REFUSED 4 /* the device answered a non-OK status; message explains it */
#define VA_PLUGIN_FAILED 5         /* host->run could not complete a command (timeout, device failure) */

/* Return values of host->run. */
#define VA_HOST_OK 0               /* the device answered; command->status says how */
#define VA_HOST_REFUSED 3          /* not sent: undeclared opcode, wrong group type or member, too large */
#define VA_HOST_FAILED 5           /* sent but not completed (timeout, the device failed) */

/* Group types an ABI 2 plugin declares (bit mask). */
#define VA_GROUP_SELF   (1u << 0)
#define VA_GROUP_SRIOV  (1u << 1)

/* One argument; a list parameter repeats its name. */
typedef struct va_argument {
    const char *name;
    const char *value;
} va_argument;

typedef struct va_arguments_v2 {
    uint32_t count;
    uint32_t reserved;
    const va_argument *items;
    int64_t vf;              /* --vf (0-based, checked against NumVFs by the host), or -1 */
    uint64_t num_vfs;        /* VFs of the SR-IOV group now */
    uint16_t member_type;    /* virtio device id of the VFs (1 net, 2 block, ...), 0 unknown */
    uint16_t reserved2[3];
} va_arguments_v2;

/* One admin command for host->run. */
typedef struct va_command_v2 {
    uint16_t opcode;
    uint16_t group_type;     /* 0 self, 1 SR-IOV */
    uint32_t data_length;
    uint64_t member;         /* group_member_id as sent: SR-IOV VF index + 1 (0 = the owner); self 0 */
    const uint8_t *data;     /* command-specific data (after the 24-byte header) */
    uint8_t *result;         /* room for result_capacity bytes of command-specific result */
    uint32_t result_capacity;
    uint32_t result_length;  /* out: bytes of result received */
    uint16_t status;         /* out: device status (0 OK) */
    uint16_t status_qualifier; /* out */
    uint32_t reserved;
} va_command_v2;

typedef struct va_host_v2 {
    uint32_t struct_size;    /* sizeof(va_host_v2) as the host saw it */
    uint32_t reserved;
    void *context;
    /* Runs one admin command (blocking); a device answer of EAGAIN is retried by the host (up to
     * 5 more times, 1, 4, 16... ms apart), so status holds the answer after that. message gets
     * one sentence when it returns non-zero. */
    int32_t (*run)(void *context, va_command_v2 *command, char *message, uint32_t message_capacity);
    const char *pf;              /* the PF's address, "0000:3b:00.0" */
    uint32_t opcode_words;       /* le64 words in supported and in_use */
    uint32_t reserved2;
    const uint64_t *supported;   /* the LIST_QUERY bitmap (SR-IOV group) */
    const uint64_t *in_use;      /* the LIST_USE bitmap */
} va_host_v2;

typedef struct va_plugin_operation_v2 {
    const char *name;
    const char *summary;
    const char *parameters;  /* as in ABI 1 */
    const void *operation_context;   /* passed back to run */
    /* Runs the operation; output gets "key=value\n" lines, message one sentence on failure. */
    int32_t (*run)(const va_host_v2 *host, const void *operation_context, const va_arguments_v2 *arguments,
                   char *output, uint32_t output_capacity, char *message, uint32_t message_capacity);
} va_plugin_operation_v2;

typedef struct va_plugin_v2 {
    uint32_t abi_version;    /* VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2 */
    uint32_t struct_size;    /* sizeof(va_plugin_v2) as the plugin saw it */
    const char *name;
    const char *version;
    const char *summary;
    uint16_t group_types;    /* VA_GROUP_SELF | VA_GROUP_SRIOV */
    uint16_t reserved;
    uint32_t opcode_count;
    const uint16_t *opcodes;           /* every opcode the operations may send; the host refuses others */
    const char *const *opcode_names;
    uint32_t operation_count;
    const va_plugin_operation_v2 *operations;
} va_plugin_v2;

#endif
