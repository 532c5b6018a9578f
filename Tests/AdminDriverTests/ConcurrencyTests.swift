import Synchronization
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import MSIXResourceManager

struct ConcurrencyTests {
    /// 64 tasks × 1000 commands, the device completing out of order with latency and
    /// parallelism: every result matches its request, nothing lost or duplicated.
    @Test func sixtyFourTasksTimesAThousand() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: SimulatedDeviceConfiguration(vfs: 64, vectorsPerVF: 32))
        defer { group.shutDown() }
        group.device.setTiming(DeviceTiming(latency: .microseconds(5), parallelism: 16, jitter: 0.9, completionOrder: .shuffled(seed: 3)))
        let msix = MSIXResourceManager()
        let driver = group.driver
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for task in 0..<64 {
                tasks.addTask {
                    var mismatches = 0
                    for round in 0..<1000 {
                        // Each task owns VF `task`: set, then read back, with a value unique to (task, round).
                        let vectors = 1 + (task + round) % 31
                        if round % 2 == 0 {
                            try await msix.setVectors(vectors, of: task, driver: driver)
                        } else {
                            let expected = 1 + (task + round - 1) % 31
                            if try await msix.vectors(of: task, driver: driver) != expected { mismatches += 1 }
                        }
                    }
                    return mismatches
                }
            }
            return try await tasks.reduce(0, +)
        }
        #expect(mismatches == 0)
        let stats = driver.statistics
        #expect(stats.submitted == 4 + 64_000, "two groups negotiated (LIST_QUERY + LIST_USE each), then the load")
        #expect(stats.completed == stats.submitted, "no lost or duplicated completion")
        #expect(stats.byStatus[0] == stats.submitted)
        #expect(group.device.counters.adminCommands == stats.submitted)
        for vf in 0..<64 { #expect(group.device.member(vf).msixVectors == 1 + (vf + 998) % 31) }
    }

    @Test func moreCallersThanSlotsWaitTheirTurn() async throws {
        var options = AdminQueueDriver.Options()
        options.queueSize = 8  // 4 slots
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        group.device.setTiming(DeviceTiming(latency: .microseconds(200), parallelism: 4))
        let msix = MSIXResourceManager()
        let results = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for index in 0..<64 { tasks.addTask { try await msix.vectors(of: index % 8, driver: group.driver) } }
            return try await tasks.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(results.count == 64 && results.allSatisfy { $0 == 2 })
    }

    @Test func oneTimesOutWhileOthersComplete() async throws {
        let clock = ManualServiceClock()
        var options = AdminQueueDriver.Options()
        options.clock = clock
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        let msix = MSIXResourceManager()
        // Commands sent while the fault is on are swallowed by the device.
        group.device.setFault(.neverComplete)
        let start = clock.nowNanoseconds
        let submitted = group.driver.statistics.submitted
        let lost = Task { try await msix.vectors(of: 0, driver: group.driver, timeout: .milliseconds(100)) }
        while group.driver.statistics.submitted == submitted { await Task.yield() }
        group.device.setFault(.neverComplete, false)
        let others = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for vf in 1..<8 { tasks.addTask { try await msix.vectors(of: vf, driver: group.driver) } }
            return try await tasks.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(others == Array(repeating: 2, count: 7))
        #expect(group.driver.statistics.timeouts == 0, "no time has passed yet")
        clock.advance(by: .milliseconds(99))
        for _ in 0..<100 { await Task.yield() }
        #expect(group.driver.statistics.timeouts == 0, "99 ms: not yet")
        clock.advance(by: .milliseconds(1))
        await #expect(throws: AdminError.timeout(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET",
                                                 member: GroupMemberID(vfIndex: 0), after: .milliseconds(100))) {
            _ = try await lost.value
        }
        #expect(clock.nowNanoseconds - start == 100_000_000, "timed out on the driver's clock, after exactly the advance")
        #expect(group.driver.statistics.timeouts == 1)
        // The timed-out command still holds its slot (the device owns its buffers) — and the driver keeps working.
        #expect(try await msix.vectors(of: 3, driver: group.driver) == 2)
    }

    @Test func cancellationFailsOnlyTheCancelledCommand() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        group.device.setFault(.neverComplete)
        let msix = MSIXResourceManager()
        let submitted = group.driver.statistics.submitted
        let task = Task { try await msix.vectors(of: 1, driver: group.driver, timeout: .seconds(30)) }
        while group.driver.statistics.submitted == submitted { await Task.yield() }
        task.cancel()
        await #expect(throws: AdminError.cancelled(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET")) {
            _ = try await task.value
        }
        group.device.setFault(.neverComplete, false)
        #expect(try await msix.vectors(of: 2, driver: group.driver) == 2)
        #expect(group.driver.statistics.cancellations == 1)
    }

    /// Cancellations racing the completions of the same commands, and the handing over of
    /// slots to waiters: a task's cancellation handler runs holding the task's status lock,
    /// which a resume of that task needs, so a handler that waited for the driver's lock
    /// (held while the driver resumes callers, or fails them all in a close) could deadlock
    /// the driver for good.
    @Test(.timeLimit(.minutes(1))) func cancellationsRacingCompletionsNeverHang() async throws {
        var options = AdminQueueDriver.Options()
        options.queueSize = 8  // four slots: some of the six tasks wait for one
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        group.device.processQueuesOnOwnThread()
        group.device.setTiming(DeviceTiming(latency: .microseconds(20), parallelism: 4))
        @Sendable func get(_ vf: Int) -> AdminCommand { AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: vf), resultLength: 8) }
        var cancelled = 0
        for round in 0..<400 {
            let tasks = (0..<6).map { vf in Task { try await group.driver.submit(get(vf)) } }
            // Cancel at a moment that moves from round to round across the commands' 20 µs.
            let start = monotonicNanoseconds()
            while monotonicNanoseconds() - start < UInt64(round % 40) * 1_000 {}
            for task in tasks { task.cancel() }
            // Now and then a close fails everything in flight and every waiter meanwhile.
            if round % 50 == 49 { group.driver.close() }
            for task in tasks {
                if case .failure(let error) = await task.result, case .cancelled? = error as? AdminError { cancelled += 1 }
            }
            if round % 50 == 49 { try await group.driver.reinitialize() }
        }
        #expect(cancelled > 0, "some commands were cancelled before they completed")
        #expect(try await group.driver.submit(get(0)).status == .ok, "the driver still works")
    }
}
