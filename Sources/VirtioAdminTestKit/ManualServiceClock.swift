import VirtioAdmin
import VirtioSystem

/// A ``ServiceClock`` that moves only when a test moves it (as NIO's `EmbeddedEventLoop`
/// does): a sleep returns once ``advance(by:)`` has passed its deadline, or when its task is
/// cancelled. A timeout test starts the wait, lets it fall asleep (``waitForSleepers(_:)``),
/// and advances the clock instead of waiting for real.
public final class ManualServiceClock: ServiceClock, @unchecked Sendable {
    let lock = Lock()
    var now: UInt64
    var nextID: UInt64 = 0
    var sleepers: [UInt64: (deadline: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    var cancelled: Set<UInt64> = []
    var sleeperWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    var started = 0

    /// A clock standing at `nanoseconds` until ``advance(by:)`` moves it.
    public init(startingAt nanoseconds: UInt64 = 1_000_000_000) { now = nanoseconds }

    /// Where the clock stands.
    public var nowNanoseconds: UInt64 { lock.withLock { now } }

    /// Returns when ``advance(by:)`` has moved the clock to `deadline` (at once if it is there), or early when the task is cancelled.
    public func sleep(untilNanoseconds deadline: UInt64) async {
        let id = lock.withLock { () -> UInt64 in
            nextID += 1
            return nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let (asleep, waiters) = lock.withLock { () -> (Bool, [CheckedContinuation<Void, Never>]) in
                    started += 1
                    guard deadline > now, cancelled.remove(id) == nil else { return (false, []) }
                    sleepers[id] = (deadline, continuation)
                    return (true, takeWaitersLocked())
                }
                if !asleep { continuation.resume() }
                for waiter in waiters { waiter.resume() }
            }
        } onCancel: {
            let sleeper = lock.withLock { () -> CheckedContinuation<Void, Never>? in
                guard let sleeper = sleepers.removeValue(forKey: id) else {
                    cancelled.insert(id)  // cancelled before it fell asleep
                    return nil
                }
                return sleeper.continuation
            }
            sleeper?.resume()
        }
    }

    /// Moves the clock on by `duration` and wakes every sleep whose deadline it reached.
    public func advance(by duration: Duration) {
        let due = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            let (moved, overflow) = now.addingReportingOverflow(duration.nanoseconds)
            now = overflow ? .max : moved
            let ids = sleepers.filter { $0.value.deadline <= now }.keys
            return ids.compactMap { sleepers.removeValue(forKey: $0)?.continuation }
        }
        for continuation in due { continuation.resume() }
    }

    /// How many sleeps have started since the clock was made (a loop that sleeps between tries counts each try).
    public var sleepsStarted: Int { lock.withLock { started } }

    /// Sleeps going on now.
    public var sleeperCount: Int { lock.withLock { sleepers.count } }

    /// Returns once at least `count` sleeps are going on (what a test waits for before it
    /// advances the clock, so that the wait it tests has started).
    public func waitForSleepers(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = lock.withLock { () -> Bool in
                if sleepers.count >= count { return true }
                sleeperWaiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Waiters whose count the sleepers reached (lock held).
    func takeWaitersLocked() -> [CheckedContinuation<Void, Never>] {
        let ready = sleeperWaiters.filter { $0.count <= sleepers.count }.map(\.continuation)
        sleeperWaiters.removeAll { $0.count <= sleepers.count }
        return ready
    }
}
