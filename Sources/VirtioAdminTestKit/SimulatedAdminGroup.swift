import PCIConfig
import ResourceManager
import VirtioAdmin
import VirtioAdminDriver
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import VirtioTransport

/// A simulated SR-IOV group with its admin queue open: the device model reached through
/// ``SimulatedPFOpener`` and owned by an ``AdminGroup`` — the same code that owns a real
/// PF — with a plugin registry. A plugin's tests are a few lines:
///
/// ```swift
/// let group = try await SimulatedAdminGroup(plugins: [MyPlugin()])
/// let output = try await group.run("my-plugin", "get", ["vf": ["0"]])
/// #expect(output["vectors"] == .int(2))
/// ```
public final class SimulatedAdminGroup: Sendable {
    /// The device model, to inspect what the plugin's commands did (``SimulatedSRIOVDevice/members``, counters).
    public let device: SimulatedSRIOVDevice
    /// The owner of the PF's admin queue.
    public let group: AdminGroup
    package var transport: ModernPCITransport { group.driver.transport }
    /// The admin-queue driver of the group.
    public var driver: AdminQueueDriver { group.driver }
    /// The registry of the plugins under test.
    public var registry: PluginRegistry { group.registry }
    /// The model's sysfs view (a temporary directory, removed by ``shutDown()``).
    public let sysfsRoot: String

    /// - Parameters:
    ///   - plugins: the plugins under test (their opcodes are enabled with LIST_USE).
    ///   - configuration: the device model's shape; set `supportedOpcodes` to leave some out.
    ///   - options: admin driver options.
    public init(plugins: [any AdminCommandHandler], configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration(),
                members: [MemberResources]? = nil, options: AdminQueueDriver.Options = AdminQueueDriver.Options()) async throws {
        device = SimulatedSRIOVDevice(configuration: configuration, members: members)
        let registry = PluginRegistry()
        for plugin in plugins { try registry.register(plugin) }
        do { sysfsRoot = try Sys.makeTemporaryDirectory(prefix: "/tmp/virtio-admin-testkit-") } catch { throw VirtioAdminError.system(error) }
        var groupOptions = AdminGroup.Options()
        groupOptions.driver = options
        groupOptions.timeout = options.defaultTimeout
        groupOptions.opcodeNames = configuration.opcodes.names
        group = try await AdminGroup.open(opener: SimulatedPFOpener(device: device, sysfsRoot: sysfsRoot), registry: registry, options: groupOptions)
    }

    /// The context plugin operations run in.
    public var context: PluginContext { group.context }

    /// Runs `operation` of `plugin` with arguments (`["vf": ["0"], "vectors": ["4"]]`).
    public func run(_ plugin: String, _ operation: String, _ arguments: [String: [String]] = [:]) async throws -> PluginOutput {
        try await registry.run(plugin: plugin, operation: operation, context: context, arguments: PluginArguments(arguments))
    }

    /// Closes the admin queue (the device is left reset), stops the model's worker and
    /// removes the sysfs view.
    public func shutDown() {
        group.close()
        device.stop()
        Sys.removeTree(sysfsRoot)
    }
}
