import VirtioAdminDriver
import VirtioSpec

/// A value in a plugin's output (what `--json` prints for it).
public indirect enum PluginValue: Sendable, Hashable {
    case int(Int)
    case string(String)
    case bool(Bool)
    case strings([String])
    case object([(String, PluginValue)])
    case list([PluginValue])
    case null

    public static func == (lhs: PluginValue, rhs: PluginValue) -> Bool { lhs.text == rhs.text && lhs.kind == rhs.kind }
    public func hash(into hasher: inout Hasher) { hasher.combine(text) }
    var kind: Int {
        switch self {
        case .int: 0
        case .string: 1
        case .bool: 2
        case .strings: 3
        case .object: 4
        case .null: 5
        case .list: 6
        }
    }

    /// Plain text for tables.
    public var text: String {
        switch self {
        case .int(let value): "\(value)"
        case .string(let value): value
        case .bool(let value): value ? "yes" : "no"
        case .strings(let values): values.joined(separator: " ")
        case .object(let fields): fields.map { "\($0.0)=\($0.1.text)" }.joined(separator: " ")
        case .list(let values): values.map(\.text).joined(separator: "; ")
        case .null: "-"
        }
    }
}

/// What an operation returns: ordered fields (the JSON object) and a line for people.
public struct PluginOutput: Sendable {
    public var fields: [(String, PluginValue)]
    public var summary: String
    public init(fields: [(String, PluginValue)], summary: String) {
        self.fields = fields
        self.summary = summary
    }
    public subscript(key: String) -> PluginValue? { fields.first { $0.0 == key }?.1 }
}

/// A parameter an operation reads (the CLI turns each into `--name VALUE`, a `--name`
/// flag, or a word after PF when positional).
public struct PluginParameter: Sendable, Hashable {
    /// `flag`: present or not (`--name` alone; the value is "yes").
    public enum Kind: Sendable, Hashable { case vf, integer, string, list, flag }
    public var name: String
    public var help: String
    public var kind: Kind
    public var required: Bool
    /// Given as a bare word after PF (in declaration order) rather than as `--name VALUE`.
    public var positional: Bool
    public init(_ name: String, _ kind: Kind, required: Bool = true, positional: Bool = false, help: String) {
        self.name = name
        self.kind = kind
        self.required = required
        self.positional = positional
        self.help = help
    }
}

/// Arguments given to an operation, by parameter name (a list parameter may repeat).
public struct PluginArguments: Sendable {
    public var values: [String: [String]]
    /// The VF the operation acts on (`--vf`), read once: given typed by the host, or read
    /// from the `vf` string when the host passes strings only.
    public let vf: VFNumber?
    /// A `vf` string that is not a VF index (``member(_:plugin:)`` reports it).
    let unreadVF: String?

    /// Arguments as strings; a `vf` value is read here, once.
    public init(_ values: [String: [String]] = [:]) {
        self.values = values
        let text = values["vf"]?.last
        vf = text.flatMap { VFNumber($0) }
        unreadVF = vf == nil ? text : nil
    }

    /// Arguments with the VF given typed (the CLI resolved `--vf` to it); the `vf` string
    /// C plugins read is written from it.
    public init(_ values: [String: [String]] = [:], vf: VFNumber?) {
        var values = values
        values["vf"] = vf.map { [String($0.index)] }
        self.values = values
        self.vf = vf
        unreadVF = nil
    }

    /// Whether a VF was named (well or not).
    public var namesVF: Bool { vf != nil || unreadVF != nil }

    public func string(_ name: String) -> String? { values[name]?.last }
    public func list(_ name: String) -> [String] { values[name] ?? [] }
}

/// What an operation runs against: the owner's admin queue and the group's shape.
public struct PluginContext: Sendable {
    public let driver: any AdminCommandRunner
    /// Number of VFs the group has now (sysfs `sriov_numvfs`), when known.
    public let numVFs: Int?
    /// The device type of the members (for feature names).
    public let memberType: VirtioDeviceType?
    public let timeout: Duration?
    public init(driver: any AdminCommandRunner, numVFs: Int?, memberType: VirtioDeviceType?, timeout: Duration? = nil) {
        self.driver = driver
        self.numVFs = numVFs
        self.memberType = memberType
        self.timeout = timeout
    }
}

/// One user-facing operation of a plugin (`msix get`, `features set`, …).
public struct PluginOperation: Sendable {
    public var name: String
    public var summary: String
    public var parameters: [PluginParameter]
    public var run: @Sendable (PluginContext, PluginArguments) async throws -> PluginOutput
    /// A top-level command name for this operation (`virtio-admin mode PF …`), if any.
    public var commandName: String?
    /// Whether the operation runs against a PF (false: `virtio-admin parts show FILE`; its
    /// context's driver refuses every command).
    public var needsDevice: Bool
    /// The opcodes this operation sends (`nil`: any of the plugin's). The registry checks
    /// only these before running it, so an operation on the owner (self group) works while
    /// the SR-IOV group is unavailable (VF Enable clear).
    public var opcodes: [AdminOpcode]?

    public init(name: String, summary: String, parameters: [PluginParameter], commandName: String? = nil, needsDevice: Bool = true,
                opcodes: [AdminOpcode]? = nil, run: @escaping @Sendable (PluginContext, PluginArguments) async throws -> PluginOutput) {
        self.name = name
        self.summary = summary
        self.parameters = parameters
        self.commandName = commandName
        self.needsDevice = needsDevice
        self.opcodes = opcodes
        self.run = run
    }
}

/// The command-handler protocol: a resource-manager plugin declares its name, the opcodes
/// and group types it needs, and the operations it offers. The registry checks its
/// opcodes against what the device listed in LIST_QUERY before any of them is sent.
///
/// Built-in plugins conform directly (static registration, as an appliance links them);
/// run-time plugins come in through the versioned C ABI (`virtio_admin_plugin.h`) and are
/// wrapped by ``DynamicPlugin``.
public protocol AdminCommandHandler: Sendable {
    var name: String { get }
    var version: String { get }
    var summary: String { get }
    var groupTypes: [AdminGroupType] { get }
    /// The opcodes the plugin sends, with their names.
    var opcodes: [(AdminOpcode, String)] { get }
    var operations: [PluginOperation] { get }
    /// The operation `virtio-admin NAME PF …` runs when no operation is named (`caps PF`).
    var defaultOperation: String? { get }
}

extension AdminCommandHandler {
    public func operation(named name: String) -> PluginOperation? { operations.first { $0.name == name } }
    public var defaultOperation: String? { nil }
}
