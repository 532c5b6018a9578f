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
/// in its own column and 0.00 in the other (within 1 %: another thread of the process may
/// allocate meanwhile). Returns whether both rows did.
func checkAllocationCounter() -> Bool {
    let iterations = 100_000
    print("\n### P2 — allocation counter check: a loop allocating exactly one array an iteration\n")
    guard alloc_counter_active() != 0 else {
        print("✘ the allocation counter is not in effect (malloc is not the executable's)")
        return false
    }
    row(["loop on", "driver + harness allocs/iteration", "model allocs/iteration", "expected", ""])
    row(["---", "---", "---", "---", "---"])
    func check(_ label: String, expectModel: Bool, _ body: () -> Void) -> Bool {
        let (other, model) = (alloc_counter_other(), alloc_counter_model())
        body()
        let perOther = Double(alloc_counter_other() - other) / Double(iterations)
        let perModel = Double(alloc_counter_model() - model) / Double(iterations)
        let (own, elsewhere) = expectModel ? (perModel, perOther) : (perOther, perModel)
        let passed = abs(own - 1) < 0.01 && elsewhere < 0.01
        row([label, f(perOther), f(perModel), expectModel ? "0.00 / 1.00" : "1.00 / 0.00", passed ? "✔" : "✘"])
        return passed
    }
    let unmarked = check("the harness's thread (unmarked)", expectModel: false) { allocateArrays(iterations) }
    let marked = check("a thread marked as the model's", expectModel: true) {
        // pthread_create's own allocation is the harness's (the 1 % margin covers it).
        var thread = pthread_t()
        pthread_create(&thread, nil, { _ in
            alloc_counter_mark_model_thread()
            allocateArrays(100_000)
            return nil
        }, nil)
        pthread_join(thread, nil)
    }
    return unmarked && marked
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
