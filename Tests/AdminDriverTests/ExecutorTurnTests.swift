import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSystem
import MSIXResourceManager

/// A task executor with one thread of its own that counts the jobs it is given: a task
/// preferring it is enqueued here each time it resumes or yields.
final class CountingExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = ConditionLock()
    private var jobs: [UnownedJob] = []
    private var stopping = false
    private var count = 0
    private var thread: JoinableThread?

    init() {
        thread = JoinableThread { [self] in run() }
    }

    var enqueued: Int { condition.withLock { count } }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.withLock {
            jobs.append(job)
            count += 1
            condition.signal()
        }
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty { condition.unlock(); return }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    func stop() {
        condition.withLock {
            stopping = true
            condition.signal()
        }
        thread?.join()
    }
}

/// Callers that poll the used ring batch after batch never suspend on their own: every
/// executor thread running them gives others a turn now and then.
struct ExecutorTurnTests {
    /// Per thread: due after `period`, after `turns` calls on a clock that stands still, and
    /// when the clock went back.
    @Test func aThreadIsDueByTimeByTurnsAndWhenTheClockGoesBack() {
        final class Box: @unchecked Sendable { var seen: [Bool] = [] }
        let box = Box()
        let thread = JoinableThread {
            var seen: [Bool] = []
            let due = { (now: UInt64) in Sys.executorTurnDue(now: now, period: 500_000, turns: 4) }
            seen.append(due(5_000_000))                          // the thread's first call: due
            for _ in 0..<4 { seen.append(due(5_000_000)) }       // the clock stands still: the 4th call after is due
            seen.append(due(5_400_000))                          // 400 µs after the last turn: not due
            seen.append(due(5_500_000))                          // 500 µs after: due
            seen.append(due(1_000))                              // the clock went back: due
            box.seen = seen
        }
        thread?.join()
        #expect(box.seen == [true, false, false, false, true, false, true, true])
    }

    /// A caller sending batch after batch to a device that answers at once (the model on
    /// its own thread) yields its thread at least every 64 batches.
    @Test func aCallerPollingBatchAfterBatchYieldsItsThread() async throws {
        var options = AdminQueueDriver.Options()
        options.callerSpin = .seconds(10)
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        let executor = CountingExecutor()
        defer { executor.stop() }
        let driver = group.driver
        let before = executor.enqueued
        let polled = await withTaskExecutorPreference(executor) {
            let start = driver.statistics.completedWhileWaiting
            for _ in 0..<640 { _ = await driver.submitBatch((0..<4).map { BatchTests.get($0) }) }
            return driver.statistics.completedWhileWaiting - start
        }
        let enqueued = executor.enqueued - before
        #expect(polled > 0, "the caller polled the ring itself")
        // One turn per 64 batches (or per 500 µs) at least; batches that suspended add more.
        #expect(enqueued >= 10, "640 batches gave the thread away \(enqueued) times")
    }
}
