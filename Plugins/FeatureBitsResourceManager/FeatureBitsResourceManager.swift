import ResourceManager
import VirtioAdminDriver
import VirtioProjectCommands
import VirtioSpec

/// Provisions the feature bits a VF offers through the PF's admin queue (the feature-bit
/// resource manager of the device-management series proposed on virtio-comment;
/// project-defined opcodes, see ``ProjectOpcodeTable``).
///
/// The device accepts only a subset of what the VF can offer (FEATURES_CAPS_GET) that keeps
/// VERSION_1, and refuses changes while a driver uses the VF. The plugin checks names and
/// the subset rule before sending, so most mistakes are caught without a device round trip.
package struct FeatureBitsResourceManager: AdminCommandHandler {
    package let opcodeTable: ProjectOpcodeTable
    package init(opcodes: ProjectOpcodeTable = .default) { opcodeTable = opcodes }

    package var name: String { "features" }
    package var version: String { "1.0" }
    package var summary: String { "feature bits each VF offers to its driver (project-defined opcodes)" }
    package var groupTypes: [AdminGroupType] { [.srIOV] }
    package var opcodes: [(AdminOpcode, String)] {
        [(opcodeTable.featuresGet, "FEATURES_GET"), (opcodeTable.featuresSet, "FEATURES_SET"), (opcodeTable.featuresCapsGet, "FEATURES_CAPS_GET")]
    }

    func read(_ opcode: AdminOpcode, vf: Int, driver: some AdminCommandRunner, timeout: Duration?) async throws(AdminError) -> FeatureSet {
        let result = try await driver.run(AdminCommand(opcode: opcode, member: GroupMemberID(vfIndex: vf), resultLength: ProjectCommandLayout.featuresResultSize),
                                          timeout: timeout, minimumResult: ProjectCommandLayout.featuresResultSize)
        return FeatureSet(low64: result.readLE(UInt64.self, at: 0), high64: result.readLE(UInt64.self, at: 8))
    }

    /// The features VF `vf` offers now.
    package func features(of vf: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> FeatureSet {
        try await read(opcodeTable.featuresGet, vf: vf, driver: driver, timeout: timeout)
    }

    /// The features VF `vf` can be made to offer.
    package func capabilities(of vf: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> FeatureSet {
        try await read(opcodeTable.featuresCapsGet, vf: vf, driver: driver, timeout: timeout)
    }

    /// Sets the features VF `vf` offers.
    package func setFeatures(_ features: FeatureSet, of vf: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        var data: [UInt8] = []
        data.appendLE(features.low64)
        data.appendLE(features.high64)
        _ = try await driver.run(AdminCommand(opcode: opcodeTable.featuresSet, member: GroupMemberID(vfIndex: vf), data: data), timeout: timeout)
    }

    /// Parses `--set NAME…` / `--mask HEX` into a feature set for `type`.
    package static func parse(names: [String], mask: String?, type: VirtioDeviceType?) throws(PluginError) -> FeatureSet {
        if names.isEmpty == (mask == nil) {
            throw .badArgument(plugin: "features", message: "give either --set NAME… or --mask HEX.")
        }
        if let mask {
            guard let features = FeatureSet(mask: mask) else {
                throw .badArgument(plugin: "features", message: "--mask '\(mask)' is not a number (write hex as 0x…).")
            }
            return features
        }
        var features = FeatureSet()
        for item in names.flatMap({ $0.split(separator: ",").map(String.init) }) where !item.isEmpty {
            guard let bit = FeatureSet.bit(named: item, for: type) else {
                throw .badArgument(plugin: "features", message: "unknown feature '\(item)' for a \(type?.name ?? "virtio") device.")
            }
            features.insert(FeatureSet(bit: bit))
        }
        return features
    }

    static func fields(vf: Int, _ features: FeatureSet, type: VirtioDeviceType?) -> [(String, PluginValue)] {
        [("vf", .int(vf)), ("features", .strings(features.names(for: type))), ("mask", .string(features.hexMask))]
    }

    package var operations: [PluginOperation] {
        let manager = self
        let vfParameter = PluginParameter("vf", .vf, help: "VF index (0-based, as sysfs virtfnN).")
        return [
            PluginOperation(name: "get", summary: "Print the features a VF offers.", parameters: [vfParameter]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                let features = try await manager.features(of: vf, driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: Self.fields(vf: vf, features, type: context.memberType),
                                    summary: "VF \(vf): \(features.hexMask) \(features.names(for: context.memberType).joined(separator: " "))")
            },
            PluginOperation(name: "caps", summary: "Print the features a VF can be made to offer.", parameters: [vfParameter]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                let features = try await manager.capabilities(of: vf, driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: Self.fields(vf: vf, features, type: context.memberType),
                                    summary: "VF \(vf) can offer: \(features.hexMask) \(features.names(for: context.memberType).joined(separator: " "))")
            },
            PluginOperation(name: "set", summary: "Set the features a VF offers (the VF must not be in use).",
                            parameters: [vfParameter,
                                         PluginParameter("set", .list, required: false, help: "Feature names (VERSION_1, MAC, …); repeat or comma-separate."),
                                         PluginParameter("mask", .string, required: false, help: "The feature mask, hex (0x…).")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                let wanted = try Self.parse(names: arguments.list("set"), mask: arguments.string("mask"), type: context.memberType)
                let possible = try await manager.capabilities(of: vf, driver: context.driver, timeout: context.timeout)
                let unsupported = wanted.subtracting(possible)
                guard unsupported.isEmpty else {
                    throw PluginError.badArgument(plugin: manager.name,
                                                  message: "VF \(vf) cannot offer \(unsupported.names(for: context.memberType).joined(separator: ", ")).")
                }
                guard wanted.contains(.version1) else {
                    throw PluginError.badArgument(plugin: manager.name, message: "a VF must keep offering VERSION_1.")
                }
                do throws(AdminError) {
                    try await manager.setFeatures(wanted, of: vf, driver: context.driver, timeout: context.timeout)
                } catch {
                    if case let .commandFailed(device, _, _, _, status, qualifier) = error {
                        if status == .ebusy {
                            throw PluginError.badArgument(plugin: manager.name, message: "\(device): VF \(vf) is in use by a driver (EBUSY); unbind it before changing its features.")
                        }
                        if status == .einval && qualifier == .invalidField {
                            throw PluginError.badArgument(plugin: manager.name, message: "\(device): the device refused features \(wanted.hexMask) for VF \(vf) (EINVAL/INVALID_FIELD).")
                        }
                    }
                    throw error
                }
                let now = try await manager.features(of: vf, driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: Self.fields(vf: vf, now, type: context.memberType),
                                    summary: "VF \(vf): \(now.hexMask) \(now.names(for: context.memberType).joined(separator: " "))")
            },
        ]
    }
}
