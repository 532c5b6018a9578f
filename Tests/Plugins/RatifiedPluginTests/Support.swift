import CapabilitiesResourceManager
import DevicePartsResourceManager
import LegacyAccessResourceManager
import ResourceManager
import ResourceObjectsResourceManager
import Synchronization
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTestSupport

/// A simulated group with the ratified plugins, the capability handshake done.
func ratifiedGroup(handshake: DevicePartsCapability? = nil, members: [MemberResources]? = nil, _ configure: (inout SimulatedDeviceConfiguration) -> Void = { _ in }) async throws -> SimulatedAdminGroup {
    var configuration = SimulatedDeviceConfiguration()
    configure(&configuration)
    let group = try await SimulatedAdminGroup(plugins: [CapabilitiesResourceManager(), DevicePartsResourceManager(), ResourceObjectsResourceManager(),
                                                        LegacyAccessResourceManager()], configuration: configuration, members: members)
    _ = try await CapabilitiesResourceManager.handshake(driver: group.driver, wanted: handshake)
    return group
}

/// Records the device-readable bytes of every command sent.
final class SentCommands: Sendable {
    let sent = Mutex<[[UInt8]]>([])
    init(_ driver: AdminQueueDriver) {
        driver.setTrace { [self] event in
            if case .sent(_, let bytes) = event { self.sent.withLock { $0.append(bytes) } }
        }
    }
    var all: [[UInt8]] { sent.withLock { $0 } }
}

/// The 24-byte header as the fact sheet lays it out (§2.0): opcode le16 @0, group_type le16 @2,
/// reserved[12], group_member_id le64 @16.
func header(opcode: UInt8, group: UInt8, member: UInt8) -> [UInt8] {
    [opcode, 0, group, 0] + [UInt8](repeating: 0, count: 12) + [member, 0, 0, 0, 0, 0, 0, 0]
}

/// A path for a file named `name` in a fresh temporary directory (removed when the test process exits).
func temporaryPath(_ name: String) -> String {
    makeTemporaryDirectory("ratified") + "/" + name
}
