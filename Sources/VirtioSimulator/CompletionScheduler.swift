import VirtioSystem

/// Delivers completions at their due time on a worker thread (used when the device has a
/// latency). Short waits spin; longer ones sleep on a condition variable.
final class CompletionScheduler: @unchecked Sendable {
    struct Item {
        var due: UInt64
        var function: FunctionModel
        var queue: QueueModel
        var head: UInt16
        var length: UInt32
        var capacity: Int
        var epoch: UInt64
    }

    // Guarded by `condition` (a pthread mutex and a condition variable on CLOCK_MONOTONIC).
    private let condition = ConditionLock()
    private var items: [Item] = []
    private var running = false
    private var stopping = false
    private var thread: JoinableThread?
    private weak var device: SimulatedSRIOVDevice?
    /// The nice value the thread should run at, and the one it last set (or was refused).
    private var wantedNice: Int32 = 0
    private var appliedNice: Int32 = 0

    init() {}

    deinit {
        stop()
    }

    func start(device: SimulatedSRIOVDevice) {
        self.device = device
    }

    /// Starts the thread on first use, so devices without latency never create one.
    private func ensureThread() {
        guard !running, !stopping else { return }
        // The thread holds the scheduler until its loop returns.
        thread = JoinableThread { self.run() }
        running = thread != nil
    }

    /// - Parameter nice: the nice value the thread should run at (``DeviceTiming/schedulerNice``).
    func add(_ newItems: [Item], nice: Int32?) {
        condition.lock()
        wantedNice = nice ?? 0
        ensureThread()
        // Keep `items` sorted by due time: insert each after the last item due no later.
        for item in newItems {
            var low = 0
            var high = items.count
            while low < high {
                let middle = (low + high) / 2
                if items[middle].due <= item.due { low = middle + 1 } else { high = middle }
            }
            items.insert(item, at: low)
        }
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        let join = running ? thread : nil
        stopping = true
        running = false
        items.removeAll()
        condition.signal()
        condition.unlock()
        if let join, !join.isCurrent { join.join() }
    }

    private func run() {
        // Below this the worker spins (sched_yield) instead of sleeping on the condition.
        let spinThreshold: UInt64 = UInt64(Sys.environment("VIRTIO_SIM_SPIN_NS").flatMap { Int($0) } ?? 200_000)
        while true {
            condition.lock()
            while items.isEmpty && !stopping { condition.wait() }
            if stopping { condition.unlock(); return }
            if wantedNice != appliedNice {
                // Tried once per change: a refusal (no CAP_SYS_NICE) leaves the thread as it is.
                appliedNice = wantedNice
                _ = Sys.setThreadNice(wantedNice)
            }
            let now = monotonicNanoseconds()
            let first = items[0].due
            if first > now {
                if first - now > spinThreshold {
                    condition.wait(untilMonotonicNanoseconds: first - spinThreshold / 2)
                    condition.unlock()
                } else {
                    condition.unlock()
                    while monotonicNanoseconds() < first { Sys.yieldThread() }
                }
                continue
            }
            let split = items.firstIndex { $0.due > now } ?? items.count
            let ready = Array(items[..<split])
            items.removeFirst(split)
            condition.unlock()
            device?.deliver(ready, decided: now)
        }
    }
}
