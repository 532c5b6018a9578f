import VirtioAdmin
import VirtioAdminDriver
import VirtioSystem

extension ManualServiceClock {
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

/// The thread behind ``ManualServiceClock/ticking(step:every:_:)``.
private final class Ticker: @unchecked Sendable {
    let clock: ManualServiceClock
    let step: Duration
    let intervalMicroseconds: UInt32
    private let lock = Lock()
    private var stopping = false
    private var thread: JoinableThread?

    init(clock: ManualServiceClock, step: Duration, intervalMicroseconds: UInt32) {
        self.clock = clock
        self.step = step
        self.intervalMicroseconds = max(1, intervalMicroseconds)
    }

    func start() {
        thread = JoinableThread { [self] in
            while !lock.withLock({ stopping }) {
                if clock.sleeperCount > 0 { clock.advance(by: step) }
                Sys.sleepMicroseconds(Int(intervalMicroseconds))
            }
        }
        precondition(thread != nil, "the clock's ticking thread could not be started")
    }

    func stop() {
        lock.withLock { stopping = true }
        thread?.join()
    }
}
