import Synchronization
import VirtioSystem

/// The device model's queue processing on a thread of its own
/// (``SimulatedSRIOVDevice/processQueuesOnOwnThread()``): a notify only records which
/// queue to look at and wakes the thread, which takes the avail ring under the device's
/// lock as a device's own processor would. The driver then pays for its own work only:
/// what the benchmarks measure as the driver's cost per command.
final class ModelThread: @unchecked Sendable {
    // `kicks`, `stopping` and `sleeping` are guarded by `mutex`; `inside` by the device's lock.
    private let mutex = ConditionLock()
    private var kicks: [(function: FunctionModel, queue: Int)] = []
    private var stopping = false
    /// The thread waits on `mutex` (a kick must signal it).
    private var sleeping = false
    /// Kicks were recorded since the thread last took them: what it polls while it spins,
    /// without the mutex.
    private let pending = Atomic<Bool>(false)
    /// How long the thread polls for a kick before it sleeps: a device with work coming
    /// takes it without a wake-up, an idle one costs no processor.
    static let spinNanoseconds: UInt64 = 100_000
    private var started = false
    private var thread: JoinableThread?
    private weak var device: SimulatedSRIOVDevice?
    private let onThreadStart: (@Sendable () -> Void)?
    /// The thread is processing (device lock held): its own calls run the queues inline.
    var inside = false

    init(device: SimulatedSRIOVDevice, onThreadStart: (@Sendable () -> Void)? = nil) {
        self.device = device
        self.onThreadStart = onThreadStart
    }

    func start() {
        started = true
        thread = JoinableThread { [self] in
            onThreadStart?()
            run()
        }
        precondition(thread != nil, "the device model's thread could not be started")
    }

    /// Queue `queue` of `function` was notified (device lock held).
    func kick(_ function: FunctionModel, queue: Int) {
        mutex.lock()
        if !kicks.contains(where: { $0.function === function && $0.queue == queue }) { kicks.append((function, queue)) }
        pending.store(true, ordering: .releasing)
        if sleeping { mutex.signal() }
        mutex.unlock()
    }

    func stop() {
        mutex.lock()
        let join = started && !stopping
        stopping = true
        pending.store(true, ordering: .releasing)
        mutex.signal()
        mutex.unlock()
        if join, let thread, !thread.isCurrent { thread.join() }
    }

    private func run() {
        var work: [(function: FunctionModel, queue: Int)] = []
        while true {
            // Poll for a kick for a while, giving the processor to any other thread that
            // wants it (on a small machine the driver's), then sleep until one comes.
            let spinStart = monotonicNanoseconds()
            var rounds = 0
            while !pending.load(ordering: .acquiring) {
                Sys.yieldThread()
                rounds += 1
                if rounds & 7 == 0 && monotonicNanoseconds() &- spinStart > Self.spinNanoseconds { break }
            }
            mutex.lock()
            while kicks.isEmpty && !stopping {
                sleeping = true
                mutex.wait()
                sleeping = false
            }
            if stopping { mutex.unlock(); return }
            swap(&work, &kicks)
            kicks.removeAll(keepingCapacity: true)
            pending.store(false, ordering: .relaxed)
            mutex.unlock()
            guard let device else { return }
            device.lock.withLock {
                inside = true
                // Look again until a pass takes nothing: with EVENT_IDX the driver may have
                // published after this pass read avail->idx and before it moved avail_event,
                // and then it does not notify (a device re-checks the ring, §2.7.10).
                var again = true
                while again {
                    again = false
                    for kick in work where kick.queue < kick.function.queues.count {
                        let before = kick.function.queues[kick.queue].lastAvail
                        device.processNotify(kick.function, queue: kick.queue)
                        if kick.function.queues[kick.queue].lastAvail != before { again = true }
                    }
                }
                inside = false
            }
        }
    }
}

extension SimulatedSRIOVDevice {
    /// From now on the device processes its queues on a thread of its own: a notify wakes
    /// it instead of running the commands inside the driver's register write. Completions
    /// appear on the used ring when that thread has run (latency, if set, comes on top).
    /// `onThreadStart`, if given, runs first on that thread (a benchmark marks the thread
    /// there to count its allocations apart); not called when the thread already runs.
    public func processQueuesOnOwnThread(onThreadStart: (@Sendable () -> Void)? = nil) {
        lock.withLock {
            guard modelThread == nil else { return }
            let thread = ModelThread(device: self, onThreadStart: onThreadStart)
            modelThread = thread
            thread.start()
        }
    }

    /// A notify while the model thread runs only wakes it (device lock held); returns
    /// whether it did.
    func handOverToModelThread(_ function: FunctionModel, queue: Int) -> Bool {
        guard let modelThread, !modelThread.inside else { return false }
        modelThread.kick(function, queue: queue)
        return true
    }
}
