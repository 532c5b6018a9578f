import ArgumentParser
import FeatureBitsResourceManager
import Foundation
import MSIXResourceManager
import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import VirtioLinux
import VirtioAdmin

/// Options of every command that talks to a PF's admin queue.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Run against the simulated PF whose state lives in PATH (see 'virtio-admin simulate create').",
        discussion: "The real driver stack runs in-process against the device model; state persists across invocations. Its sysfs view is PATH.sys unless --sysfs-root names another.",
        valueName: "PATH"))
    var simulate: String?

    @Flag(help: "Print every admin command on stderr: 'admin> ' + bytes sent (header + data), 'admin< ' + bytes received (status + result).")
    var trace = false

    @Option(name: .customLong("plugin-dir"), help: ArgumentHelp("Load run-time plugins (*.so) from DIR.", valueName: "DIR"))
    var pluginDirectories: [String] = []

    @Option(name: .customLong("plugin"), help: ArgumentHelp("Load the run-time plugin at PATH.", valueName: "PATH"))
    var pluginPaths: [String] = []

    @Option(name: .customLong("sysfs-root"), help: ArgumentHelp("Mount point of sysfs (default /sys; with --simulate PATH, PATH.sys).", valueName: "DIR"))
    var sysfsRoot: String?

    @Option(help: ArgumentHelp("Per-command timeout in milliseconds.", valueName: "MS"))
    var timeout: Int = 5000

    @Option(name: .customLong("lock-dir"), help: ArgumentHelp("Where a real PF's ownership lock lives.", valueName: "DIR"))
    var lockDirectory: String = "/run/virtio-admin"

    @Flag(help: "Open the PF even when its VFs have drivers (opening resets the PF; a PF a kernel driver owns is refused all the same).")
    var force = false

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// The sysfs view the command reads: --sysfs-root, else the simulated PF's tree, else /sys.
    var resolvedSysfsRoot: String { resolveSysfsRoot(sysfsRoot, simulate: simulate) }

    /// How the PF is reached: the device model in --simulate PATH, or the Linux host.
    func opener(_ pf: PCIAddress) -> any PFOpener {
        makePFOpener(pf, simulate: simulate, sysfsRoot: resolvedSysfsRoot, lockDirectory: lockDirectory)
    }

    var groupOptions: AdminGroup.Options {
        var options = AdminGroup.Options()
        options.timeout = .milliseconds(timeout)
        options.trace = trace ? printTrace : nil
        options.refuseWhenVFsInUse = !force
        return options
    }
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

typealias AdminSession = AdminGroup

/// Opens the PF named on the command line (one ``AdminGroup``: the same code for a real and
/// a simulated PF), runs `body`, and closes it again. Errors come out as one sentence.
func withAdminSession<T>(pf text: String, options: AdminOptions, _ body: (AdminGroup) async throws -> T) async throws -> T {
    let pf = try parseAddress(text)
    let registry = try makeRegistry(options)
    do {
        return try await AdminGroup.with(opener: options.opener(pf), registry: registry, options: options.groupOptions) { group in
            if let error = group.handshakeError {
                FileHandle.standardError.write(Data("virtio-admin: warning: the capability handshake after bring-up failed (the queue is open all the same): \(error)\n".utf8))
            }
            return try await body(group)
        }
    } catch let error as VirtioAdminError {
        var text = error.description
        if case .vfsInUse = error { text += " (Or pass --force.)" }
        if options.simulate == nil, case .notInSysfs = error { text += " (Without such hardware, use --simulate PATH; see 'virtio-admin simulate create --help'.)" }
        if options.simulate == nil, case .access = error { text += " (Without such hardware, use --simulate PATH; see 'virtio-admin simulate create --help'.)" }
        throw CLIError(text)
    } catch let error as CLIError {
        throw error
    } catch let error as CustomStringConvertible {
        throw CLIError(error.description)
    }
}

/// Runs a plugin operation and prints its output.
func runPluginOperation(plugin: String, operation: String, pf: String, options: AdminOptions, arguments: [String: [String]], vf selector: VFSelector?) async throws {
    try await withAdminSession(pf: pf, options: options) { session in
        var vf: VFNumber?
        if let selector {
            do throws(VirtioAdminError) { vf = try session.vf(selector) } catch { throw CLIError(error.description) }
        }
        let output: PluginOutput
        do {
            let arguments = PluginArguments(arguments, vf: vf)
            output = try await session.registry.run(plugin: plugin, operation: operation, context: session.context, arguments: arguments)
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
    case int(Int), double(Double), string(String), bool(Bool), array([JSONValue]), object([(String, JSONValue)]), null

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
        case .double(let v): var c = encoder.singleValueContainer(); try c.encode((v * 10).rounded() / 10)
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
