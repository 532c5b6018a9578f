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
