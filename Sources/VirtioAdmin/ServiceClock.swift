import VirtioAdminDriver

/// The time the service, the policy run and the PF lock wait go by: the admin driver's
/// clock (a monotonic count of nanoseconds and a sleep until a point on it). The real one
/// follows `ContinuousClock`; a test hands in a manual clock (`ManualServiceClock` in
/// VirtioAdminTestKit) and moves it on, so timeouts are tested without waiting for them —
/// one clock for the driver and the service alike.
public typealias ServiceClock = AdminClock

/// The real clock: `ContinuousClock` (monotonic, counting while the machine sleeps).
public typealias SystemServiceClock = ContinuousAdminClock
