import VirtioSystem

/// The admin driver's time source. Command deadlines, the wait for a free slot, the
/// poller's back-off, the delay before an EAGAIN retry and the drain before LIST_USE all
/// read and wait on it — nothing in the driver reads another clock — so a test can move
/// time forward itself (`ManualServiceClock` in `VirtioAdminTestKit`) instead of sleeping.
///
/// Its two members are those of the service's `ServiceClock`, so one clock (the test
/// kit's `ManualServiceClock`) serves both.
public protocol AdminClock: Sendable {
    /// Monotonic nanoseconds since the clock's own origin.
    var nowNanoseconds: UInt64 { get }
    /// Returns once ``nowNanoseconds`` has reached `deadline`, or earlier when the task is cancelled.
    func sleep(untilNanoseconds deadline: UInt64) async
}

extension AdminClock {
    /// The instant `duration` after `start`, saturated (a huge timeout never wraps to the past).
    func deadline(after duration: Duration, from start: UInt64) -> UInt64 { start.addingSaturated(duration.nanoseconds) }
}

/// The real clock: `ContinuousClock` (standard library only, no Foundation).
public struct ContinuousAdminClock: AdminClock {
    let origin: ContinuousClock.Instant
    /// The real clock, starting at zero now.
    public init() { origin = ContinuousClock.now }
    /// Nanoseconds of `ContinuousClock` since this clock was made.
    public var nowNanoseconds: UInt64 { origin.duration(to: ContinuousClock.now).nanoseconds }
    /// Sleeps on `ContinuousClock` until `deadline` (returns early when the task is cancelled).
    public func sleep(untilNanoseconds deadline: UInt64) async {
        let current = nowNanoseconds
        guard deadline > current else { return }
        try? await Task.sleep(for: .nanoseconds(Int64(clamping: deadline - current)))
    }
}

extension UInt64 {
    /// `self + other`, or UInt64.max when that overflows (a huge timeout never wraps).
    func addingSaturated(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
