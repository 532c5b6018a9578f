import VirtioAdminTestKit

/// Runs `body` while the test clock moves by `step` whenever the driver sleeps on it
/// (``ManualServiceClock/ticking(step:every:_:)``): timeouts pass in virtual time, and only while
/// the driver waits.
func withTicking<T>(_ clock: ManualServiceClock, step: Duration = .milliseconds(1), _ body: () async throws -> T) async rethrows -> T {
    try await clock.ticking(step: step, body)
}
