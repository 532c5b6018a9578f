import VirtioAdminDriver
import VirtioLock

/// A clock that moves only when told: hand it to ``AdminQueueDriver/Options/clock`` and
/// call ``advance(by:)`` where a test would have slept. Sleepers whose deadline is reached
/// resume; a cancelled sleeper resumes at once.
public final class TestClock: AdminClock, @unchecked Sendable {
    private struct Sleeper {
        var id: UInt64
        var deadline: UInt64
        var continuation: UnsafeContinuation<Void, Never>
    }

    // Guarded by `lock`.
    private let lock = Lock()
    private var current: UInt64
    private var sleepers: [Sleeper] = []
    private var nextID: UInt64 = 0

    /// - Parameter start: the first reading, in nanoseconds.
    public init(start: UInt64 = 1_000_000_000) { current = start }

    public func now() -> UInt64 { lock.withLock { current } }

    /// Tasks suspended in ``sleep(until:)`` now.
    public var sleeperCount: Int { lock.withLock { sleepers.count } }

    public func sleep(until deadline: UInt64) async {
        let id = lock.withLock { () -> UInt64 in
            nextID += 1
            return nextID
        }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let resumeNow = lock.withLock { () -> Bool in
                    if deadline <= current || Task.isCancelled { return true }
                    sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let sleeper = lock.withLock { () -> Sleeper? in
                guard let index = sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return sleepers.remove(at: index)
            }
            sleeper?.continuation.resume()
        }
    }

    /// Moves time forward by `duration` and wakes every sleeper whose deadline it reached.
    public func advance(by duration: Duration) {
        let woken = lock.withLock { () -> [Sleeper] in
            current = current.addingReportingOverflow(duration.nanoseconds).overflow ? .max : current + duration.nanoseconds
            let due = sleepers.filter { $0.deadline <= current }
            sleepers.removeAll { $0.deadline <= current }
            return due
        }
        for sleeper in woken { sleeper.continuation.resume() }
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension TestClock {
    /// Runs `body` while a thread of its own moves the clock by `step` whenever a task
    /// sleeps on it, looking every `interval` of real time: time passes only while the
    /// driver waits (its poller idle, a slot wait, an EAGAIN delay), never while it works,
    /// so a loaded machine cannot make a command time out early.
    public func ticking<T>(step: Duration = .milliseconds(1), every interval: Duration = .microseconds(50),
                           _ body: () async throws -> T) async rethrows -> T {
        let ticker = Ticker(clock: self, step: step, intervalMicroseconds: UInt32(clamping: interval.nanoseconds / 1000))
        ticker.start()
        defer { ticker.stop() }
        return try await body()
    }
}

/// The thread behind ``TestClock/ticking(step:every:_:)``.
private final class Ticker: @unchecked Sendable {
    let clock: TestClock
    let step: Duration
    let intervalMicroseconds: UInt32
    private let lock = Lock()
    private var stopping = false
    private var thread = pthread_t()

    init(clock: TestClock, step: Duration, intervalMicroseconds: UInt32) {
        self.clock = clock
        self.step = step
        self.intervalMicroseconds = max(1, intervalMicroseconds)
    }

    func start() {
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { argument in
            let ticker = Unmanaged<Ticker>.fromOpaque(argument!).takeRetainedValue()
            while !ticker.lock.withLock({ ticker.stopping }) {
                if ticker.clock.sleeperCount > 0 { ticker.clock.advance(by: ticker.step) }
                usleep(ticker.intervalMicroseconds)
            }
            return nil
        }, box.toOpaque())
    }

    func stop() {
        lock.withLock { stopping = true }
        pthread_join(thread, nil)
    }
}
