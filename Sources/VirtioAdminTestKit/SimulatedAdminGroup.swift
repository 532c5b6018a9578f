import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioSimulator
import VirtioSpec
import VirtioTransport

/// A simulated SR-IOV group with its admin queue open: the device model, the transport,
/// the admin driver and a plugin registry, wired together. A plugin's tests are a few lines:
///
/// ```swift
/// let group = try await SimulatedAdminGroup(plugins: [MyPlugin()])
/// let output = try await group.run("my-plugin", "get", ["vf": ["0"]])
/// #expect(output["vectors"] == .int(2))
/// ```
public final class SimulatedAdminGroup: Sendable {
    public let device: SimulatedSRIOVDevice
    public let transport: ModernPCITransport
    public let driver: AdminQueueDriver
    public let registry: PluginRegistry

    /// - Parameters:
    ///   - plugins: the plugins under test (their opcodes are enabled with LIST_USE).
    ///   - configuration: the device model's shape; set `supportedOpcodes` to leave some out.
    ///   - options: admin driver options.
    public init(plugins: [any AdminCommandHandler], configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration(),
                members: [MemberResources]? = nil, options: AdminQueueDriver.Options = AdminQueueDriver.Options()) async throws {
        device = SimulatedSRIOVDevice(configuration: configuration, members: members)
        registry = PluginRegistry()
        for plugin in plugins { try registry.register(plugin) }
        transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options,
                                                 opcodeNames: registry.opcodeNames.merging(configuration.opcodes.names) { plugin, _ in plugin })
    }

    /// The context plugin operations run in.
    public var context: PluginContext {
        PluginContext(driver: driver, numVFs: device.numVFs, memberType: device.configuration.vfType)
    }

    /// Runs `operation` of `plugin` with arguments (`["vf": ["0"], "vectors": ["4"]]`).
    public func run(_ plugin: String, _ operation: String, _ arguments: [String: [String]] = [:]) async throws -> PluginOutput {
        try await registry.run(plugin: plugin, operation: operation, context: context, arguments: PluginArguments(arguments))
    }

    /// Closes the admin queue (the device is left reset) and stops the model's worker.
    public func shutDown() {
        driver.close()
        device.stop()
    }
}
