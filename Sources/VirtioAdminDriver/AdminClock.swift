import VirtioSystem

/// The admin driver's time source. Command deadlines, the wait for a free slot, the
/// poller's back-off, the delay before an EAGAIN retry and the drain before LIST_USE all
/// read and wait on it — nothing in the driver reads another clock — so a test can move
/// time forward itself (`ManualServiceClock` in `VirtioAdminTestKit`) instead of sleeping.
///
/// The service, the policy run and the PF lock wait go by the same clock (`ServiceClock` in
/// VirtioAdmin is this protocol), so one clock — the test kit's `ManualServiceClock` —
/// serves them all.
public protocol AdminClock: Sendable {
    /// Monotonic nanoseconds since the clock's own origin.
    var nowNanoseconds: UInt64 { get }
    /// Returns once ``nowNanoseconds`` has reached `deadline`, or earlier when the task is cancelled.
    func sleep(untilNanoseconds deadline: UInt64) async
}

extension AdminClock {
    /// The instant `duration` after `start`, saturated (a huge timeout never wraps to the past).
    func deadline(after duration: Duration, from start: UInt64) -> UInt64 { start.addingSaturated(duration.nanoseconds) }

    /// Sleeps for `duration` (returns early when the task is cancelled).
    public func sleep(for duration: Duration) async {
        await sleep(untilNanoseconds: deadline(after: duration, from: nowNanoseconds))
    }

    /// The time from `start` (a ``nowNanoseconds`` reading) to now.
    public func elapsed(since start: UInt64) -> Duration {
        let now = nowNanoseconds
        return .nanoseconds(Int64(clamping: now >= start ? now - start : 0))
    }
}

/// The real clock: `ContinuousClock` (monotonic, counting while the machine sleeps;
/// standard library only, no Foundation). Every instance reads the same time.
public struct ContinuousAdminClock: AdminClock {
    /// The real clock.
    public init() {}
    /// Nanoseconds of `ContinuousClock` since the process first read this clock.
    public var nowNanoseconds: UInt64 { continuousClockOrigin.duration(to: ContinuousClock.now).nanoseconds }
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

private let continuousClockOrigin = ContinuousClock.now
