import ArgumentParser
import FeatureBitsResourceManager
import Foundation
import MSIXResourceManager
import PCIConfig
import ResourceManager
import VirtioAdmin
import VirtioAdminDriver
import VirtioSimulator
import VirtioProjectCommands
import VirtioSpec

struct SimulateCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a simulated SR-IOV PF (with an admin virtqueue) whose state lives in PATH.",
        discussion: """
            Then run any admin command against it with --simulate PATH, for example:
              virtio-admin simulate create /tmp/pf.state --vfs 8
              virtio-admin msix set 0000:3b:00.0 --vf 0 --vectors 4 --simulate /tmp/pf.state
              virtio-admin msix get 0000:3b:00.0 --vf 0 --simulate /tmp/pf.state
            The MSI-X and feature-bit commands are project-defined (the resource managers of the
            device-management series proposed on virtio-comment were never ratified); see README.md.
            """)

    @Argument(help: ArgumentHelp("State file to create (overwritten).", valueName: "PATH"))
    var path: String

    @Option(help: "VFs enabled (NumVFs).")
    var vfs: Int = 8

    @Option(name: .customLong("total-vfs"), help: "TotalVFs (default: --vfs).")
    var totalVFs: Int?

    @Option(help: "MSI-X vectors the PF can give its VFs (sriov_vf_total_msix).")
    var pool: Int = 64

    @Option(name: .customLong("max-vectors"), help: "Most MSI-X vectors one VF may have.")
    var maxVectors: Int = 32

    @Option(help: "Device type of PF and VFs.")
    var type: String = "net"

    @Option(help: "PCI address of the PF.")
    var pf: String = "0000:3b:00.0"

    @Option(name: .customLong("latency-us"), help: ArgumentHelp("Service time of one admin command in microseconds (the device's latency L).", valueName: "US"))
    var latency: Int = 0

    @Option(help: ArgumentHelp("Admin commands the device works on at once (its parallelism D).", valueName: "D"))
    var parallelism: Int = 1

    func run() throws {
        guard latency >= 0, latency <= 10_000_000, (1...4096).contains(parallelism) else {
            throw CLIError("--latency-us must be 0 to 10000000 and --parallelism 1 to 4096.")
        }
        guard let deviceType = VirtioDeviceType(name: type) else { throw CLIError("'\(type)' is not a virtio device type; try net or block.") }
        let total = totalVFs ?? vfs
        guard (1...4096).contains(total), (0...total).contains(vfs) else {
            throw CLIError("--vfs must be 0 to TotalVFs, and TotalVFs 1 to 4096 (got \(vfs) of \(total)).")
        }
        guard pool >= 0, (1...Int(SimulatedBARLayout.maximumMSIXVectors)).contains(maxVectors) else {
            throw CLIError("--pool must be at least 0 and --max-vectors 1 to \(SimulatedBARLayout.maximumMSIXVectors).")
        }
        var configuration = SimulatedDeviceConfiguration()
        configuration.pfAddress = try parseAddress(pf)
        configuration.pfType = deviceType
        configuration.vfType = deviceType
        configuration.totalVFs = total
        configuration.numVFs = vfs
        configuration.vfMSIXPool = pool
        configuration.perVFMaximumVectors = maxVectors
        configuration.initialVFVectors = min(2, maxVectors, total > 0 ? pool / total : 0)
        configuration.perVFMinimumVectors = min(1, configuration.initialVFVectors)
        configuration.timing = DeviceTiming(latency: .microseconds(latency), parallelism: parallelism)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        defer { device.stop() }
        do { try SimulatedDeviceStore.save(device, to: path) } catch { throw CLIError("\(error)") }
        try rewriteSimulatedTree(device, state: path)
        print("Created a simulated virtio \(deviceType.name) PF \(configuration.pfAddress) with \(vfs) of \(total) VFs, a pool of \(pool) MSI-X vectors (\(configuration.initialVFVectors) per VF now), in \(path); its sysfs view is \(SimulatedPFOpener.defaultSysfsRoot(forState: path)).")
    }
}

/// Writes the simulated PF's own sysfs view (STATE.sys) anew from the model.
func rewriteSimulatedTree(_ device: SimulatedSRIOVDevice, state: String) throws {
    let root = SimulatedPFOpener.defaultSysfsRoot(forState: state)
    try? FileManager.default.removeItem(atPath: root)
    do { try device.sysfsTree().write(to: root) } catch { throw CLIError(error.description) }
}

struct Commands: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the admin commands a PF supports (LIST_QUERY) and those in use (LIST_USE).",
        discussion: "With --json: an array of {opcode, name, supported, inUse, definedBy}.")

    @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
    @OptionGroup var options: AdminOptions

    struct Row: Encodable { let opcode: Int; let name: String; let supported: Bool; let inUse: Bool; let definedBy: String }

    func run() async throws {
        try await withAdminSession(pf: pf, options: options) { session in
            let supported = session.driver.supported
            let inUse = session.driver.inUse
            let projectNames = ProjectOpcodeTable.default.names
            var opcodes = Set(supported.opcodes)
            for plugin in session.registry.plugins { for (opcode, _) in plugin.opcodes { opcodes.insert(opcode) } }
            for raw in AdminOpcode.specNames.keys { opcodes.insert(AdminOpcode(raw)) }
            let rows = opcodes.sorted().map { opcode -> Row in
                let plugin = session.registry.plugins.first { $0.opcodes.contains { $0.0 == opcode } }
                let name = AdminOpcode.specNames[opcode.rawValue] ?? plugin?.opcodes.first { $0.0 == opcode }?.1 ?? projectNames[opcode] ?? opcode.specName
                let definedBy = AdminOpcode.specNames[opcode.rawValue] != nil ? "spec" : (plugin.map { "plugin \($0.name) (project-defined)" } ?? "device")
                return Row(opcode: Int(opcode.rawValue), name: name, supported: supported.contains(opcode), inUse: inUse.contains(opcode), definedBy: definedBy)
            }
            if options.json {
                try printJSON(rows)
            } else {
                print(renderTable(header: ["OPCODE", "NAME", "SUPPORTED", "IN USE", "DEFINED BY"], rows: rows.map {
                    [hex($0.opcode, width: 4), $0.name, $0.supported ? "yes" : "no", $0.inUse ? "yes" : "no", $0.definedBy]
                }))
                if let unavailable = session.driver.unavailability(of: .srIOV) {
                    print("note: \(unavailable)")
                }
            }
        }
    }
}

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List resource-manager plugins: built-in and loaded at run time.",
        discussion: "With --json: an array of {name, version, summary, origin, opcodes: [{opcode, name}], operations}.")

    @Option(name: .customLong("plugin-dir"), help: ArgumentHelp("Also load run-time plugins (*.so) from DIR.", valueName: "DIR"))
    var pluginDirectories: [String] = []
    @Option(name: .customLong("plugin"), help: ArgumentHelp("Also load the run-time plugin at PATH.", valueName: "PATH"))
    var pluginPaths: [String] = []
    @Option(name: .long, help: ArgumentHelp("Accepted as by every command; plugins are listed without opening a device ('commands PF' shows what a PF supports).", valueName: "PATH"))
    var simulate: String?
    @Flag(help: "Print JSON instead of a table.") var json = false

    struct Entry: Encodable {
        struct Opcode: Encodable { let opcode: Int; let name: String }
        let name: String; let version: String; let summary: String; let origin: String; let opcodes: [Opcode]; let operations: [String]
    }

    func run() throws {
        var options = try AdminOptions.parse([])
        options.pluginDirectories = pluginDirectories
        options.pluginPaths = pluginPaths
        let registry = try makeRegistry(options)
        let entries = registry.plugins.map { plugin in
            Entry(name: plugin.name, version: plugin.version, summary: plugin.summary, origin: registry.origins[plugin.name] ?? "built-in",
                  opcodes: plugin.opcodes.map { .init(opcode: Int($0.0.rawValue), name: $0.1) }, operations: plugin.operations.map(\.name))
        }
        if json { try printJSON(entries); return }
        print(renderTable(header: ["PLUGIN", "VERSION", "OPCODES", "OPERATIONS", "ORIGIN"], rows: entries.map {
            [$0.name, $0.version, $0.opcodes.map { "\($0.name)=\(hex($0.opcode, width: 4))" }.joined(separator: " "), $0.operations.joined(separator: ","), $0.origin]
        }))
    }
}

// MARK: - Raw commands

struct Passthru: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a raw admin command and print the device's answer (as nvme-cli's admin-passthru does for NVMe).",
        discussion: """
            The command goes to the PF's admin queue as is: --opcode, --group-type, the member
            (--member ID on the wire, or --vf N for member N + 1) and --data (hex bytes after the
            24-byte header). The opcode must be in the negotiated command set.
            JSON: {opcode, member, status, statusName, qualifier, qualifierName, result (hex)}.
            """)

    @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String
    @Option(help: ArgumentHelp("Opcode (0x… or decimal).", valueName: "OPCODE")) var opcode: String
    @Option(help: ArgumentHelp("Group member id as sent (0 = the owner).", valueName: "ID")) var member: UInt64?
    @Option(help: ArgumentHelp("VF index (member id = N + 1).", valueName: "N")) var vf: VFNumber?
    @Option(name: .customLong("group-type"), help: "Group type (1 = SR-IOV).") var groupType: UInt16 = 1
    @Option(help: ArgumentHelp("Command-specific data, hex (spaces allowed).", valueName: "HEX")) var data: String = ""
    @Option(name: .customLong("result-length"), help: "Bytes of command-specific result to make room for.") var resultLength: Int = 64
    @OptionGroup var options: AdminOptions

    func run() async throws {
        guard let code = parseInteger(opcode).flatMap(UInt16.init(exactly:)) else { throw CLIError("--opcode '\(opcode)' is not a 16-bit number.") }
        guard member == nil || vf == nil else { throw CLIError("give --member or --vf, not both.") }
        let memberID = vf?.member ?? GroupMemberID(rawValue: member ?? 0)
        guard let bytes = parseHex(data) else { throw CLIError("--data '\(data)' is not hex bytes.") }
        guard (0...480).contains(resultLength) else { throw CLIError("--result-length must be 0 to 480.") }
        try await withAdminSession(pf: pf, options: options) { session in
            let command = AdminCommand(opcode: AdminOpcode(code), groupType: AdminGroupType(rawValue: groupType), member: memberID, data: bytes, resultLength: resultLength)
            let response: AdminResponse
            do { response = try await session.driver.submit(command, timeout: session.options.timeout) } catch { throw CLIError("\(error)") }
            if options.json {
                try printJSON(JSONValue.object([
                    ("opcode", .int(Int(code))), ("member", .int(Int(memberID.rawValue))), ("status", .int(Int(response.status.rawValue))),
                    ("statusName", .string(response.status.name)), ("qualifier", .int(Int(response.qualifier.rawValue))),
                    ("qualifierName", .string(response.qualifier.name)), ("result", .string(hexBytes(response.result))),
                ]))
            } else {
                print("status \(response.status.name) (\(response.status.rawValue)), qualifier \(response.qualifier.name) (\(response.qualifier.rawValue))")
                print("result: \(response.result.isEmpty ? "(none)" : hexBytes(response.result))")
            }
        }
    }
}

/// Runs an operation of any plugin, built in or loaded at run time:
/// `virtio-admin run PLUGIN [OPERATION] [PF] [WORD …] [--name value | --flag …]` (also
/// `virtio-admin PLUGIN …`, and `virtio-admin COMMAND …` for an operation that declares a
/// command name). Everything comes from what the plugin declares (PluginCommandLine.swift):
/// the operation (or the plugin's default one), whether it needs a PF, which parameters are
/// words after PF and which are flags.
struct RunPlugin: AsyncParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "run",
            abstract: "Run an operation of a resource-manager plugin (built in or loaded with --plugin/--plugin-dir).",
            discussion: "Arguments after PF are the operation's parameters: --name value, --flag, or words in order. 'virtio-admin plugins' lists operations.\n\n"
                + pluginUsage(builtInPlugins()))
    }

    @Argument(help: "Plugin name (or an operation's command name, such as 'mode').") var plugin: String
    @OptionGroup var options: AdminOptions
    @Argument(parsing: .allUnrecognized, help: "[OPERATION] [PF] then the operation's parameters.") var words: [String] = []

    func run() async throws {
        let registry = try makeRegistry(options)
        let call = try PluginCommandLine(registry.plugins, command: plugin, words: words)
        guard call.operation.needsDevice else {
            let output: PluginOutput
            do {
                var arguments = PluginArguments(call.arguments)
                if case .index(let vf) = call.vf { arguments = PluginArguments(call.arguments, vf: vf) }
                output = try await call.operation.run(PluginContext(driver: NoDevice(), numVFs: nil, memberType: nil), arguments)
            } catch let error as CustomStringConvertible {
                throw CLIError(error.description)
            }
            try printPluginOutput(output, json: options.json)
            return
        }
        guard let pf = call.pf else {
            throw CLIError("'\(call.usage)' needs the PF's PCI address.")
        }
        try await runPluginOperation(plugin: call.plugin.name, operation: call.operation.name, pf: pf, options: options, arguments: call.arguments, vf: call.vf)
    }
}

func parseInteger(_ text: String) -> Int? {
    text.lowercased().hasPrefix("0x") ? Int(text.dropFirst(2), radix: 16) : Int(text)
}

func parseHex(_ text: String) -> [UInt8]? {
    let digits = text.lowercased().replacingOccurrences(of: "0x", with: "").filter { !$0.isWhitespace && $0 != ":" }
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        guard let byte = UInt8(digits[index..<next], radix: 16) else { return nil }
        bytes.append(byte)
        index = next
    }
    return bytes
}

/// `--vf N` of `passthru`, read once by the argument parser (a bad one is refused before the PF is opened).
extension VFNumber: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}
