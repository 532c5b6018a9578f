import VirtioSystem

/// The time the service, the policy run and the lock wait go by: a monotonic count of
/// nanoseconds and a sleep until a point on it. The real one follows `ContinuousClock`; a
/// test hands in a manual clock (`ManualServiceClock` in VirtioAdminTestKit) and moves it on,
/// so timeouts are tested without waiting for them.
///
/// The shape is the driver's clock's (now in ns, sleep until a deadline), so that the two can
/// become one protocol.
public protocol ServiceClock: Sendable {
    /// Now, in nanoseconds since a start of the clock's own choosing.
    var nowNanoseconds: UInt64 { get }
    /// Returns once ``nowNanoseconds`` has reached `deadline` (at once when it already has),
    /// or early when the task is cancelled.
    func sleep(untilNanoseconds deadline: UInt64) async
}

extension ServiceClock {
    /// Sleeps for `duration` (returns early when the task is cancelled).
    public func sleep(for duration: Duration) async {
        let (deadline, overflow) = nowNanoseconds.addingReportingOverflow(duration.nanoseconds)
        await sleep(untilNanoseconds: overflow ? .max : deadline)
    }

    /// The time from `start` (a ``nowNanoseconds`` reading) to now.
    public func elapsed(since start: UInt64) -> Duration {
        let now = nowNanoseconds
        return .nanoseconds(Int64(clamping: now >= start ? now - start : 0))
    }
}

/// The real clock: `ContinuousClock` (monotonic, counting while the machine sleeps).
public struct SystemServiceClock: ServiceClock {
    /// The real clock.
    public init() {}

    /// Nanoseconds of `ContinuousClock` since the process first read this clock.
    public var nowNanoseconds: UInt64 { serviceClockBase.duration(to: .now).nanoseconds }

    /// Sleeps on `ContinuousClock` until `deadline` (returns early when the task is cancelled).
    public func sleep(untilNanoseconds deadline: UInt64) async {
        let now = nowNanoseconds
        guard deadline > now else { return }
        try? await Task.sleep(for: .nanoseconds(Int64(clamping: deadline - now)))
    }
}

private let serviceClockBase = ContinuousClock.now
