import ResourceManager
import VirtioAdminDriver
import VirtioSpec

/// Layouts of the resource-object commands (virtio 1.4, fact sheet §2.4).
///
/// RESOURCE_OBJ_MODIFY and RESOURCE_OBJ_QUERY are **not sent**: the spec's opcode table
/// gives MODIFY 0xc and QUERY 0xb [admin:147-149] while the command text gives MODIFY 0xb
/// and QUERY 0xc [resobj:148,173], and Linux defines neither. Until a device's LIST_QUERY
/// and a documented choice settle it, this plugin declares only CREATE (0xa) and DESTROY (0xd).
package enum ResourceObjectLayout {
    package static let create = AdminOpcode(0xa)
    package static let destroy = AdminOpcode(0xd)
    /// `virtio_admin_cmd_resource_obj_cmd_hdr`: type le16 @0, reserved[2], id le32 @4 (8 bytes) [resobj:100-104].
    package static let headerSize = 8
    package static let headerType = 0
    package static let headerID = 4
    /// CREATE: header, flags le64 @8 (reserved, 0), object-specific data @16 [resobj:128-137].
    package static let createFlags = 8
    package static let createSpecificData = 16
}

/// Resource object types [resobj:54-77][net:481-495].
package enum ResourceObjectType {
    package static let deviceParts: UInt16 = 0x000
    package static func name(_ type: UInt16) -> String {
        switch type {
        case 0x000: "DEV_PARTS"
        case 0x200: "NET_FF_GROUP"
        case 0x201: "NET_FF_CLASSIFIER"
        case 0x202: "NET_FF_RULE"
        default: "type \(hex(type, width: 3))"
        }
    }
}

/// A resource object as the commands name it: type, id, and where it lives (the SR-IOV
/// group and a member, as Linux creates DEV_PARTS objects; or the self group).
package struct ResourceObjectAddress: Sendable, Hashable {
    package var type: UInt16
    package var id: UInt32
    package var groupType: AdminGroupType
    package var member: GroupMemberID
    package init(type: UInt16, id: UInt32, groupType: AdminGroupType = .srIOV, member: GroupMemberID) {
        self.type = type
        self.id = id
        self.groupType = groupType
        self.member = member
    }

    /// The 8-byte header that starts every resource-object and device-parts command.
    package var header: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: ResourceObjectLayout.headerSize)
        bytes.writeLE(type, at: ResourceObjectLayout.headerType)
        bytes.writeLE(id, at: ResourceObjectLayout.headerID)
        return bytes
    }
}

/// Creates and destroys resource objects (RESOURCE_OBJ_CREATE / _DESTROY).
package struct ResourceObjectsResourceManager: AdminCommandHandler {
    package init() {}
    package var name: String { "resobj" }
    package var version: String { "1.0" }
    package var summary: String { "resource objects: create and destroy (MODIFY/QUERY withheld: the spec numbers them two ways)" }
    package var groupTypes: [AdminGroupType] { [.srIOV, .selfGroup] }
    package var opcodes: [(AdminOpcode, String)] {
        [(ResourceObjectLayout.create, "RESOURCE_OBJ_CREATE"), (ResourceObjectLayout.destroy, "RESOURCE_OBJ_DESTROY")]
    }

    /// RESOURCE_OBJ_CREATE with flags 0 and the object's specific data.
    package static func create(_ object: ResourceObjectAddress, specificData: [UInt8], driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        let data = object.header + [UInt8](repeating: 0, count: 8) + specificData
        _ = try await driver.run(AdminCommand(opcode: ResourceObjectLayout.create, groupType: object.groupType, member: object.member, data: data), timeout: timeout)
    }

    /// RESOURCE_OBJ_DESTROY (the 8-byte header only).
    package static func destroy(_ object: ResourceObjectAddress, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        _ = try await driver.run(AdminCommand(opcode: ResourceObjectLayout.destroy, groupType: object.groupType, member: object.member, data: object.header),
                                 timeout: timeout)
    }

    /// One sentence for a refused resource-object command [resobj:220-236].
    package static func explain(_ error: AdminError, object: ResourceObjectAddress, plugin: String = "resobj") -> any Error {
        guard case let .commandFailed(device, _, opcodeName, _, status, qualifier) = error else { return error }
        let what = "\(ResourceObjectType.name(object.type)) object \(object.id)"
        let message: String
        switch (status, qualifier) {
        case (.eexist, _): message = "\(device) already has \(what) (\(opcodeName): EEXIST); destroy it or pick another id."
        case (.enxio, _): message = "\(device) has no \(what) for \(object.member) (\(opcodeName): ENXIO)."
        case (.enospc, _): message = "\(device) has no room for another \(what) (\(opcodeName): ENOSPC); the driver limit set with DRIVER_CAP_SET is used up."
        case (.ebusy, _): message = "\(device) keeps \(what): other objects depend on it (\(opcodeName): EBUSY)."
        case (.einval, .invalidField):
            message = "\(device) refused \(what): its type, flags, data or id (ids run from 0 to the driver limit set with DRIVER_CAP_SET, minus 1) is invalid (\(opcodeName): EINVAL/INVALID_FIELD)."
        case (.einval, .invalidMember): message = "\(device) says \(object.member) is not a member of its group (\(opcodeName): EINVAL/INVALID_MEMBER)."
        default: message = "\(device) refused \(opcodeName) for \(what) with \(status.name)/\(qualifier.name)."
        }
        return PluginError.refused(plugin: plugin, message: message)
    }

    static func address(_ context: PluginContext, _ arguments: PluginArguments) throws(PluginError) -> ResourceObjectAddress {
        let (_, member) = try arguments.member(context, plugin: "resobj")
        let type = try arguments.integer("type", in: 0...0x4ff, plugin: "resobj")
        let id = try arguments.integer("id", in: 0...Int(UInt32.max), plugin: "resobj")
        return ResourceObjectAddress(type: UInt16(type), id: UInt32(id), member: member)
    }

    package var operations: [PluginOperation] {
        [
            PluginOperation(name: "create", summary: "Create a resource object of a VF (DEV_PARTS: --kind get|set).",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based)."),
                                         PluginParameter("type", .integer, help: "Object type (0 = DEV_PARTS)."),
                                         PluginParameter("id", .integer, help: "Object id (0 to the driver limit - 1)."),
                                         PluginParameter("kind", .string, required: false, help: "DEV_PARTS: get or set."),
                                         PluginParameter("data", .string, required: false, help: "Object-specific data, hex (other types).")]) { context, arguments in
                let object = try Self.address(context, arguments)
                var specific: [UInt8]
                if object.type == ResourceObjectType.deviceParts {
                    guard let kind = arguments.string("kind"), kind == "get" || kind == "set" else {
                        throw PluginError.badArgument(plugin: "resobj", message: "a DEV_PARTS object needs --kind get or --kind set.")
                    }
                    specific = [kind == "get" ? 0 : 1] + [UInt8](repeating: 0, count: 7)
                } else {
                    guard let hexText = arguments.string("data"), let bytes = parseHexBytes(hexText) else {
                        throw PluginError.badArgument(plugin: "resobj", message: "--data HEX (the object-specific data) is required for type \(object.type).")
                    }
                    specific = bytes
                }
                do throws(AdminError) { try await Self.create(object, specificData: specific, driver: context.driver, timeout: context.timeout) } catch {
                    throw Self.explain(error, object: object)
                }
                return PluginOutput(fields: [("type", .int(Int(object.type))), ("id", .int(Int(object.id))), ("created", .bool(true))],
                                    summary: "created \(ResourceObjectType.name(object.type)) object \(object.id)")
            },
            PluginOperation(name: "destroy", summary: "Destroy a resource object of a VF.",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based)."),
                                         PluginParameter("type", .integer, help: "Object type (0 = DEV_PARTS)."),
                                         PluginParameter("id", .integer, help: "Object id.")]) { context, arguments in
                let object = try Self.address(context, arguments)
                do throws(AdminError) { try await Self.destroy(object, driver: context.driver, timeout: context.timeout) } catch {
                    throw Self.explain(error, object: object)
                }
                return PluginOutput(fields: [("type", .int(Int(object.type))), ("id", .int(Int(object.id))), ("destroyed", .bool(true))],
                                    summary: "destroyed \(ResourceObjectType.name(object.type)) object \(object.id)")
            },
        ]
    }
}

/// Hex bytes ("0a 1b", "0a1b"); nil when not hex.
func parseHexBytes(_ text: String) -> [UInt8]? {
    let digits = Array(text.lowercased().utf8).filter { $0 != 0x20 && $0 != 0x3a }
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    for index in stride(from: 0, to: digits.count, by: 2) {
        guard let byte = UInt8(String(decoding: digits[index..<(index + 2)], as: UTF8.self), radix: 16) else { return nil }
        bytes.append(byte)
    }
    return bytes
}
