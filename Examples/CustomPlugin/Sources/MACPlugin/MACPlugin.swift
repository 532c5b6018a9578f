// A VirtioAdmin run-time plugin: get and set a VF's MAC address through the PF's admin
// queue. It is an ordinary Swift `AdminCommandHandler`; `CPluginExport` publishes it through
// the versioned C table of plugin ABI 2 (virtio_admin_plugin.h), so only C crosses into the
// host and every command the operations send goes through the host, which checks its
// opcode, group and member before sending it.
import ResourceManager
import VirtioAdminDriver
import VirtioSpec

/// Opcodes (project-defined vendor example; the device model implements them too).
let macGet = AdminOpcode(0x50)
let macSet = AdminOpcode(0x51)

struct MACPlugin: AdminCommandHandler {
    var name: String { "mac" }
    var version: String { "2.0" }
    var summary: String { "VF MAC address provisioning (vendor example, plugin ABI 2)" }
    var groupTypes: [AdminGroupType] { [.srIOV] }
    var opcodes: [(AdminOpcode, String)] { [(macGet, "MAC_GET"), (macSet, "MAC_SET")] }

    static func read(_ vf: Int, _ context: PluginContext) async throws -> String {
        let result = try await context.driver.run(AdminCommand(opcode: macGet, member: GroupMemberID(vfIndex: vf), resultLength: 8),
                                                  timeout: context.timeout, minimumResult: 6)
        return result.prefix(6).map { byte -> String in
            let text = String(byte, radix: 16)
            return text.count == 1 ? "0" + text : text
        }.joined(separator: ":")
    }

    var operations: [PluginOperation] {
        [
            PluginOperation(name: "get", summary: "Print a VF's MAC address.",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based).")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: "mac")
                return PluginOutput(fields: [("vf", .int(vf)), ("mac", .string(try await Self.read(vf, context)))], summary: "")
            },
            // Two commands in one operation: MAC_SET, then MAC_GET to show what the device holds.
            PluginOperation(name: "set", summary: "Set a VF's MAC address (the VF must be unbound).",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based)."),
                                         PluginParameter("mac", .string, help: "Unicast MAC, six hex octets.")]) { context, arguments in
                let (vf, member) = try arguments.member(context, plugin: "mac")
                let text = arguments.string("mac") ?? ""
                let octets = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
                guard octets.count == 6 else {
                    throw PluginError.badArgument(plugin: "mac", message: "--mac must be six hex octets, e.g. 52:54:00:12:34:56.")
                }
                guard octets[0] & 1 == 0 else {
                    throw PluginError.badArgument(plugin: "mac", message: "--mac \(text) is a multicast address; a VF needs a unicast one.")
                }
                _ = try await context.driver.run(AdminCommand(opcode: macSet, member: member, data: octets + [0, 0]), timeout: context.timeout)
                return PluginOutput(fields: [("vf", .int(vf)), ("mac", .string(try await Self.read(vf, context)))], summary: "")
            },
        ]
    }
}

let exported = CPluginExport(MACPlugin())

/// The entry point virtio-admin looks up with dlsym.
@_cdecl("virtio_admin_plugin_entry")
public func virtioAdminPluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? { exported.entry(hostABI) }
