import Testing
@testable import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSpec
import VirtioSimulator

/// A slot taken from the free list outside the lock (submit pops it, then places the command
/// in a later critical section) must not be used after a fail-all + reinitialise, when the
/// same index is free again and may be handed to another command.
struct SlotEpochTests {
    @Test func staleSlotGrantIsNeverUsed() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        let driver = group.driver
        let stale = driver.lock.withLock { AdminQueueDriver.SlotGrant(index: driver.freeSlots.popLast()!, epoch: driver.slotEpoch) }
        try await driver.reinitialize()
        #expect(driver.lock.withLock { driver.freeSlots.contains(stale.index) }, "the index is free again in the new epoch")
        let submitted = driver.statistics.submitted
        let command = AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8)
        let result: Result<AdminResponse, AdminError> = await withCheckedContinuation { continuation in
            driver.lock.withLock {
                driver.submitLocked(slot: stale, command: command, token: 1, timeout: .seconds(1), continuation: continuation)
            }
        }
        #expect(throws: AdminError.notRunning(device: group.device.pfAddress)) { try result.get() }
        #expect(driver.statistics.submitted == submitted, "nothing went on the ring")
        #expect(driver.lock.withLock { driver.freeSlots.filter { $0 == stale.index }.count } == 1, "not released twice")
        // The driver still works, on every slot.
        let response = try await driver.submit(command)
        #expect(response.status == .ok)
    }

    @Test(.timeLimit(.minutes(1))) func waitingForASlotIsBoundedByTheTimeout() async throws {
        var options = AdminQueueDriver.Options()
        options.queueSize = 4  // two command slots
        options.slotWaitTimeout = .milliseconds(50)
        let group = try await SimulatedAdminGroup(plugins: [], options: options)
        defer { group.shutDown() }
        group.device.setFault(.neverComplete)  // the device keeps both slots' buffers
        let command = AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8)
        for _ in 0..<2 { _ = try? await group.driver.submit(command, timeout: .milliseconds(20)) }
        let start = ContinuousClock.now
        let error = AdminError.noFreeSlot(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET", after: .milliseconds(50))
        await #expect(throws: error) { _ = try await group.driver.submit(command, timeout: .seconds(10)) }
        #expect(error.description == "0000:3b:00.0: MSIX_GET (opcode 0x0040) found no free command slot within 0.05 seconds: the device holds every slot's buffers.")
        #expect(ContinuousClock.now - start < .seconds(5))
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
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        group.device.setFault(.transientEAGAIN)  // the next three commands get EAGAIN / Q_TRYAGAIN
        let result = try await group.driver.run(AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(rawValue: 1), resultLength: 8))
        #expect(result.prefix(2) == [0x02, 0x00], "2 vectors")
        #expect(group.driver.statistics.byStatus[11] == 3, "three EAGAIN answers, then OK")
    }
}
