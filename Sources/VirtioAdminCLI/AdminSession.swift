import ArgumentParser
import CapabilitiesResourceManager
import DevicePartsResourceManager
import FeatureBitsResourceManager
import LegacyAccessResourceManager
import ResourceObjectsResourceManager
import Foundation
import MSIXResourceManager
import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import VirtioLinux

/// Options of every command that talks to a PF's admin queue.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Run against the simulated PF whose state lives in PATH (see 'virtio-admin simulate create').",
        discussion: "The real driver stack runs in-process against the device model; state persists across invocations.",
        valueName: "PATH"))
    var simulate: String?

    @Flag(help: "Print every admin command on stderr: 'admin> ' + bytes sent (header + data), 'admin< ' + bytes received (status + result).")
    var trace = false

    @Option(name: .customLong("plugin-dir"), help: ArgumentHelp("Load run-time plugins (*.so) from DIR.", valueName: "DIR"))
    var pluginDirectories: [String] = []

    @Option(name: .customLong("plugin"), help: ArgumentHelp("Load the run-time plugin at PATH.", valueName: "PATH"))
    var pluginPaths: [String] = []

    @Option(name: .customLong("sysfs-root"), help: ArgumentHelp("Mount point of sysfs (real devices).", valueName: "DIR"))
    var sysfsRoot: String = "/sys"

    @Option(help: ArgumentHelp("Per-command timeout in milliseconds.", valueName: "MS"))
    var timeout: Int = 5000

    @Flag(help: "Print JSON instead of text.")
    var json = false
}

/// The built-in plugins (statically registered, as an appliance links them).
func builtInPlugins() -> [any AdminCommandHandler] {
    [MSIXResourceManager(), FeatureBitsResourceManager(), CapabilitiesResourceManager(), DevicePartsResourceManager(),
     ResourceObjectsResourceManager(), LegacyAccessResourceManager()]
}

/// Builds the registry: built-in plugins plus any run-time ones asked for.
func makeRegistry(_ options: AdminOptions) throws -> PluginRegistry {
    let registry = PluginRegistry(builtInPlugins())
    do {
        for directory in options.pluginDirectories { _ = try registry.loadDirectory(directory) }
        for path in options.pluginPaths { try registry.load(path: path) }
    } catch {
        throw CLIError(error.description)
    }
    return registry
}

/// An open admin queue on a PF, with what plugins need to know about the group.
struct AdminSession {
    let driver: AdminQueueDriver
    let registry: PluginRegistry
    let numVFs: Int
    let memberType: VirtioDeviceType
    let vfAddresses: [PCIAddress]
    let timeout: Duration

    var context: PluginContext { PluginContext(driver: driver, numVFs: numVFs, memberType: memberType, timeout: timeout) }

    /// Resolves `--vf` given as an index or as a VF address.
    func vfIndex(_ text: String) throws -> String {
        if Int(text) != nil { return text }
        guard let address = PCIAddress(text) else {
            throw CLIError("--vf '\(text)' is neither a VF index (0, 1, …) nor a PCI address.")
        }
        guard let index = vfAddresses.firstIndex(of: address) else {
            throw CLIError("\(address) is not a VF of \(driver.address).")
        }
        return String(index)
    }
}

/// Opens the PF named on the command line, runs `body`, and closes it again (saving the
/// simulated state). Errors come out as one sentence.
func withAdminSession<T>(pf text: String, options: AdminOptions, _ body: (AdminSession) async throws -> T) async throws -> T {
    let pf = try parseAddress(text)
    let registry = try makeRegistry(options)
    guard let path = options.simulate else {
        return try await withRealAdminSession(pf: pf, registry: registry, options: options, body)
    }
    do {
        return try await SimulatedDeviceStore.withLock(path) {
            let device: SimulatedSRIOVDevice
            do { device = try SimulatedDeviceStore.load(path) } catch { throw CLIError("\(error)") }
            defer { device.stop() }
            guard device.pfAddress == pf else {
                throw CLIError("\(path) simulates PF \(device.pfAddress); \(pf) is not in it.")
            }
            let session = try await openSession(device: device, registry: registry, options: options)
            do {
                let result = try await body(session)
                session.driver.close()
                try SimulatedDeviceStore.save(device, to: path)
                return result
            } catch {
                session.driver.close()
                try? SimulatedDeviceStore.save(device, to: path)
                throw error
            }
        }
    } catch let error as CLIError {
        throw error
    } catch let error as CustomStringConvertible {
        throw CLIError(error.description)
    }
}

/// Opens a real PF (bound to vfio-pci or uio_pci_generic) and runs `body` on its admin queue.
func withRealAdminSession<T>(pf: PCIAddress, registry: PluginRegistry, options: AdminOptions, _ body: (AdminSession) async throws -> T) async throws -> T {
    let sysfs = SysfsEnumerator(root: options.sysfsRoot)
    let function: VirtioFunction
    let opened: OpenedFunction
    do {
        function = try sysfs.function(at: pf)
        opened = try RealDeviceOpener(sysfsRoot: options.sysfsRoot).open(pf)
    } catch {
        throw CLIError("\(error)" + (options.simulate == nil ? " (Without such hardware, use --simulate PATH; see 'virtio-admin simulate create --help'.)" : ""))
    }
    let driver = try await openDriver(config: opened.config, bars: opened.bars, allocator: opened.allocator, registry: registry, options: options)
    let vfs = function.virtfns.sorted { $0.key < $1.key }.map(\.value)
    let session = AdminSession(driver: driver, registry: registry, numVFs: function.sriov?.numVFs ?? 0,
                               memberType: opened.config.sriov.flatMap { VirtioDeviceType(pciDeviceID: $0.vfDeviceID) } ?? function.type ?? .net,
                               vfAddresses: vfs, timeout: .milliseconds(options.timeout))
    defer { driver.close() }
    return try await body(session)
}

/// The transport and the admin-queue driver of a PF, as every admin command opens them.
func openDriver(config: PCIConfigSpace, bars: [Int: any RegisterSpace], allocator: any DMAAllocator,
                registry: PluginRegistry, options: AdminOptions) async throws -> AdminQueueDriver {
    let transport: ModernPCITransport
    do { transport = try ModernPCITransport(config: config, bars: bars) } catch { throw CLIError(error.description) }
    var driverOptions = AdminQueueDriver.Options()
    driverOptions.defaultTimeout = .milliseconds(options.timeout)
    let driver: AdminQueueDriver
    do {
        driver = try await AdminQueueDriver.open(transport: transport, allocator: allocator, options: driverOptions,
                                                 opcodeNames: registry.opcodeNames, trace: options.trace ? printTrace : nil)
    } catch {
        throw CLIError(error.description)
    }
    // As Linux does after LIST_QUERY/LIST_USE: the capability handshake, when the device lists it.
    do {
        _ = try await CapabilitiesResourceManager.handshake(driver: driver)
    } catch {
        driver.close()
        throw CLIError("\(driver.address): the capability handshake failed: \(error)")
    }
    return driver
}

func openSession(device: SimulatedSRIOVDevice, registry: PluginRegistry, options: AdminOptions) async throws -> AdminSession {
    let driver = try await openDriver(config: device.pfConfigSpace(), bars: [0: device.pfBAR()], allocator: device.memory,
                                      registry: registry, options: options)
    return AdminSession(driver: driver, registry: registry, numVFs: device.numVFs, memberType: device.configuration.vfType,
                        vfAddresses: (0..<device.configuration.totalVFs).map(device.configuration.vfAddress),
                        timeout: .milliseconds(options.timeout))
}

/// Runs a plugin operation and prints its output.
func runPluginOperation(plugin: String, operation: String, pf: String, options: AdminOptions, arguments: [String: [String]]) async throws {
    try await withAdminSession(pf: pf, options: options) { session in
        var arguments = arguments
        if let vf = arguments["vf"]?.last { arguments["vf"] = [try session.vfIndex(vf)] }
        let output: PluginOutput
        do {
            output = try await session.registry.run(plugin: plugin, operation: operation, context: session.context, arguments: PluginArguments(arguments))
        } catch let error as CustomStringConvertible {
            throw CLIError(error.description)
        }
        if options.json {
            try printJSON(JSONValue.object(output.fields.map { ($0.0, JSONValue($0.1)) }))
        } else {
            print(output.summary)
        }
    }
}

/// A JSON value with ordered keys (plugin output keeps its field order).
enum JSONValue: Encodable {
    case int(Int), string(String), bool(Bool), array([JSONValue]), object([(String, JSONValue)]), null

    init(_ value: PluginValue) {
        switch value {
        case .int(let v): self = .int(v)
        case .string(let v): self = .string(v)
        case .bool(let v): self = .bool(v)
        case .strings(let v): self = .array(v.map(JSONValue.string))
        case .object(let fields): self = .object(fields.map { ($0.0, JSONValue($0.1)) })
        case .list(let values): self = .array(values.map(JSONValue.init))
        case .null: self = .null
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .int(let v): var c = encoder.singleValueContainer(); try c.encode(v)
        case .string(let v): var c = encoder.singleValueContainer(); try c.encode(v)
        case .bool(let v): var c = encoder.singleValueContainer(); try c.encode(v)
        case .null: var c = encoder.singleValueContainer(); try c.encodeNil()
        case .array(let values): var c = encoder.unkeyedContainer(); for v in values { try c.encode(v) }
        case .object(let fields):
            var c = encoder.container(keyedBy: Key.self)
            for (key, value) in fields { try c.encode(value, forKey: Key(stringValue: key)) }
        }
    }
}

/// `--trace`: one line per command each way, on stderr.
@Sendable func printTrace(_ event: AdminTraceEvent) {
    let line: String
    switch event {
    case .sent(_, let bytes): line = "admin> " + hexBytes(bytes) + "\n"
    case .received(_, let bytes): line = "admin< " + hexBytes(bytes) + "\n"
    }
    FileHandle.standardError.write(Data(line.utf8))
}
