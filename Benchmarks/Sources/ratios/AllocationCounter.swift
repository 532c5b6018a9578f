// The allocation counter's check (P2) and its call-stack trace file.
import CAllocCounter

#if canImport(Glibc)
import Glibc
#endif

/// Where the check's arrays go: stored in a global, each one escapes, so each is one heap
/// allocation (the previous one is freed).
nonisolated(unsafe) var allocationSink: [Int] = []

/// `iterations` arrays, one allocation each.
@inline(never)
func allocateArrays(_ iterations: Int) {
    for index in 0..<iterations { allocationSink = [index, index + 1, index + 2] }
    allocationSink = []
}

/// The counter against a known count: a loop allocating one array an iteration, on an
/// unmarked thread (the harness) and on a thread marked as the model's; each must read 1.00
/// in its own column and 0.00 in the other.
func checkAllocationCounter() {
    let iterations = 100_000
    print("\n### P2 — allocation counter check: a loop allocating exactly one array an iteration\n")
    row(["loop on", "driver + harness allocs/iteration", "model allocs/iteration", "expected"])
    row(["---", "---", "---", "---"])
    var (other, model) = (alloc_counter_other(), alloc_counter_model())
    allocateArrays(iterations)
    row(["the harness's thread (unmarked)", f(Double(alloc_counter_other() - other) / Double(iterations)),
         f(Double(alloc_counter_model() - model) / Double(iterations)), "1.00 / 0.00"])
    (other, model) = (alloc_counter_other(), alloc_counter_model())
    var thread = pthread_t()
    pthread_create(&thread, nil, { _ in
        alloc_counter_mark_model_thread()
        allocateArrays(100_000)
        return nil
    }, nil)
    pthread_join(thread, nil)
    // pthread_create allocates (the thread's bookkeeping) on the harness's thread: counted
    // there, hence "about".
    row(["a thread marked as the model's", f(Double(alloc_counter_other() - other) / Double(iterations)),
         f(Double(alloc_counter_model() - model) / Double(iterations)), "≈ 0.00 / 1.00"])
}

/// Writes the recorded call stacks to `path`, after a header naming the row and its command count.
func writeAllocationTrace(_ path: String, label: String, commands: Int) {
    let recorded = alloc_counter_trace_stop()
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { print("cannot write \(path)"); return }
    let header = "# row \(label)\n# commands \(commands)\n# stacks \(recorded)\n"
    _ = header.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
    alloc_counter_trace_write(fd)
    close(fd)
}
