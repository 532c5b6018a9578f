import Testing
@testable import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSpec
import VirtioSimulator

/// A slot granted in one critical section and used in a later one (a command that waited for
/// a slot is handed one, then places itself) must not be used after a fail-all +
/// reinitialise, when the same index is free again and may be handed to another command.
struct SlotEpochTests {
    @Test func staleSlotGrantIsNeverUsed() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        let driver = group.driver
        let stale = driver.lock.withLock { driver.slotTable.take()! }
        try await driver.reinitialize()
        #expect(driver.lock.withLock { driver.slotTable.free.contains(stale.index) }, "the index is free again in the new epoch")
        let submitted = driver.statistics.submitted
        let command = AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8)
        let result: Result<AdminResponse, AdminError>? = await withUnsafeContinuation { continuation in
            driver.lock.withLock {
                _ = driver.submitLocked(slot: stale, command: command, token: 1, timeout: .seconds(1), waiter: .single(continuation))
            }
        }
        #expect(throws: AdminError.notRunning(device: group.device.pfAddress)) { try result!.get() }
        #expect(driver.statistics.submitted == submitted, "nothing went on the ring")
        #expect(driver.lock.withLock { driver.slotTable.free.filter { $0 == stale.index }.count } == 1, "not released twice")
        // The driver still works, on every slot.
        let response = try await driver.submit(command)
        #expect(response.status == .ok)
    }

    @Test(.timeLimit(.minutes(1))) func waitingForASlotIsBoundedByTheTimeout() async throws {
        let clock = ManualServiceClock()
        var options = AdminQueueDriver.Options()
        options.queueSize = 4  // two command slots
        options.slotWaitTimeout = .milliseconds(50)
        options.clock = clock
        let group = try await SimulatedAdminGroup(plugins: [], options: options)
        defer { group.shutDown() }
        group.device.setFault(.neverComplete)  // the device keeps both slots' buffers
        let command = AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8)
        let timedOut = await withTicking(clock) {
            var timedOut = 0
            for _ in 0..<2 {
                do throws(AdminError) { _ = try await group.driver.submit(command, timeout: .milliseconds(20)) } catch {
                    if case .timeout = error { timedOut += 1 }
                }
            }
            return timedOut
        }
        #expect(timedOut == 2)
        #expect(group.driver.statistics.timeouts == 2)
        let start = clock.nowNanoseconds
        let error = AdminError.noFreeSlot(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET", after: .milliseconds(50))
        let waiting = Task { try await group.driver.submit(command, timeout: .seconds(10)) }
        // Both slots stay taken: the command waits for one, its expiry on the driver's clock.
        while group.driver.lock.withLock({ group.driver.waiters.count }) == 0 { await Task.yield() }
        clock.advance(by: .milliseconds(49))
        for _ in 0..<100 { await Task.yield() }
        #expect(group.driver.statistics.timeouts == 2, "49 ms: still waiting")
        clock.advance(by: .milliseconds(1))
        await #expect(throws: error) { _ = try await waiting.value }
        #expect(clock.nowNanoseconds - start == 50_000_000, "bounded by the timeout: failed when the clock reached it, not before")
        #expect(error.description == "0000:3b:00.0: MSIX_GET (opcode 0x0040) found no free command slot within 0.05 seconds: the device holds every slot's buffers.")
    }

    @Test func hugeTimeoutDoesNotWrap() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.timing = DeviceTiming(latency: .milliseconds(5))
        let group = try await SimulatedAdminGroup(plugins: [], configuration: configuration)
        defer { group.shutDown() }
        // now + Duration.seconds(Int64.max) would wrap to the past and time out at once.
        let response = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8),
                                                     timeout: .seconds(Int64.max))
        #expect(response.status == .ok)
        #expect(group.driver.statistics.timeouts == 0)
    }
}

struct EAGAINTests {
    @Test func eagainIsRetried() async throws {
        let clock = ManualServiceClock()
        var options = AdminQueueDriver.Options()
        options.clock = clock
        let group = try await SimulatedAdminGroup(plugins: [], options: options)
        defer { group.shutDown() }
        group.device.setFault(.transientEAGAIN)  // the next three commands get EAGAIN / Q_TRYAGAIN
        let start = clock.nowNanoseconds
        let result = try await withTicking(clock) {
            try await group.driver.run(AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8))
        }
        #expect(clock.nowNanoseconds - start >= 21_000_000, "retried after 1, 4 and 16 ms on the driver's clock")
        #expect(result.prefix(2) == [0x02, 0x00], "2 vectors")
        #expect(group.driver.statistics.byStatus[11] == 3, "three EAGAIN answers, then OK")
    }
}
