import CVirtioAdminPlugin
import PCIConfig
import VirtioAdminDriver
import VirtioSystem
import VirtioSpec

// Plugin ABI 2 (virtio_admin_plugin.h): an operation runs several admin commands through a
// host callback. Host side: ``PluginV2Operation`` and ``PluginHostSession`` (every command
// checked before it is sent). Plugin side: ``CPluginExport`` turns a Swift
// ``AdminCommandHandler`` into an ABI 2 table.

// MARK: - Blocking hand-over between a plain thread and Swift concurrency

/// One value handed from one thread to another that waits for it (pthread mutex + condition).
final class Handover<Value>: @unchecked Sendable {
    private let condition = ConditionLock()
    // Guarded by `condition`.
    private var value: Value?

    func put(_ newValue: Value) {
        condition.withLock {
            value = newValue
            condition.signal()
        }
    }
    func wait() -> Value {
        condition.withLock {
            while value == nil { condition.wait() }
            return value!
        }
    }
}

/// A value that crosses to another thread although its type does not say it may (C
/// pointers and tables whose lifetime the caller guarantees).
struct Crossing<Value>: @unchecked Sendable {
    let value: Value
}

/// A NUL-terminated copy of `text` that C may keep until it is deallocated.
func makeCString(_ text: String) -> UnsafeMutablePointer<CChar> {
    let bytes = Array(text.utf8CString)
    let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
    pointer.initialize(from: bytes, count: bytes.count)
    return pointer
}

/// Copies `text` into a C buffer of `capacity` bytes (NUL-terminated, truncated to fit).
func putCString(_ text: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt32) {
    guard let buffer, capacity > 0 else { return }
    let bytes = Array(text.utf8.prefix(Int(capacity) - 1))
    for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
    buffer[bytes.count] = 0
}

// MARK: - Host side

/// The host's end of one ABI 2 operation call: it checks and sends each command.
final class PluginHostSession: @unchecked Sendable {
    let plugin: String
    let context: PluginContext
    let declared: [(AdminOpcode, String)]
    let groups: [AdminGroupType]
    let lock = Lock()
    private(set) var refusal: String?
    private(set) var sent = 0

    static let maximumBytes = 4096

    init(plugin: String, context: PluginContext, declared: [(AdminOpcode, String)], groups: [AdminGroupType]) {
        self.plugin = plugin
        self.context = context
        self.declared = declared
        self.groups = groups
    }

    /// Why `command` may not be sent, if it may not.
    func check(_ command: va_command_v2) -> String? {
        let opcode = AdminOpcode(command.opcode)
        guard declared.contains(where: { $0.0 == opcode }) else {
            let list = declared.map { "\($0.1) (\(hex($0.0.rawValue, width: 4)))" }.joined(separator: ", ")
            return "plugin '\(plugin)' sent \(context.driver.name(of: opcode)) (opcode \(hex(opcode.rawValue, width: 4))), which it did not declare (it declared \(list.isEmpty ? "none" : list))."
        }
        let group = AdminGroupType(rawValue: command.group_type)
        guard group == .selfGroup || group == .srIOV, groups.contains(group) else {
            return "plugin '\(plugin)' sent \(context.driver.name(of: opcode)) to group type \(command.group_type), which it did not declare or \(context.driver.address) does not own."
        }
        if group == .selfGroup, command.member != 0 {
            return "plugin '\(plugin)' sent \(context.driver.name(of: opcode)) to member \(command.member) of the self group, whose only member is 0."
        }
        if group == .srIOV, command.member != 0, let numVFs = context.numVFs, command.member > UInt64(numVFs) {
            return "plugin '\(plugin)' sent \(context.driver.name(of: opcode)) to member \(command.member), but \(context.driver.address)'s SR-IOV group has members 1 to \(numVFs)."
        }
        guard Int(command.data_length) <= Self.maximumBytes, Int(command.result_capacity) <= Self.maximumBytes,
              command.data_length == 0 || command.data != nil, command.result_capacity == 0 || command.result != nil else {
            return "plugin '\(plugin)' sent \(context.driver.name(of: opcode)) with buffers the host cannot use (more than \(Self.maximumBytes) bytes, or missing)."
        }
        return nil
    }

    /// host->run: checks, sends, waits (on the plugin's thread) and copies the answer back.
    func run(_ command: UnsafeMutablePointer<va_command_v2>, message: UnsafeMutablePointer<CChar>?, capacity: UInt32) -> Int32 {
        if let reason = check(command.pointee) {
            lock.withLock { if refusal == nil { refusal = reason } }
            putCString(reason, message, capacity)
            return Int32(VA_HOST_REFUSED)
        }
        let c = command.pointee
        let data = c.data_length == 0 ? [] : Array(UnsafeBufferPointer(start: c.data, count: Int(c.data_length)))
        let admin = AdminCommand(opcode: AdminOpcode(c.opcode), groupType: AdminGroupType(rawValue: c.group_type),
                                 member: GroupMemberID(rawValue: c.member), data: data, resultLength: Int(c.result_capacity))
        let handover = Handover<Result<AdminResponse, AdminError>>()
        let driver = context.driver
        let timeout = context.timeout
        // EAGAIN is retried here, as for built-in plugins: the plugin gets the last answer.
        Task.detached {
            do throws(AdminError) { handover.put(.success(try await driver.submitRetryingEAGAIN(admin, timeout: timeout))) } catch {
                handover.put(.failure(error))
            }
        }
        lock.withLock { sent += 1 }
        switch handover.wait() {
        case .success(let response):
            let count = min(response.resultBytesWritten, response.result.count, Int(c.result_capacity))
            if count > 0 { response.result.withUnsafeBufferPointer { command.pointee.result!.update(from: $0.baseAddress!, count: count) } }
            command.pointee.result_length = UInt32(count)
            command.pointee.status = response.status.rawValue
            command.pointee.status_qualifier = response.qualifier.rawValue
            return Int32(VA_HOST_OK)
        case .failure(let error):
            putCString(error.description, message, capacity)
            return Int32(VA_HOST_FAILED)
        }
    }
}

/// host->run as a C function: the context is the session.
let pluginHostRun: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<va_command_v2>?, UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = {
    context, command, message, capacity in
    guard let context, let command else { return Int32(VA_HOST_REFUSED) }
    return Unmanaged<PluginHostSession>.fromOpaque(context).takeUnretainedValue().run(command, message: message, capacity: capacity)
}

/// A loaded ABI 2 operation.
struct PluginV2Operation: @unchecked Sendable {
    // SAFETY: points into the loaded library's static data, which is never unloaded.
    let operation: va_plugin_operation_v2
    let plugin: String
    let declared: [(AdminOpcode, String)]
    let groups: [AdminGroupType]

    func run(context: PluginContext, arguments: PluginArguments) async throws -> PluginOutput {
        var vf: Int64 = -1
        if arguments.namesVF { vf = Int64(try arguments.member(context, plugin: plugin).vf) }
        let session = PluginHostSession(plugin: plugin, context: context, declared: declared, groups: groups)
        let pairs = arguments.values.sorted { $0.key < $1.key }.flatMap { key, values in values.map { (key, $0) } }
        let pf = "\(context.driver.address)"
        let supported = context.driver.supported.words
        let inUse = context.driver.inUse.words
        let memberType = UInt16(context.memberType?.rawValue ?? 0)
        let numVFs = UInt64(context.numVFs ?? 0)
        let crossing = Crossing(value: operation)
        let vfIndex = vf
        let (status, output, message) = await onThread { () -> (Int32, String, String) in
            let operation = crossing.value
            let names = pairs.map { makeCString($0.0) }
            let values = pairs.map { makeCString($0.1) }
            defer { (names + values).forEach { $0.deallocate() } }
            let items = (0..<pairs.count).map { va_argument(name: names[$0], value: values[$0]) }
            var outputBuffer = [CChar](repeating: 0, count: 8192)
            var messageBuffer = [CChar](repeating: 0, count: 1024)
            let words = max(supported.count, inUse.count)
            let supportedWords = supported + [UInt64](repeating: 0, count: words - supported.count)
            let inUseWords = inUse + [UInt64](repeating: 0, count: words - inUse.count)
            let unmanaged = Unmanaged.passRetained(session)
            defer { unmanaged.release() }
            let status = pf.withCString { pfText in
                supportedWords.withUnsafeBufferPointer { supportedPointer in
                    inUseWords.withUnsafeBufferPointer { inUsePointer in
                        items.withUnsafeBufferPointer { itemPointer in
                            var host = va_host_v2(struct_size: UInt32(MemoryLayout<va_host_v2>.size), reserved: 0, context: unmanaged.toOpaque(),
                                                  run: pluginHostRun, pf: pfText, opcode_words: UInt32(words), reserved2: 0,
                                                  supported: supportedPointer.baseAddress, in_use: inUsePointer.baseAddress)
                            var args = va_arguments_v2(count: UInt32(items.count), reserved: 0, items: itemPointer.baseAddress, vf: vfIndex,
                                                       num_vfs: numVFs, member_type: memberType, reserved2: (0, 0, 0))
                            return operation.run(&host, operation.operation_context, &args, &outputBuffer, UInt32(outputBuffer.count - 1),
                                                 &messageBuffer, UInt32(messageBuffer.count - 1))
                        }
                    }
                }
            }
            return (status, cText(outputBuffer), cText(messageBuffer))
        }
        if let refusal = session.refusal { throw PluginError.hostRefused(plugin: plugin, message: refusal) }
        switch status {
        case Int32(VA_PLUGIN_OK): return DynamicPlugin.outputFields(output, arguments: arguments)
        case Int32(VA_PLUGIN_BAD_ARGUMENT): throw PluginError.badArgument(plugin: plugin, message: message)
        case Int32(VA_PLUGIN_BAD_RESULT): throw PluginError.badResult(plugin: plugin, message: message)
        default: throw PluginError.refused(plugin: plugin, message: message.isEmpty ? "the operation failed (status \(status))." : message)
        }
    }
}

// MARK: - Plugin side: a Swift AdminCommandHandler as an ABI 2 plugin

/// Exports a Swift ``AdminCommandHandler`` through the C ABI 2, in a few lines:
///
/// ```swift
/// let exported = CPluginExport(MyPlugin())
/// @_cdecl("virtio_admin_plugin_entry")
/// public func entry(_ hostABI: UInt32) -> UnsafeRawPointer? { exported.entry(hostABI) }
/// ```
///
/// Each operation runs with a ``PluginContext`` whose `driver` forwards every command to
/// the host (which checks it against the declared opcodes and the PF's group).
public final class CPluginExport: @unchecked Sendable {
    /// The exported plugin.
    public let handler: any AdminCommandHandler
    // Everything below lives as long as the process (the host keeps pointers into it).
    let table: UnsafeMutablePointer<va_plugin_v2>

    final class Exported {
        let handler: any AdminCommandHandler
        let operation: PluginOperation
        init(handler: any AdminCommandHandler, operation: PluginOperation) {
            self.handler = handler
            self.operation = operation
        }
    }

    /// Builds the C table of `handler` (plugin ABI 2). Keep the value in a global: the host
    /// keeps pointers into it for as long as the library is loaded.
    public init(_ handler: any AdminCommandHandler) {
        self.handler = handler
        func text(_ string: String) -> UnsafePointer<CChar> { UnsafePointer(makeCString(string)) }
        let opcodes = UnsafeMutablePointer<UInt16>.allocate(capacity: max(handler.opcodes.count, 1))
        let names = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(handler.opcodes.count, 1))
        for (index, entry) in handler.opcodes.enumerated() {
            opcodes[index] = entry.0.rawValue
            names[index] = text(entry.1)
        }
        let operations = UnsafeMutablePointer<va_plugin_operation_v2>.allocate(capacity: max(handler.operations.count, 1))
        for (index, operation) in handler.operations.enumerated() {
            let parameters = operation.parameters.map { $0.required ? $0.name : $0.name + "?" }.joined(separator: ",")
            let context = Unmanaged.passRetained(Exported(handler: handler, operation: operation)).toOpaque()
            operations[index] = va_plugin_operation_v2(name: text(operation.name), summary: text(operation.summary), parameters: text(parameters),
                                                       operation_context: UnsafeRawPointer(context), run: exportedRun)
        }
        var groups: UInt16 = 0
        if handler.groupTypes.contains(.selfGroup) { groups |= UInt16(VA_GROUP_SELF) }
        if handler.groupTypes.contains(.srIOV) { groups |= UInt16(VA_GROUP_SRIOV) }
        table = UnsafeMutablePointer<va_plugin_v2>.allocate(capacity: 1)
        table.initialize(to: va_plugin_v2(
            abi_version: UInt32(VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2), struct_size: UInt32(MemoryLayout<va_plugin_v2>.size),
            name: text(handler.name), version: text(handler.version), summary: text(handler.summary), group_types: groups, reserved: 0,
            opcode_count: UInt32(handler.opcodes.count), opcodes: UnsafePointer(opcodes), opcode_names: UnsafePointer(names),
            operation_count: UInt32(handler.operations.count), operations: UnsafePointer(operations)))
    }

    /// What `virtio_admin_plugin_entry` returns: the ABI 2 table, or NULL for a host that
    /// speaks only ABI 1.
    public func entry(_ hostABI: UInt32) -> UnsafeRawPointer? {
        hostABI >= UInt32(VIRTIO_ADMIN_PLUGIN_ABI_VERSION_2) ? UnsafeRawPointer(table) : nil
    }
}

/// A ``PluginContext`` driver inside an exported plugin: each command goes to host->run.
struct HostCommandRunner: AdminCommandRunner, @unchecked Sendable {
    // SAFETY: valid for the duration of the operation call that created this runner.
    let host: UnsafePointer<va_host_v2>
    let address: PCIAddress
    let supported: AdminOpcodeBitmap
    let inUse: AdminOpcodeBitmap
    let names: [AdminOpcode: String]

    func name(of opcode: AdminOpcode) -> String { names[opcode] ?? opcode.specName }

    func submit(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse {
        let crossing = Crossing(value: host)
        let outcome: (Int32, [UInt8], UInt16, UInt16, String) = await onThread {
            let host = crossing.value
            var result = [UInt8](repeating: 0, count: command.resultLength)
            var message = [CChar](repeating: 0, count: 1024)
            var status: UInt16 = 0
            var qualifier: UInt16 = 0
            var length: UInt32 = 0
            let code = command.data.withUnsafeBufferPointer { data in
                result.withUnsafeMutableBufferPointer { resultPointer in
                    var c = va_command_v2(opcode: command.opcode.rawValue, group_type: command.groupType.rawValue, data_length: UInt32(data.count),
                                          member: command.member.rawValue, data: data.baseAddress, result: resultPointer.baseAddress,
                                          result_capacity: UInt32(resultPointer.count), result_length: 0, status: 0, status_qualifier: 0, reserved: 0)
                    let code = host.pointee.run(host.pointee.context, &c, &message, UInt32(message.count - 1))
                    status = c.status
                    qualifier = c.status_qualifier
                    length = c.result_length
                    return code
                }
            }
            return (code, Array(result.prefix(Int(length))), status, qualifier, cText(message))
        }
        guard outcome.0 == Int32(VA_HOST_OK) else {
            throw .hostRefused(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode), reason: outcome.4)
        }
        return AdminResponse(status: AdminStatus(rawValue: outcome.2), qualifier: AdminStatusQualifier(rawValue: outcome.3), result: outcome.1)
    }
}

/// The run of every exported operation: rebuilds context and arguments, runs the Swift
/// operation to completion (this thread waits), writes output or message.
let exportedRun: @convention(c) (UnsafePointer<va_host_v2>?, UnsafeRawPointer?, UnsafePointer<va_arguments_v2>?, UnsafeMutablePointer<CChar>?, UInt32,
                                 UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = { host, operationContext, arguments, output, outputCapacity, message, messageCapacity in
    guard let host, let operationContext, let arguments else { return Int32(VA_PLUGIN_BAD_ARGUMENT) }
    let exported = Unmanaged<CPluginExport.Exported>.fromOpaque(operationContext).takeUnretainedValue()
    var values: [String: [String]] = [:]
    for index in 0..<Int(arguments.pointee.count) {
        let item = arguments.pointee.items[index]
        guard let name = item.name, let value = item.value else { continue }
        values[String(cString: name), default: []].append(String(cString: value))
    }
    let h = host.pointee
    func words(_ pointer: UnsafePointer<UInt64>?) -> AdminOpcodeBitmap {
        AdminOpcodeBitmap(words: pointer.map { Array(UnsafeBufferPointer(start: $0, count: Int(h.opcode_words))) } ?? [])
    }
    let address = h.pf.flatMap { PCIAddress(String(cString: $0)) } ?? PCIAddress(domain: 0, bus: 0, device: 0, function: 0)
    var names: [AdminOpcode: String] = [:]
    for (opcode, name) in exported.handler.opcodes { names[opcode] = name }
    let runner = HostCommandRunner(host: host, address: address, supported: words(h.supported), inUse: words(h.in_use), names: names)
    let memberType = arguments.pointee.member_type == 0 ? nil : VirtioDeviceType(rawValue: arguments.pointee.member_type)
    let context = PluginContext(driver: runner, numVFs: Int(arguments.pointee.num_vfs), memberType: memberType)
    let operation = exported.operation
    let handover = Handover<Result<PluginOutput, any Error>>()
    // The host's typed VF (-1: none) is the VF; the `vf` string beside it is not read again.
    let vf = arguments.pointee.vf
    let typed = vf >= 0 ? VFNumber(index: Int(clamping: vf)) : nil
    let pluginArguments = typed.map { PluginArguments(values, vf: $0) } ?? PluginArguments(values)
    Task.detached {
        do { handover.put(.success(try await operation.run(context, pluginArguments))) } catch { handover.put(.failure(error)) }
    }
    switch handover.wait() {
    case .success(let result):
        putCString(result.fields.map { "\($0.0)=\($0.1.text)\n" }.joined(), output, outputCapacity)
        return Int32(VA_PLUGIN_OK)
    case .failure(let error):
        let (code, text): (Int32, String)
        switch error {
        case PluginError.badArgument(_, let text1): (code, text) = (VA_PLUGIN_BAD_ARGUMENT, text1)
        case PluginError.badResult(_, let text1): (code, text) = (VA_PLUGIN_BAD_RESULT, text1)
        case PluginError.refused(_, let text1): (code, text) = (VA_PLUGIN_DEVICE_REFUSED, text1)
        case AdminError.hostRefused(_, _, _, let reason): (code, text) = (VA_PLUGIN_HOST_REFUSED, reason)
        case let error as PluginError: (code, text) = (VA_PLUGIN_BAD_ARGUMENT, error.description)
        case let error as AdminError: (code, text) = (VA_PLUGIN_DEVICE_REFUSED, error.description)
        default: (code, text) = (VA_PLUGIN_FAILED, "\(error)")
        }
        putCString(text, message, messageCapacity)
        return Int32(code)
    }
}
