#if canImport(Glibc)
import Glibc
#endif

/// The device model's queue processing on a thread of its own
/// (``SimulatedSRIOVDevice/processQueuesOnOwnThread()``): a notify only records which
/// queue to look at and wakes the thread, which takes the avail ring under the device's
/// lock as a device's own processor would. The driver then pays for its own work only:
/// what the benchmarks measure as the driver's cost per command.
final class ModelThread: @unchecked Sendable {
    // `kicks` and `stopping` are guarded by `mutex`; `inside` by the device's lock.
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var kicks: [(function: FunctionModel, queue: Int)] = []
    private var stopping = false
    private var started = false
    private var thread = pthread_t()
    private weak var device: SimulatedSRIOVDevice?
    /// The thread is processing (device lock held): its own calls run the queues inline.
    var inside = false

    init(device: SimulatedSRIOVDevice) {
        self.device = device
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    func start() {
        started = true
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { argument in
            Unmanaged<ModelThread>.fromOpaque(argument!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
    }

    /// Queue `queue` of `function` was notified (device lock held).
    func kick(_ function: FunctionModel, queue: Int) {
        pthread_mutex_lock(&mutex)
        if !kicks.contains(where: { $0.function === function && $0.queue == queue }) { kicks.append((function, queue)) }
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    func stop() {
        pthread_mutex_lock(&mutex)
        let join = started && !stopping
        stopping = true
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
        if join, pthread_equal(thread, pthread_self()) == 0 { pthread_join(thread, nil) }
    }

    private func run() {
        while true {
            // Spin (yielding the core) for a while before sleeping: a device with work
            // coming takes it without a wake-up.
            var spins = 0
            pthread_mutex_lock(&mutex)
            while kicks.isEmpty && !stopping {
                if spins < 2000 {
                    spins += 1
                    pthread_mutex_unlock(&mutex)
                    sched_yield()
                    pthread_mutex_lock(&mutex)
                } else {
                    pthread_cond_wait(&condition, &mutex)
                }
            }
            if stopping { pthread_mutex_unlock(&mutex); return }
            let work = kicks
            kicks.removeAll(keepingCapacity: true)
            pthread_mutex_unlock(&mutex)
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
    public func processQueuesOnOwnThread() {
        lock.withLock {
            guard modelThread == nil else { return }
            let thread = ModelThread(device: self)
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
