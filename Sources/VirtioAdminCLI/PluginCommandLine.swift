import Foundation
import PCIConfig
import ResourceManager
import VirtioAdmin
import VirtioAdminDriver
import VirtioSpec

/// A plugin call as the command line spells it, read from what the plugin declares:
/// `PLUGIN [OPERATION] [PF] [WORD …] [--name value | --flag …]`, or `COMMAND …` for an
/// operation that declares a command name (`mode PF --vf 2 stop`). The operation is named,
/// or the plugin's default one (`caps PF`); a PF comes first unless the operation needs
/// none (`parts show FILE`); bare words fill the positional parameters in order.
struct PluginCommandLine {
    let plugin: any AdminCommandHandler
    let operation: PluginOperation
    let pf: String?
    let arguments: [String: [String]]
    /// `--vf`, read here once (an index, or a VF's address resolved when the PF is open).
    let vf: VFSelector?

    var usage: String { "\(operation.commandName ?? "\(plugin.name) \(operation.name)")" }

    init(_ plugins: [any AdminCommandHandler], command: String, words: [String]) throws {
        var rest = words[...]
        if let named = plugins.first(where: { $0.name == command }) {
            plugin = named
            let names = named.operations.map(\.name)
            if let first = rest.first, let found = named.operation(named: first) {
                operation = found
                rest.removeFirst()
            } else if let name = named.defaultOperation, let found = named.operation(named: name) {
                operation = found
            } else if let first = rest.first {
                throw CLIError("plugin '\(command)' has no operation '\(first)'; it has \(names.joined(separator: ", ")).")
            } else {
                throw CLIError("plugin '\(command)' needs an operation: \(names.joined(separator: ", ")).")
            }
        } else if let (owner, found) = plugins.lazy.compactMap({ owner in owner.operations.first { $0.commandName == command }.map { (owner, $0) } }).first {
            plugin = owner
            operation = found
        } else {
            let commands = plugins.flatMap { $0.operations.compactMap(\.commandName) }
            throw CLIError("no plugin or command named '\(command)'; plugins: \((plugins.map(\.name) + commands).joined(separator: ", ")).")
        }
        var pf: String?
        if operation.needsDevice, let first = rest.first, !first.hasPrefix("-") {
            pf = first
            rest.removeFirst()
        }
        self.pf = pf
        var arguments: [String: [String]] = [:]
        var positionals = operation.parameters.filter(\.positional)[...]
        let usage = operation.commandName ?? "\(plugin.name) \(operation.name)"
        while let word = rest.popFirst() {
            guard word.hasPrefix("--") else {
                guard let parameter = positionals.popFirst() else {
                    throw CLIError("unexpected '\(word)'; '\(usage)' takes \(Self.synopsis(operation)).")
                }
                arguments[parameter.name, default: []].append(word)
                continue
            }
            var name = String(word.dropFirst(2))
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            let declared = operation.parameters.first { $0.name == name }
            if declared?.kind == .flag {
                guard value == nil else { throw CLIError("--\(name) is a flag; it takes no value.") }
                arguments[name, default: []].append("yes")
                continue
            }
            if value == nil {
                guard let next = rest.popFirst() else { throw CLIError("--\(name) needs a value.") }
                value = next
            }
            arguments[name, default: []].append(value!)
            // A list takes the words that follow, up to the next option (`--set VERSION_1 MAC`).
            if declared?.kind == .list {
                while let next = rest.first, !next.hasPrefix("-") {
                    arguments[name, default: []].append(next)
                    rest.removeFirst()
                }
            }
        }
        if let missing = positionals.first(where: \.required) {
            throw CLIError("'\(usage)' needs \(missing.name.uppercased()) (\(missing.help)); it takes \(Self.synopsis(operation)).")
        }
        self.arguments = arguments
        do throws(VFSelectorError) { vf = try arguments["vf"]?.last.map { text throws(VFSelectorError) in try VFSelector(parsing: text) } } catch {
            throw CLIError(error.description)
        }
    }

    /// `PF --vf N FILE [--keep-stopped]`, from the declaration.
    static func synopsis(_ operation: PluginOperation) -> String {
        var parts: [String] = operation.needsDevice ? ["PF"] : []
        for parameter in operation.parameters where !parameter.positional {
            let value = parameter.kind == .vf ? "N" : parameter.kind == .list ? "VALUE…" : "VALUE"
            let text = parameter.kind == .flag ? "--\(parameter.name)" : "--\(parameter.name) \(value)"
            parts.append(parameter.required ? text : "[\(text)]")
        }
        for parameter in operation.parameters where parameter.positional {
            parts.append(parameter.required ? parameter.name.uppercased() : "[\(parameter.name.uppercased())]")
        }
        return parts.joined(separator: " ")
    }
}

/// The usage of every operation of `plugins` (the `run` command's help).
func pluginUsage(_ plugins: [any AdminCommandHandler]) -> String {
    plugins.map { plugin in
        plugin.operations.map { operation in
            let command = operation.commandName.map { "\($0) (or \(plugin.name) \(operation.name))" } ?? "\(plugin.name) \(operation.name)"
            let usage = "  \(command) \(PluginCommandLine.synopsis(operation))"
                + (plugin.defaultOperation == operation.name ? "\n    (also: \(plugin.name) PF)" : "")
            return usage + "\n      " + operation.summary
        }.joined(separator: "\n")
    }.joined(separator: "\n")
}

/// Prints an operation's output: its summary, or its fields as JSON.
func printPluginOutput(_ output: PluginOutput, json: Bool) throws {
    if json {
        try printJSON(JSONValue.object(output.fields.map { ($0.0, JSONValue($0.1)) }))
    } else {
        print(output.summary)
    }
}

/// The driver of an operation that needs no PF: it refuses every command.
struct NoDevice: AdminCommandRunner {
    var address: PCIAddress { PCIAddress(domain: 0, bus: 0, device: 0, function: 0) }
    var supported: AdminOpcodeBitmap { AdminOpcodeBitmap() }
    var inUse: AdminOpcodeBitmap { AdminOpcodeBitmap() }
    func name(of opcode: AdminOpcode) -> String { opcode.specName }
    func submit(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse {
        throw .hostRefused(device: address, opcode: command.opcode, opcodeName: command.opcode.specName, reason: "this operation runs without a PF.")
    }
}
