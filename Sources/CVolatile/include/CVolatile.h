// Volatile MMIO access and memory barriers for VirtioAdmin.
//
// Swift's UnsafeRawPointer.load is not volatile: the optimiser may merge or delete loads of
// one address (a polling loop disappears). Every register access goes through these
// static inline helpers, which Swift inlines. Ring indices shared with a device (or the
// device model on another thread) use the __atomic helpers, so that ordering is explicit
// and ThreadSanitizer understands it.
#ifndef VIRTIOADMIN_CVOLATILE_H
#define VIRTIOADMIN_CVOLATILE_H

#include <stdint.h>

static inline uint8_t cv_mmio_read8(const void *address) { return *(const volatile uint8_t *)address; }
static inline uint16_t cv_mmio_read16(const void *address) { return *(const volatile uint16_t *)address; }
static inline uint32_t cv_mmio_read32(const void *address) { return *(const volatile uint32_t *)address; }
static inline uint64_t cv_mmio_read64(const void *address) { return *(const volatile uint64_t *)address; }
static inline void cv_mmio_write8(void *address, uint8_t value) { *(volatile uint8_t *)address = value; }
static inline void cv_mmio_write16(void *address, uint16_t value) { *(volatile uint16_t *)address = value; }
static inline void cv_mmio_write32(void *address, uint32_t value) { *(volatile uint32_t *)address = value; }
static inline void cv_mmio_write64(void *address, uint64_t value) { *(volatile uint64_t *)address = value; }

// Shared-memory (DMA) accessors for ring indices, flags and event fields.
static inline uint16_t cv_load_acquire16(const void *address) { return __atomic_load_n((const uint16_t *)address, __ATOMIC_ACQUIRE); }
static inline void cv_store_release16(void *address, uint16_t value) { __atomic_store_n((uint16_t *)address, value, __ATOMIC_RELEASE); }
static inline uint16_t cv_load_relaxed16(const void *address) { return __atomic_load_n((const uint16_t *)address, __ATOMIC_RELAXED); }
static inline void cv_store_relaxed16(void *address, uint16_t value) { __atomic_store_n((uint16_t *)address, value, __ATOMIC_RELAXED); }
static inline uint32_t cv_load_relaxed32(const void *address) { return __atomic_load_n((const uint32_t *)address, __ATOMIC_RELAXED); }
static inline void cv_store_relaxed32(void *address, uint32_t value) { __atomic_store_n((uint32_t *)address, value, __ATOMIC_RELAXED); }
static inline uint64_t cv_load_relaxed64(const void *address) { return __atomic_load_n((const uint64_t *)address, __ATOMIC_RELAXED); }
static inline void cv_store_relaxed64(void *address, uint64_t value) { __atomic_store_n((uint64_t *)address, value, __ATOMIC_RELAXED); }

// Barriers. "smp" orders CPU against CPU (the device model on another thread);
// "dma" orders CPU against a device (VIRTIO_F_ORDER_PLATFORM). On x86 stores are not
// reordered with stores nor loads with loads, so read/write barriers are compiler
// barriers; the full barrier orders stores before later loads.
static inline void cv_full_barrier(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#if defined(__aarch64__)
static inline void cv_dma_read_barrier(void) { __asm__ __volatile__("dmb oshld" ::: "memory"); }
static inline void cv_dma_write_barrier(void) { __asm__ __volatile__("dmb oshst" ::: "memory"); }
static inline void cv_dma_full_barrier(void) { __asm__ __volatile__("dmb osh" ::: "memory"); }
static inline void cv_read_barrier(void) { __asm__ __volatile__("dmb ishld" ::: "memory"); }
static inline void cv_write_barrier(void) { __asm__ __volatile__("dmb ishst" ::: "memory"); }
#else
static inline void cv_dma_read_barrier(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void cv_dma_write_barrier(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void cv_dma_full_barrier(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void cv_read_barrier(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void cv_write_barrier(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
#endif

#endif
