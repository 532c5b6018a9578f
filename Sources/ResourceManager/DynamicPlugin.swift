import CVirtioAdminPlugin
import VirtioAdminDriver
import VirtioSpec
import VirtioSystem

/// A plugin loaded at run time through the versioned C ABI (`virtio_admin_plugin.h`).
///
/// Only the C table crosses the boundary, so a plugin built with another toolchain (or a
/// Swift plugin exporting the table with `@_cdecl`) works with any host build, including a
/// host linked with `--static-swift-stdlib`. The library stays loaded for the life of the
/// process (its table and functions are referenced from here).
public struct DynamicPlugin: AdminCommandHandler, @unchecked Sendable {
    // SAFETY: `table` points into the loaded library's static data, which is never unloaded.
    let table: UnsafeRawPointer
    /// The shared library the plugin was loaded from.
    public let path: String
    /// The name the plugin's C table gives.
    public let name: String
    /// The version the plugin's C table gives.
    public let version: String
    /// The summary the plugin's C table gives.
    public let summary: String
    /// The group types the plugin's C table names.
    public let groupTypes: [AdminGroupType]
    /// The opcodes the plugin's C table names; the host sends no other opcode for it.
    public let opcodes: [(AdminOpcode, String)]
    /// The operations of the plugin's C table, each calling into the library.
    public let operations: [PluginOperation]
    /// The ABI of the plugin's table (1 or 2).
    public let abiVersion: UInt32

    /// The newest ABI this host speaks (it loads ABI 1 plugins too).
    public static let hostABI = UInt32(VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2)

    /// Loads the plugin at `path`.
    /// - Throws: ``PluginError/loadFailed(path:reason:)``, ``PluginError/missingEntryPoint(path:)``,
    ///   ``PluginError/abiMismatch(path:pluginABI:hostABI:)``.
    public init(path: String) throws(PluginError) {
        try Self.checkTrusted(path)
        let handle: SharedLibrary
        do { handle = try SharedLibrary(path: path) } catch { throw .loadFailed(path: path, reason: error.reason) }
        guard let symbol = handle.symbol(VIRTIO_ADMIN_PLUGIN_ENTRY) else {
            handle.close()
            throw .missingEntryPoint(path: path)
        }
        // ABI 2 first; a plugin that serves only ABI 1 returns NULL and is asked again.
        let entry = unsafeBitCast(symbol, to: (@convention(c) (UInt32) -> UnsafeRawPointer?).self)
        guard let raw = entry(Self.hostABI) ?? entry(UInt32(VIRTIO_ADMIN_PLUGIN_ABI_VERSION)) else {
            handle.close()
            throw .abiMismatch(path: path, pluginABI: 0, hostABI: Self.hostABI)
        }
        // Check version and size before reading any other field.
        let abi = raw.load(as: UInt32.self)
        let size = raw.load(fromByteOffset: 4, as: UInt32.self)
        let needed = abi == 1 ? MemoryLayout<va_plugin_v1>.size : MemoryLayout<va_plugin_v2>.size
        guard abi == 1 || abi == 2 else {
            handle.close()
            throw .abiMismatch(path: path, pluginABI: abi, hostABI: Self.hostABI)
        }
        guard size >= UInt32(needed) else {
            // Nothing of the table may be read after dlclose.
            handle.close()
            throw .loadFailed(path: path, reason: "its plugin table is \(size) bytes; ABI \(abi) needs \(needed)")
        }
        let header: (name: UnsafePointer<CChar>?, version: UnsafePointer<CChar>?, summary: UnsafePointer<CChar>?,
                     opcodeCount: UInt32, opcodes: UnsafePointer<UInt16>?, names: UnsafePointer<UnsafePointer<CChar>?>?, operationCount: UInt32, hasOperations: Bool)
        if abi == 1 {
            let plugin = raw.assumingMemoryBound(to: va_plugin_v1.self).pointee
            header = (plugin.name, plugin.version, plugin.summary, plugin.opcode_count, plugin.opcodes, plugin.opcode_names, plugin.operation_count, plugin.operations != nil)
        } else {
            let plugin = raw.assumingMemoryBound(to: va_plugin_v2.self).pointee
            header = (plugin.name, plugin.version, plugin.summary, plugin.opcode_count, plugin.opcodes, plugin.opcode_names, plugin.operation_count, plugin.operations != nil)
        }
        guard let cName = header.name, header.opcodeCount <= 64, header.operationCount <= 64,
              header.opcodeCount == 0 || (header.opcodes != nil && header.names != nil),
              header.operationCount == 0 || header.hasOperations
        else {
            handle.close()
            throw .loadFailed(path: path, reason: "its plugin table is incomplete (missing name, opcodes or operations)")
        }
        self.table = raw
        self.path = path
        abiVersion = abi
        name = String(cString: cName)
        version = header.version.map { String(cString: $0) } ?? "?"
        summary = header.summary.map { String(cString: $0) } ?? ""
        opcodes = (0..<Int(header.opcodeCount)).map { index in
            (AdminOpcode(header.opcodes![index]), header.names![index].map { String(cString: $0) } ?? AdminOpcode(header.opcodes![index]).specName)
        }
        let pluginName = name
        if abi == 2 {
            let plugin = raw.assumingMemoryBound(to: va_plugin_v2.self).pointee
            let groups = (plugin.group_types & UInt16(VA_GROUP_SELF) != 0 ? [AdminGroupType.selfGroup] : [])
                + (plugin.group_types & UInt16(VA_GROUP_SRIOV) != 0 ? [AdminGroupType.srIOV] : [])
            groupTypes = groups
            let declared = opcodes
            operations = (0..<Int(plugin.operation_count)).compactMap { index -> PluginOperation? in
                let operation = plugin.operations[index]
                guard let opName = operation.name, operation.run != nil else { return nil }
                let handle = PluginV2Operation(operation: operation, plugin: pluginName, declared: declared, groups: groups)
                return PluginOperation(name: String(cString: opName), summary: operation.summary.map { String(cString: $0) } ?? "",
                                       parameters: Self.parameters(operation.parameters)) { context, arguments in
                    try await handle.run(context: context, arguments: arguments)
                }
            }
            return
        }
        let plugin = raw.assumingMemoryBound(to: va_plugin_v1.self).pointee
        groupTypes = [AdminGroupType(rawValue: plugin.group_type)]
        let groupType = AdminGroupType(rawValue: plugin.group_type)
        operations = (0..<Int(plugin.operation_count)).compactMap { index -> PluginOperation? in
            let operation = plugin.operations[index]
            guard let opName = operation.name, let encode = operation.encode, let decode = operation.decode else { return nil }
            return PluginOperation(name: String(cString: opName), summary: operation.summary.map { String(cString: $0) } ?? "",
                                   parameters: Self.parameters(operation.parameters)) { context, arguments in
                try await Self.run(plugin: pluginName, groupType: groupType, encode: encode, decode: decode, context: context, arguments: arguments)
            }
        }
    }

    /// "vf,mac?" → parameters (a trailing '?' marks an optional one).
    static func parameters(_ text: UnsafePointer<CChar>?) -> [PluginParameter] {
        (text.map { String(cString: $0) } ?? "").split(separator: ",").map { spec -> PluginParameter in
            let optional = spec.hasSuffix("?")
            let name = String(optional ? spec.dropLast() : spec)
            return PluginParameter(name, name == "vf" ? .vf : .string, required: !optional, help: "")
        }
    }

    /// When running as root, refuses a plugin file (or its directory) that is not owned by
    /// root or is group- or world-writable — the way sshd and sudo treat their files:
    /// anyone who can write it could run code as root.
    /// - Parameter effectiveUser: the user to check for (nil: this process's effective user).
    public static func checkTrusted(_ path: String, effectiveUser: UInt32? = nil) throws(PluginError) {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        for item in [path, directory.isEmpty ? "/" : directory] {
            if let reason = untrustedFileReason(item, effectiveUser: effectiveUser ?? Sys.effectiveUserID) { throw .untrusted(path: item, reason: reason) }
        }
    }

    static func run(plugin: String, groupType: AdminGroupType,
                    encode: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<UInt16>?, UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<CChar>?, UInt32) -> Int32,
                    decode: @convention(c) (UnsafePointer<UInt8>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32) -> Int32,
                    context: PluginContext, arguments: PluginArguments) async throws -> PluginOutput {
        if arguments.namesVF { _ = try arguments.member(context, plugin: plugin) }
        let text = arguments.values.sorted { $0.key < $1.key }.flatMap { key, values in values.map { "\(key)=\($0)\n" } }.joined()
        var opcode: UInt16 = 0
        var member: UInt64 = 0
        var data = [UInt8](repeating: 0, count: 256)
        var dataLength = UInt32(data.count)
        var resultLength: UInt32 = 0
        var message = [CChar](repeating: 0, count: 512)
        let status = text.withCString { arguments in
            data.withUnsafeMutableBufferPointer { data in
                encode(arguments, &opcode, &member, data.baseAddress, &dataLength, &resultLength, &message, UInt32(message.count - 1))
            }
        }
        guard status == VA_PLUGIN_OK else { throw PluginError.badArgument(plugin: plugin, message: cText(message)) }
        guard dataLength <= UInt32(data.count), resultLength <= 4096 else {
            throw PluginError.badArgument(plugin: plugin, message: "the plugin built a command larger than its buffer")
        }
        let result = try await context.driver.run(
            AdminCommand(opcode: AdminOpcode(opcode), groupType: groupType, member: GroupMemberID(rawValue: member),
                         data: Array(data[0..<Int(dataLength)]), resultLength: Int(resultLength)),
            timeout: context.timeout)
        var output = [CChar](repeating: 0, count: 4096)
        let decoded = result.withUnsafeBufferPointer { bytes in
            decode(bytes.baseAddress, UInt32(bytes.count), &output, UInt32(output.count - 1), &message, UInt32(message.count - 1))
        }
        guard decoded == VA_PLUGIN_OK else { throw PluginError.badResult(plugin: plugin, message: cText(message)) }
        return outputFields(cText(output), arguments: arguments)
    }

    /// "key=value" lines → output (integers as numbers), `vf` first when given.
    static func outputFields(_ text: String, arguments: PluginArguments) -> PluginOutput {
        var fields: [(String, PluginValue)] = []
        if let vf = arguments.vf { fields.append(("vf", .int(vf.index))) }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = String(parts[0])
            if key == "vf" { continue }
            fields.append((key, Int(parts[1]).map(PluginValue.int) ?? .string(String(parts[1]))))
        }
        return PluginOutput(fields: fields, summary: fields.map { "\($0.0) \($0.1.text)" }.joined(separator: ", "))
    }
}

func cText(_ buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { pointer in
        let end = pointer.firstIndex(of: 0) ?? pointer.count
        return String(decoding: pointer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension PluginRegistry {
    /// Loads one plugin file and registers it.
    @discardableResult
    public func load(path: String) throws(PluginError) -> any AdminCommandHandler {
        let plugin = try DynamicPlugin(path: path)
        try register(plugin, origin: path)
        return plugin
    }

    /// Loads every `*.so` in `directory` (sorted by name).
    public func loadDirectory(_ directory: String) throws(PluginError) -> [any AdminCommandHandler] {
        let names: [String]
        do { names = try Sys.listDirectory(directory) } catch { throw .loadFailed(path: directory, reason: error.errno.description) }
        var loaded: [any AdminCommandHandler] = []
        for name in names where name.hasSuffix(".so") { loaded.append(try load(path: directory + "/" + name)) }
        return loaded
    }
}
