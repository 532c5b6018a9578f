import Synchronization
import Testing
@testable import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport

/// Closing the admin queue: once is enough, and a close that lands inside a bring-up (an
/// interrupt's, from another thread) is not undone by it.
struct CloseTests {
    /// A close resets the device; a second close finds it quiesced and resets nothing (an
    /// interrupted command closes every open driver, then its own path closes them again).
    @Test func aClosedDriverIsNotResetAgain() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        let before = group.device.counters.resets
        #expect(group.driver.close() == nil)
        #expect(group.device.counters.resets == before + 1)
        #expect(group.driver.close() == nil)
        #expect(group.device.counters.resets == before + 1, "the second close reset the device again")
        await #expect(throws: AdminError.notRunning(device: group.device.pfAddress)) {
            try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64))
        }
    }

    /// The driver is closed while its bring-up writes DRIVER_OK (its register writes are not
    /// under the lock). The bring-up does not go on as if nothing happened: it quiesces the
    /// device again (the device may have taken the rings after the close's reset), stays
    /// closed, and `open` says so at once — not with a command timeout on a reset device.
    @Test func aCloseDuringBringUpIsNotUndone() async throws {
        let device = SimulatedSRIOVDevice(configuration: SimulatedDeviceConfiguration())
        defer { device.stop() }
        let bar = ClosingOnDriverOK(device.pfBAR())
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: bar])
        bar.onDriverOK.withLock {
            $0 = { for driver in openDrivers.all() where driver.transport === transport { driver.close() } }
        }
        var options = AdminQueueDriver.Options()
        options.defaultTimeout = .milliseconds(300)
        let resetsBefore = device.counters.resets
        await #expect(throws: AdminError.notRunning(device: device.pfAddress)) {
            _ = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
        }
        #expect(bar.closes.load(ordering: .relaxed) == 1, "the close ran inside the bring-up")
        #expect(transport.status.rawValue == 0, "the device is left reset")
        // Bring-up's own reset, the close's, and the one after DRIVER_OK was found closed.
        #expect(device.counters.resets - resetsBefore == 3)
        #expect(device.counters.adminCommands == 0, "no command was sent to the closed device")
    }

    /// A recovery sees the driver failed, then an interrupt closes it, then the recovery
    /// brings the queue up: `reinitialize(ifFailed:)` checks in the same hold of the lock
    /// that quiesces, so the close stands and the device stays reset.
    @Test func aRecoveryDoesNotUndoACloseThatCameAfterItsCheck() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        group.device.setFault(.needsResetMidFlight)
        _ = try? await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64), timeout: .milliseconds(500))
        try #require(group.driver.isFailed)
        group.device.setFault(.needsResetMidFlight, false)
        #expect(group.driver.close() == nil)
        #expect(try await group.driver.reinitialize(ifFailed: true) == false)
        #expect(group.device.pfStatus == [], "the device stays reset")
        await #expect(throws: AdminError.notRunning(device: group.device.pfAddress)) {
            try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64))
        }
        // Asked for without the condition, a reinitialise still brings a closed queue up.
        #expect(try await group.driver.reinitialize() == true)
        #expect(try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64)).status == .ok)
    }

    /// A close inside a bring-up whose reset is not confirmed quarantines the new rings and
    /// slots; the bring-up, finding itself closed, neither attaches them again nor counts
    /// them twice.
    @Test(.timeLimit(.minutes(1))) func aCloseDuringBringUpQuarantinesItsMemoryOnce() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.slowResetDuration = .milliseconds(400)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        defer { device.stop() }
        let bar = ClosingOnDriverOK(device.pfBAR())
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: bar])
        let quarantine = Mutex<(driver: AdminQueueDriver?, error: AdminError?)>((nil, nil))
        bar.onDriverOK.withLock {
            $0 = {
                device.setFault(.slowReset)
                for driver in openDrivers.all() where driver.transport === transport {
                    let error = driver.close()
                    quarantine.withLock { $0 = (driver, error) }
                }
            }
        }
        var options = AdminQueueDriver.Options()
        options.resetTimeout = .milliseconds(50)
        await #expect(throws: AdminError.notRunning(device: device.pfAddress)) {
            _ = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
        }
        let (driver, error) = quarantine.withLock { $0 }
        guard case .memoryQuarantined(_, let bytes, _)? = error, let driver else {
            Issue.record("the close inside the bring-up did not quarantine: \(String(describing: error))")
            return
        }
        #expect(driver.quarantinedBytes == bytes, "quarantined once: \(driver.quarantinedBytes) bytes counted, the close reported \(bytes)")
        #expect(driver.lock.withLock { driver.slab == nil && driver.queue == nil }, "the quarantined memory is not attached again")
        device.setFault(.slowReset, false)
    }

    /// A task cancelled before its command is placed sends nothing: the command fails as
    /// cancelled (before, the cancellation handler found no slot and the command ran).
    @Test func aCommandCancelledBeforeItIsPlacedIsNotSent() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        let task = Task { () async throws -> AdminResponse in
            withUnsafeCurrentTask { $0?.cancel() }
            return try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64))
        }
        let result = await task.result
        guard case .failure(let error) = result, case .cancelled? = error as? AdminError else {
            Issue.record("expected a cancelled command, got \(result)")
            return
        }
        #expect(group.device.counters.adminCommands == before, "nothing was sent")
        #expect(group.driver.statistics.cancellations == 1)
        // A batch from a cancelled task likewise: every entry fails as cancelled, none is sent.
        let batch = Task { () async -> [Result<AdminResponse, AdminError>] in
            withUnsafeCurrentTask { $0?.cancel() }
            return await group.driver.submitBatch((0..<3).map { _ in AdminCommand(opcode: .listQuery, resultLength: 64) })
        }
        let results = await batch.value
        #expect(results.allSatisfy { if case .failure(.cancelled) = $0 { true } else { false } }, "\(results)")
        #expect(group.device.counters.adminCommands == before, "nothing was sent")
        #expect(try await group.driver.submit(AdminCommand(opcode: .listQuery, resultLength: 64)).status == .ok)
    }
}

/// The PF's BAR, calling `onDriverOK` (once) right after the driver sets DRIVER_OK.
final class ClosingOnDriverOK: RegisterSpace, @unchecked Sendable {
    let inner: any RegisterSpace
    let onDriverOK = Mutex<(@Sendable () -> Void)?>(nil)
    let closes = Atomic<Int>(0)
    init(_ inner: any RegisterSpace) { self.inner = inner }
    var length: Int { inner.length }
    func read8(at offset: Int) -> UInt8 { inner.read8(at: offset) }
    func read16(at offset: Int) -> UInt16 { inner.read16(at: offset) }
    func read32(at offset: Int) -> UInt32 { inner.read32(at: offset) }
    func write8(_ value: UInt8, at offset: Int) {
        inner.write8(value, at: offset)
        // device_status is the common configuration's only byte-wide field a driver writes.
        guard value & DeviceStatus.driverOK.rawValue != 0, let hook = onDriverOK.withLock({ hook in defer { hook = nil }; return hook }) else { return }
        closes.add(1, ordering: .relaxed)
        hook()
    }
    func write16(_ value: UInt16, at offset: Int) { inner.write16(value, at: offset) }
    func write32(_ value: UInt32, at offset: Int) { inner.write32(value, at: offset) }
}
