import Synchronization
import Testing
@testable import VirtioAdminDriver
import VirtioAdminTestKit
@testable import VirtioSimulator
import VirtioSpec
import MSIXResourceManager
import VirtioTransport

/// A command whose data or result does not fit a command slot (512 bytes) gets DMA memory of
/// its own while it is on the ring: released once the device gave it back, never before.
struct LargeCommandTests {
    /// LIST_QUERY with room for 4000 result bytes: the device writes its 64-byte bitmap, the
    /// rest reads as zeros; the command's own memory is released once it completed.
    @Test func aResultLargerThanASlotComesBack() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let allocations = group.device.memory.liveAllocations
        let small = try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64))
        let large = try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 4000))
        #expect(large.status == .ok && large.result.count == 4000)
        #expect(Array(large.result.prefix(64)) == small.result && large.result.dropFirst(64).allSatisfy { $0 == 0 })
        #expect(group.device.memory.liveAllocations == allocations, "the command's own memory is released")
        #expect(group.device.memory.releasedMemoryAccesses == 0)
    }

    /// The memory of a command larger than a slot cannot be had: that command fails, naming
    /// the device, the command and the bytes; nothing of it reaches the device, no slot or
    /// memory is left taken, and the driver goes on (the next command, and a batch around
    /// such a command, are answered).
    @Test func aLargeCommandWhoseMemoryCannotBeHadFailsAlone() async throws {
        let device = SimulatedSRIOVDevice()
        defer { device.stop() }
        let allocator = RefusingAllocator(device.memory)
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        let driver = try await AdminQueueDriver.open(transport: transport, allocator: allocator)
        defer { driver.close() }
        allocator.refuseAbove.withLock { $0 = 4096 }
        let commandsBefore = device.counters.adminCommands
        let allocationsBefore = device.memory.liveAllocations
        let large = AdminCommand(opcode: .listQuery, resultLength: 8000)
        let expected = AdminError.dma(device: device.pfAddress, purpose: .command(opcode: .listQuery, opcodeName: "LIST_QUERY", bytes: 8032),
                                      .outOfMemory(requested: 8032))
        await #expect(throws: expected) { try await driver.submit(large) }
        #expect(expected.description == "0000:3b:00.0: LIST_QUERY (opcode 0x0000) was not sent: it is larger than a command slot and its 8032 bytes of DMA memory could not be had (cannot allocate 8032 bytes of DMA memory).")
        #expect(device.counters.adminCommands == commandsBefore, "nothing was sent")
        let results = await driver.submitBatch([AdminCommand(opcode: .listQuery, resultLength: 64), large, AdminCommand(opcode: .listQuery, resultLength: 64)])
        #expect(results.map { try? $0.get().status } == [.ok, nil, .ok])
        #expect(throws: expected) { try results[1].get() }
        #expect(try await driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64)).status == .ok)
        #expect(device.counters.adminCommands == commandsBefore + 3)
        #expect(driver.lock.withLock { driver.slotTable.busyCount } == 0, "no slot left taken")
        #expect(device.memory.liveAllocations == allocationsBefore, "no memory left allocated")
        #expect(device.memory.releasedMemoryAccesses == 0)
    }

    /// The admin queue's rings could be had but not its command slots: the open fails naming
    /// the device, what the memory was for and the bytes; the device is left reset and the
    /// rings' memory is released.
    @Test func anAdminQueueWithoutDMAMemoryIsNotBroughtUp() async throws {
        let device = SimulatedSRIOVDevice()
        defer { device.stop() }
        let allocator = RefusingAllocator(device.memory)
        // The rings of a 256-entry queue take 6726 bytes, its 128 command slots 131072.
        allocator.refuseAbove.withLock { $0 = 8192 }
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        let expected = AdminError.dma(device: device.pfAddress, purpose: .adminQueue(queueSize: 256), .outOfMemory(requested: 131_072))
        await #expect(throws: expected) {
            _ = try await AdminQueueDriver.open(transport: transport, allocator: allocator)
        }
        #expect(expected.description == "0000:3b:00.0: the admin queue was not brought up: DMA memory for its rings and command slots (queue size 256) could not be had (cannot allocate 131072 bytes of DMA memory); the device was left reset.")
        #expect(device.pfStatus == [], "left reset")
        #expect(allocator.allocations.withLock { $0 } == 1, "the rings were allocated")
        #expect(device.memory.liveAllocations == 0, "and released")
    }

    /// The largest command the driver sends has `largeCommandBytes` − 24 data bytes and
    /// `largeCommandBytes` − 8 result bytes; one byte more of either is refused, naming both limits.
    @Test func theSizeLimitsAreThoseTheRefusalNames() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let limit = group.driver.options.largeCommandBytes
        let largest = try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: limit - 8))
        #expect(largest.status == .ok && largest.result.count == limit - 8)
        let refused = AdminError.commandTooLarge(device: group.device.pfAddress, opcode: .listQuery, opcodeName: "LIST_QUERY", dataBytes: 0,
                                                 resultBytes: limit - 7, dataLimit: limit - 24, resultLimit: limit - 8)
        await #expect(throws: refused) { try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: limit - 7)) }
        #expect(group.device.memory.releasedMemoryAccesses == 0)
    }

    /// In a batch, a command larger than a slot goes by itself at its place in the order;
    /// the device reads all of its data (MSIX_SET's vector count first, then zero padding).
    @Test func aLargeCommandInABatchKeepsItsPlace() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        var data = [UInt8](repeating: 0, count: 2000)
        data[0] = 6
        let largeSet = AdminCommand(opcode: AdminOpcode(0x41), member: GroupMemberID(vfIndex: 2), data: data)
        let results = await group.driver.submitBatch([BatchTests.get(2), largeSet, BatchTests.get(2)])
        #expect(results.map { try? $0.get().status } == [.ok, .ok, .ok])
        #expect(results.map { try? $0.get().result.prefix(2) } == [[2, 0], [], [6, 0]], "the read after the large set sees it")
        #expect(group.device.memory.releasedMemoryAccesses == 0)
    }

    /// A large command the device never completes keeps its memory (the device owns it) after
    /// its caller timed out; a close, once the device's reset is confirmed, releases it.
    @Test func aLargeCommandsMemoryOutlivesItsTimeoutUntilTheDeviceIsQuiet() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()])
        defer { group.shutDown() }
        let allocations = group.device.memory.liveAllocations
        group.device.setFault(.neverComplete)
        await #expect(throws: AdminError.self) {
            try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 4000), timeout: .milliseconds(50))
        }
        #expect(group.device.memory.liveAllocations == allocations + 1, "kept while the device owns it")
        group.driver.close()
        #expect(group.device.memory.liveAllocations == allocations, "released after the reset")
        group.device.setFault(.neverComplete, false)
    }

    /// The device's reset is never confirmed and nothing can clear its bus mastering: the
    /// large command's memory goes to the quarantine with the rings, counted once.
    @Test(.timeLimit(.minutes(1))) func aLargeCommandsMemoryIsQuarantinedWithTheRings() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.slowResetDuration = .milliseconds(300)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        defer { device.stop() }
        var options = AdminQueueDriver.Options()
        options.resetTimeout = .milliseconds(20)
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        let driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
        let rings = driver.lock.withLock { (driver.queue?.memory.length ?? 0) + (driver.slab?.length ?? 0) }
        device.setFault(.neverComplete)
        _ = try? await driver.submit(AdminCommand(opcode: .listQuery, resultLength: 4000), timeout: .milliseconds(20))
        device.setFault(.slowReset)
        let error = driver.close()
        guard case .memoryQuarantined(_, let bytes, _)? = error else {
            Issue.record("expected the memory quarantined, got \(String(describing: error))")
            return
        }
        // Its own memory: the 24-byte header (padded to 8), then the 8-byte status and 4000 result bytes.
        #expect(bytes == rings + 24 + 8 + 4000, "the rings, the slots and the command's own memory")
        #expect(driver.quarantinedBytes == bytes)
        try await Task.sleep(for: .milliseconds(350))
        device.setFault(.neverComplete, false)
        device.setFault(.slowReset, false)
    }
}

/// Hands out the device model's memory, but refuses any allocation above `refuseAbove` bytes.
final class RefusingAllocator: DMAAllocator, @unchecked Sendable {
    let memory: SimulatedMemory
    let refuseAbove = Mutex<Int>(.max)
    /// Allocations handed out.
    let allocations = Mutex(0)
    init(_ memory: SimulatedMemory) { self.memory = memory }
    func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        guard length <= refuseAbove.withLock({ $0 }) else { throw .outOfMemory(requested: length) }
        let region = try memory.allocate(length: length, alignment: alignment)
        allocations.withLock { $0 += 1 }
        return region
    }
    func release(_ region: DMARegion) { memory.release(region) }
}
