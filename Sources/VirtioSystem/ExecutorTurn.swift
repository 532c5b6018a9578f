import CVirtioSystem

extension Sys {
    /// Whether the calling thread is due to give its executor to other tasks: `period`
    /// since it last was (by `now`, the caller's clock), or `turns` calls — so that a clock
    /// that stands still (a test's) still gives turns. Counts this call; per thread, so every
    /// executor thread that runs callers polling batch after batch lets others run.
    @inline(__always) package static func executorTurnDue(now: UInt64, period: UInt64, turns: UInt32) -> Bool {
        csystem_turn_due(now, period, turns) != 0
    }
}
