// Heap allocations of the `ratios` process, counted in two sums: on threads marked as the
// device model's (alloc_counter_mark_model_thread) and on every other thread (the driver,
// the cooperative pool, the harness). The counter replaces malloc, calloc, realloc,
// reallocarray, posix_memalign, aligned_alloc and memalign in the executable and forwards
// each to glibc's own (__libc_malloc, ...); free needs no replacement.
#ifndef ALLOC_COUNTER_H
#define ALLOC_COUNTER_H

#include <stdint.h>

/// Whether the replacement functions are the ones the process calls (a build where the
/// executable does not export them would count nothing).
int alloc_counter_active(void);

/// Marks the calling thread as the device model's: its allocations go to the model's sum.
void alloc_counter_mark_model_thread(void);

/// Allocations so far on threads not marked (driver, pool, harness) and on marked threads.
int64_t alloc_counter_other(void);
int64_t alloc_counter_model(void);

/// Sampling of call stacks, for finding where allocations come from: from now on every
/// allocation on an unmarked thread (model = 0) or a marked one (model = 1) records its
/// call stack, up to `capacity` stacks (at most 65536). Off again with trace_stop.
void alloc_counter_trace_start(int model, int capacity);
/// Stops recording; the number of stacks recorded.
int alloc_counter_trace_stop(void);
/// Writes the recorded stacks to `fd`, one block a stack: `stack N` and one line a frame,
/// `  <object file> 0x<offset in it>` (for llvm-symbolizer --obj=FILE OFFSET).
void alloc_counter_trace_write(int fd);

#endif
