import ResourceManager
import VirtioAdminDriver
import VirtioSpec

/// Layouts of the legacy-interface commands (virtio 1.3 §2.12.1.2, fact sheet §2.2). All go
/// to the SR-IOV group with the VF's member id; data is little-endian whatever the guest.
package enum LegacyAccessLayout {
    package static let commonCfgWrite = AdminOpcode(0x2)
    package static let commonCfgRead = AdminOpcode(0x3)
    package static let devCfgWrite = AdminOpcode(0x4)
    package static let devCfgRead = AdminOpcode(0x5)
    package static let notifyInfo = AdminOpcode(0x6)
    /// WRITE data: `offset` u8 @0, reserved[7], data[] @8 [legacy:41-45,107-111].
    package static let writeData = 8
    /// READ data: `offset` u8 @0 (1 byte); the result is data[] of the read width [legacy:71-73,83-85].
    /// NOTIFY_INFO result: 4 entries of 16 bytes: flags u8 @0, bar u8 @1, padding[6], offset le64 @8 [legacy:203-212].
    package static let notifyEntrySize = 16
    package static let notifyEntries = 4
    package static let notifyFlagsEnd: UInt8 = 0
    package static let notifyFlagsOwner: UInt8 = 1
    package static let notifyFlagsMember: UInt8 = 2

    /// The legacy common configuration with MSI-X [pci:827-858]: offset → (name, width, writable).
    /// Device-specific configuration starts at 24 (20 without MSI-X).
    package static let commonFields: [(offset: Int, name: String, width: Int, writable: Bool)] = [
        (0, "device_features", 4, false), (4, "driver_features", 4, true), (8, "queue_address", 4, true),
        (12, "queue_size", 2, false), (14, "queue_select", 2, true), (16, "queue_notify", 2, true),
        (18, "device_status", 1, true), (19, "isr_status", 1, false), (20, "config_msix_vector", 2, true),
        (22, "queue_msix_vector", 2, true),
    ]
}

/// A usable entry of LEGACY_NOTIFY_INFO.
package struct LegacyNotifyEntry: Sendable, Hashable {
    /// 1: a BAR of the owner (PF); 2: a BAR of the member (VF).
    package var flags: UInt8
    package var bar: UInt8
    package var offset: UInt64
    package init(flags: UInt8, bar: UInt8, offset: UInt64) {
        self.flags = flags
        self.bar = bar
        self.offset = offset
    }

    /// Decodes the result the way a driver must [legacy:353-366]: stop at the first entry with
    /// flags 0, and skip entries with reserved flags, a BAR outside 1–5 or an odd offset.
    package static func decode(_ result: [UInt8]) -> [LegacyNotifyEntry] {
        var entries: [LegacyNotifyEntry] = []
        for index in 0..<LegacyAccessLayout.notifyEntries {
            let base = index * LegacyAccessLayout.notifyEntrySize
            guard base + LegacyAccessLayout.notifyEntrySize <= result.count else { break }
            let flags = result[base]
            if flags == LegacyAccessLayout.notifyFlagsEnd { break }
            let bar = result[base + 1]
            let offset = result.readLE(UInt64.self, at: base + 8)
            guard flags == LegacyAccessLayout.notifyFlagsOwner || flags == LegacyAccessLayout.notifyFlagsMember,
                  (1...5).contains(bar), offset % 2 == 0 else { continue }
            entries.append(LegacyNotifyEntry(flags: flags, bar: bar, offset: offset))
        }
        return entries
    }
}

/// Reads and writes a VF's legacy common and device configuration through the PF, and asks
/// where to send legacy queue notifications — the commands Linux's virtio-vfio-pci uses to
/// offer a legacy virtio-net VF to a guest (fact sheet §6.3).
package struct LegacyAccessResourceManager: AdminCommandHandler {
    package init() {}
    package var name: String { "legacy" }
    package var version: String { "1.0" }
    package var summary: String { "legacy (virtio 0.9) register access of a VF through the PF (virtio 1.3)" }
    package var groupTypes: [AdminGroupType] { [.srIOV] }
    package var opcodes: [(AdminOpcode, String)] {
        [(LegacyAccessLayout.commonCfgWrite, "LEGACY_COMMON_CFG_WRITE"), (LegacyAccessLayout.commonCfgRead, "LEGACY_COMMON_CFG_READ"),
         (LegacyAccessLayout.devCfgWrite, "LEGACY_DEV_CFG_WRITE"), (LegacyAccessLayout.devCfgRead, "LEGACY_DEV_CFG_READ"),
         (LegacyAccessLayout.notifyInfo, "LEGACY_NOTIFY_INFO")]
    }

    /// Reads `width` bytes at `offset` (common or device-specific configuration).
    package static func read(common: Bool, offset: UInt8, width: Int, member: GroupMemberID, driver: some AdminCommandRunner,
                            timeout: Duration? = nil) async throws(AdminError) -> [UInt8] {
        try await driver.run(AdminCommand(opcode: common ? LegacyAccessLayout.commonCfgRead : LegacyAccessLayout.devCfgRead, member: member,
                                          data: [offset], resultLength: width), timeout: timeout, minimumResult: width)
    }

    /// Writes `bytes` at `offset`.
    package static func write(common: Bool, offset: UInt8, bytes: [UInt8], member: GroupMemberID, driver: some AdminCommandRunner,
                             timeout: Duration? = nil) async throws(AdminError) {
        let data = [offset] + [UInt8](repeating: 0, count: 7) + bytes
        _ = try await driver.run(AdminCommand(opcode: common ? LegacyAccessLayout.commonCfgWrite : LegacyAccessLayout.devCfgWrite, member: member,
                                              data: data), timeout: timeout)
    }

    /// LEGACY_NOTIFY_INFO, decoded.
    package static func notifyInfo(member: GroupMemberID, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> [LegacyNotifyEntry] {
        let result = try await driver.run(AdminCommand(opcode: LegacyAccessLayout.notifyInfo, member: member,
                                                       resultLength: LegacyAccessLayout.notifyEntries * LegacyAccessLayout.notifyEntrySize), timeout: timeout)
        return LegacyNotifyEntry.decode(result)
    }

    /// Checks an access before sending: one whole field [legacy:55-58].
    static func check(common: Bool, offset: Int, width: Int?, plugin: String) throws(PluginError) -> Int {
        if common {
            guard let field = LegacyAccessLayout.commonFields.first(where: { $0.offset == offset }) else {
                let starts = LegacyAccessLayout.commonFields.map { String($0.offset) }.joined(separator: ", ")
                throw .badArgument(plugin: plugin, message: "legacy common config has no field at offset \(offset); fields start at \(starts).")
            }
            if let width, width != field.width {
                throw .badArgument(plugin: plugin, message: "\(field.name) (offset \(offset)) is \(field.width) bytes wide, not \(width); one access covers exactly one field.")
            }
            return field.width
        }
        guard let width, [1, 2, 4].contains(width) else { throw .badArgument(plugin: plugin, message: "--width must be 1, 2 or 4 bytes for device config.") }
        guard offset + width <= 256 else { throw .badArgument(plugin: plugin, message: "offset \(offset) + \(width) bytes lies outside device config (256 bytes).") }
        return width
    }

    static func explain(_ error: AdminError, vf: Int, offset: Int, width: Int) -> any Error {
        guard case let .commandFailed(device, _, opcodeName, _, status, qualifier) = error else { return error }
        let message: String
        switch (status, qualifier) {
        case (.einval, .invalidField): message = "\(device) refused a \(width)-byte access at offset \(offset) of VF \(vf): it does not cover exactly one field (\(opcodeName): EINVAL/INVALID_FIELD)."
        case (.einval, .invalidMember): message = "\(device) says VF \(vf) is not a member of its group (\(opcodeName): EINVAL/INVALID_MEMBER)."
        default: message = "\(device) refused \(opcodeName) for VF \(vf) with \(status.name)/\(qualifier.name)."
        }
        return PluginError.refused(plugin: "legacy", message: message)
    }

    package var operations: [PluginOperation] {
        let plugin = name
        func access(_ operation: String, common: Bool, write: Bool) -> PluginOperation {
            var parameters = [PluginParameter("vf", .vf, help: "VF index (0-based)."),
                              PluginParameter("offset", .integer, help: common ? "Legacy common-config offset (0–23)." : "Offset in device config.")]
            parameters.append(PluginParameter("width", .integer, required: !common, help: "Bytes (1, 2 or 4); common config: the field's width."))
            if write { parameters.append(PluginParameter("value", .integer, help: "Value to write (little-endian).")) }
            let opcode = common ? (write ? LegacyAccessLayout.commonCfgWrite : LegacyAccessLayout.commonCfgRead)
                : (write ? LegacyAccessLayout.devCfgWrite : LegacyAccessLayout.devCfgRead)
            return PluginOperation(name: operation, summary: "\(write ? "Write" : "Read") a VF's legacy \(common ? "common" : "device") configuration field.",
                                   parameters: parameters, opcodes: [opcode]) { context, arguments in
                let (vf, member) = try arguments.member(context, plugin: plugin)
                let offset = try arguments.integer("offset", in: 0...255, plugin: plugin)
                let width = try Self.check(common: common, offset: offset,
                                           width: arguments.string("width") == nil ? nil : try arguments.integer("width", in: 1...8, plugin: plugin), plugin: plugin)
                if write {
                    let value = try arguments.integer("value", in: 0...Int(UInt32.max), plugin: plugin)
                    guard width == 4 || value < 1 << (8 * width) else {
                        throw PluginError.badArgument(plugin: plugin, message: "\(value) does not fit \(width) bytes.")
                    }
                    if common, !(LegacyAccessLayout.commonFields.first { $0.offset == offset }?.writable ?? false) {
                        throw PluginError.badArgument(plugin: plugin, message: "offset \(offset) of legacy common config is read-only.")
                    }
                    do throws(AdminError) {
                        try await Self.write(common: common, offset: UInt8(offset), bytes: (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) },
                                             member: member, driver: context.driver, timeout: context.timeout)
                    } catch { throw Self.explain(error, vf: vf, offset: offset, width: width) }
                    return PluginOutput(fields: [("vf", .int(vf)), ("offset", .int(offset)), ("value", .int(value))],
                                        summary: "VF \(vf): wrote \(value) at legacy \(common ? "common" : "device") offset \(offset)")
                }
                let bytes: [UInt8]
                do throws(AdminError) {
                    bytes = try await Self.read(common: common, offset: UInt8(offset), width: width, member: member, driver: context.driver, timeout: context.timeout)
                } catch { throw Self.explain(error, vf: vf, offset: offset, width: width) }
                var value = 0
                for (index, byte) in bytes.prefix(width).enumerated() { value |= Int(byte) << (8 * index) }
                return PluginOutput(fields: [("vf", .int(vf)), ("offset", .int(offset)), ("width", .int(width)), ("value", .int(value))],
                                    summary: "VF \(vf): legacy \(common ? "common" : "device") offset \(offset) = \(value) (\(hex(value)))")
            }
        }
        return [
            access("read-common", common: true, write: false), access("write-common", common: true, write: true),
            access("read-device", common: false, write: false), access("write-device", common: false, write: true),
            PluginOperation(name: "notify-info", summary: "Where to write legacy queue notifications (LEGACY_NOTIFY_INFO).",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based).")],
                            opcodes: [LegacyAccessLayout.notifyInfo]) { context, arguments in
                let (vf, member) = try arguments.member(context, plugin: plugin)
                guard context.driver.supported.contains(LegacyAccessLayout.notifyInfo) else {
                    throw PluginError.refused(plugin: plugin, message: "\(context.driver.address) does not list LEGACY_NOTIFY_INFO (0x0006) in LIST_QUERY.")
                }
                let entries: [LegacyNotifyEntry]
                do throws(AdminError) { entries = try await Self.notifyInfo(member: member, driver: context.driver, timeout: context.timeout) } catch {
                    throw Self.explain(error, vf: vf, offset: 0, width: 0)
                }
                let values = entries.map { PluginValue.object([("owner", .bool($0.flags == 1)), ("bar", .int(Int($0.bar))), ("offset", .int(Int($0.offset)))]) }
                return PluginOutput(fields: [("vf", .int(vf)), ("entries", .list(values))],
                                    summary: entries.isEmpty ? "VF \(vf): no usable notification address" : entries.map {
                                        "\($0.flags == 1 ? "PF" : "VF") BAR\($0.bar) + \(hex($0.offset))"
                                    }.joined(separator: "\n"))
            },
        ]
    }
}
