#if canImport(Glibc)
import Glibc
#endif

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

    // Guarded by `mutex`.
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var items: [Item] = []
    private var running = false
    private var stopping = false
    private var thread: pthread_t?
    private weak var device: SimulatedSRIOVDevice?

    init() {
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        stop()
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    func start(device: SimulatedSRIOVDevice) {
        self.device = device
    }

    /// Starts the thread on first use, so devices without latency never create one.
    private func ensureThread() {
        guard !running, !stopping else { return }
        running = true
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        pthread_create(&handle, nil, { argument in
            let scheduler = Unmanaged<CompletionScheduler>.fromOpaque(argument!).takeRetainedValue()
            scheduler.run()
            return nil
        }, box.toOpaque())
        thread = handle
    }

    func add(_ newItems: [Item]) {
        pthread_mutex_lock(&mutex)
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
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    func stop() {
        pthread_mutex_lock(&mutex)
        let join = running ? thread : nil
        stopping = true
        running = false
        items.removeAll()
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
        if let join, !pthread_equal(join, pthread_self()).boolValue { pthread_join(join, nil) }
    }

    private func run() {
        // Below this the worker spins (sched_yield) instead of sleeping on the condition.
        let spinThreshold: UInt64 = UInt64(getenv("VIRTIO_SIM_SPIN_NS").flatMap { Int(String(cString: $0)) } ?? 200_000)
        while true {
            pthread_mutex_lock(&mutex)
            while items.isEmpty && !stopping { pthread_cond_wait(&condition, &mutex) }
            if stopping { pthread_mutex_unlock(&mutex); return }
            let now = monotonicNanoseconds()
            let first = items[0].due
            if first > now {
                if first - now > spinThreshold {
                    var deadline = timespec()
                    let wake = first - spinThreshold / 2
                    deadline.tv_sec = Int(wake / 1_000_000_000)
                    deadline.tv_nsec = Int(wake % 1_000_000_000)
                    pthread_cond_timedwait(&condition, &mutex, &deadline)
                    pthread_mutex_unlock(&mutex)
                } else {
                    pthread_mutex_unlock(&mutex)
                    while monotonicNanoseconds() < first { sched_yield() }
                }
                continue
            }
            let split = items.firstIndex { $0.due > now } ?? items.count
            let ready = Array(items[..<split])
            items.removeFirst(split)
            pthread_mutex_unlock(&mutex)
            device?.deliver(ready)
        }
    }
}

extension Int32 {
    var boolValue: Bool { self != 0 }
}
