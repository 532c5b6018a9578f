// Replacements for glibc's allocation functions in the `ratios` executable. A definition in
// the executable comes first in the dynamic linker's lookup, so the Swift runtime's and
// glibc's own callers reach these; each counts, then forwards to glibc's allocator under its
// internal name (exported by glibc for this purpose), so memory stays glibc's and glibc's
// free releases it.
#define _GNU_SOURCE
#include "alloc_counter.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

// The two sums on cache lines of their own: the model's thread and the driver's threads
// count at the same time.
static _Alignas(64) _Atomic int64_t other_count;
static _Alignas(64) _Atomic int64_t model_count;

static __thread bool model_thread;
static __thread bool in_trace;

// Call-stack sampling (off unless alloc_counter_trace_start was called).
enum { trace_depth = 24, trace_limit = 65536 };
static void *trace_frames[trace_limit][trace_depth];
static int trace_lengths[trace_limit];
static _Atomic int trace_on;
static int trace_model;
static int trace_capacity;
static _Atomic int trace_next;

static void trace(void) {
    if (in_trace) return;
    in_trace = true;
    int index = atomic_fetch_add_explicit(&trace_next, 1, memory_order_relaxed);
    if (index < trace_capacity) trace_lengths[index] = backtrace(trace_frames[index], trace_depth);
    in_trace = false;
}

static inline void count(void) {
    atomic_fetch_add_explicit(model_thread ? &model_count : &other_count, 1, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&trace_on, memory_order_relaxed), 0) && (int)model_thread == trace_model) trace();
}

void *malloc(size_t size) {
    count();
    return __libc_malloc(size);
}

void *calloc(size_t count_, size_t size) {
    count();
    return __libc_calloc(count_, size);
}

void *realloc(void *pointer, size_t size) {
    count();
    return __libc_realloc(pointer, size);
}

void *reallocarray(void *pointer, size_t count_, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count_, size, &total)) { errno = ENOMEM; return NULL; }
    count();
    return __libc_realloc(pointer, total);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
    count();
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL && size != 0) return ENOMEM;
    *result = pointer;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

int alloc_counter_active(void) {
    // What the dynamic linker gives every other object for `malloc`, and whether a call
    // through it was counted.
    void *(*global_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
    if (global_malloc != malloc) return 0;
    int64_t before = alloc_counter_other() + alloc_counter_model();
    void *volatile probe = global_malloc(1);
    free(probe);
    return alloc_counter_other() + alloc_counter_model() > before;
}

void alloc_counter_mark_model_thread(void) { model_thread = true; }

int64_t alloc_counter_other(void) { return atomic_load_explicit(&other_count, memory_order_relaxed); }
int64_t alloc_counter_model(void) { return atomic_load_explicit(&model_count, memory_order_relaxed); }

void alloc_counter_trace_start(int model, int capacity) {
    // backtrace() loads the unwinder on its first call (which allocates): do it now.
    void *warm[2];
    in_trace = true;
    backtrace(warm, 2);
    in_trace = false;
    trace_model = model ? 1 : 0;
    trace_capacity = capacity < 0 ? 0 : capacity > trace_limit ? trace_limit : capacity;
    atomic_store(&trace_next, 0);
    atomic_store(&trace_on, 1);
}

int alloc_counter_trace_stop(void) {
    atomic_store(&trace_on, 0);
    int recorded = atomic_load(&trace_next);
    return recorded < trace_capacity ? recorded : trace_capacity;
}

void alloc_counter_trace_write(int fd) {
    int recorded = alloc_counter_trace_stop();
    char line[4096];
    for (int index = 0; index < recorded; index++) {
        int length = snprintf(line, sizeof line, "stack %d\n", index);
        if (write(fd, line, (size_t)length) < 0) return;
        for (int frame = 0; frame < trace_lengths[index]; frame++) {
            Dl_info info;
            void *address = trace_frames[index][frame];
            if (dladdr(address, &info) && info.dli_fname) {
                // A return address: the call is the byte before it.
                length = snprintf(line, sizeof line, "  %s 0x%lx\n", info.dli_fname,
                                  (unsigned long)((char *)address - (char *)info.dli_fbase - 1));
            } else {
                length = snprintf(line, sizeof line, "  ? %p\n", address);
            }
            if (length > 0 && write(fd, line, (size_t)(length < (int)sizeof line ? length : (int)sizeof line - 1)) < 0) return;
        }
    }
}
