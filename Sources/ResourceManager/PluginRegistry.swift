import PCIConfig
import VirtioSystem
import VirtioAdminDriver
import VirtioSpec

/// The set of resource-manager plugins a host uses.
public final class PluginRegistry: @unchecked Sendable {
    private let lock = Lock()
    private var entries: [any AdminCommandHandler] = []
    /// Where each run-time plugin came from.
    public private(set) var origins: [String: String] = [:]

    /// A registry of `plugins`, registered in order (a plugin whose name is already
    /// registered is skipped).
    public init(_ plugins: [any AdminCommandHandler] = []) {
        for plugin in plugins { try? register(plugin) }
    }

    /// Registers a plugin (static registration, or a loaded one).
    public func register(_ plugin: any AdminCommandHandler, origin: String = "built-in") throws(PluginError) {
        try lock.withLock { () throws(PluginError) in
            guard !entries.contains(where: { $0.name == plugin.name }) else { throw .duplicateName(plugin.name) }
            entries.append(plugin)
            origins[plugin.name] = origin
        }
    }

    /// The registered plugins, in registration order.
    public var plugins: [any AdminCommandHandler] { lock.withLock { entries } }

    /// The plugin called `name`.
    /// - Throws: ``PluginError`` when no plugin has that name.
    public func plugin(named name: String) throws(PluginError) -> any AdminCommandHandler {
        let all = plugins
        guard let plugin = all.first(where: { $0.name == name }) else { throw .unknownPlugin(name, known: all.map(\.name)) }
        return plugin
    }

    /// Every opcode the plugins send (what the driver enables with LIST_USE).
    public var opcodes: [AdminOpcode] { plugins.flatMap { $0.opcodes.map(\.0) } }

    /// Opcode → name, for traces and error messages.
    public var opcodeNames: [AdminOpcode: String] {
        var names: [AdminOpcode: String] = [:]
        for plugin in plugins { for (opcode, name) in plugin.opcodes { names[opcode] = name } }
        return names
    }

    /// Opcodes of `plugin` that the device did not list.
    public static func missingOpcodes(of plugin: any AdminCommandHandler, supported: AdminOpcodeBitmap) -> [(AdminOpcode, String)] {
        plugin.opcodes.filter { !supported.contains($0.0) }
    }

    /// Throws unless the device listed every opcode `plugin` needs.
    public static func check(_ plugin: any AdminCommandHandler, against driver: some AdminCommandRunner) throws(PluginError) {
        let missing = missingOpcodes(of: plugin, supported: driver.supported)
        guard missing.isEmpty else {
            throw .opcodesNotListed(plugin: plugin.name, device: driver.address,
                                    missing: missing.map { "\($0.1) (\(hex($0.0.rawValue, width: 4)))" })
        }
    }

    /// Runs `operation` of `plugin` after checking its opcodes against the device.
    public func run(plugin name: String, operation: String, context: PluginContext, arguments: PluginArguments) async throws -> PluginOutput {
        let plugin = try plugin(named: name)
        guard let op = plugin.operation(named: operation) else {
            throw PluginError.unknownOperation(plugin: name, operation: operation, known: plugin.operations.map(\.name))
        }
        // A group whose command set could not be negotiated at open (the SR-IOV group while
        // VF Enable was clear) is negotiated again now; if it still is unavailable and the
        // plugin needs opcodes from it, that is the error the user sees.
        var unavailable: AdminError?
        for group in plugin.groupTypes where context.driver.unavailability(of: group) != nil {
            do throws(AdminError) { try await context.driver.refreshGroup(group) } catch { unavailable = unavailable ?? error }
        }
        // Only the opcodes this operation sends must be listed (all of the plugin's when it
        // does not say).
        let needed = op.opcodes.map { Set($0) }
        let missing = Self.missingOpcodes(of: plugin, supported: context.driver.supported).filter { needed?.contains($0.0) ?? true }
        if let unavailable, !missing.isEmpty { throw unavailable }
        guard missing.isEmpty else {
            throw PluginError.opcodesNotListed(plugin: plugin.name, device: context.driver.address,
                                               missing: missing.map { "\($0.1) (\(hex($0.0.rawValue, width: 4)))" })
        }
        return try await op.run(context, arguments)
    }
}

// MARK: - Helpers for plugin authors

extension PluginArguments {
    /// The VF (``vf``, read once when the arguments were made) and its member id, checked
    /// against the group's VF count.
    public func member(_ context: PluginContext, plugin: String) throws(PluginError) -> (vf: Int, member: GroupMemberID) {
        guard let vf else {
            if let unreadVF { throw .badArgument(plugin: plugin, message: VFNumber.notAnIndex(unreadVF)) }
            throw .badArgument(plugin: plugin, message: "--vf is required (the 0-based VF index, as sysfs virtfnN).")
        }
        if let numVFs = context.numVFs, vf.index >= numVFs { throw .noSuchVF(device: context.driver.address, vf: vf.index, numVFs: numVFs) }
        return (vf.index, vf.member)
    }

    /// A required integer argument within `range`.
    public func integer(_ name: String, in range: ClosedRange<Int>, plugin: String) throws(PluginError) -> Int {
        guard let text = string(name) else { throw .badArgument(plugin: plugin, message: "--\(name) is required.") }
        guard let value = Int(text) else { throw .badArgument(plugin: plugin, message: "--\(name) must be a whole number, not '\(text)'.") }
        guard range.contains(value) else {
            throw .badArgument(plugin: plugin, message: "--\(name) \(value) is out of range (\(range.lowerBound) to \(range.upperBound)).")
        }
        return value
    }
}
