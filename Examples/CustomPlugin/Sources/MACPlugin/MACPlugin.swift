// A VirtioAdmin run-time plugin: get and set a VF's MAC address through the PF's admin
// queue. Only the versioned C table of virtio_admin_plugin.h crosses into the host, so
// this library works with any virtio-admin build that speaks plugin ABI 1.
import CVirtioAdminPlugin

// Opcodes (project-defined vendor example; the device model implements them too).
let macGet: UInt16 = 0x50
let macSet: UInt16 = 0x51

/// Parses "key=value\n" lines.
func arguments(_ text: UnsafePointer<CChar>?) -> [String: String] {
    guard let text else { return [:] }
    var result: [String: String] = [:]
    for line in String(cString: text).split(separator: "\n") {
        let parts = line.split(separator: "=", maxSplits: 1)
        if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
    }
    return result
}

/// Copies `text` into a C buffer of `capacity` bytes (NUL-terminated, truncated to fit).
func put(_ text: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt32) {
    guard let buffer, capacity > 0 else { return }
    let bytes = Array(text.utf8.prefix(Int(capacity) - 1))
    for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
    buffer[bytes.count] = 0
}

/// The member id of the `vf` argument (VF N is member N + 1).
func member(_ args: [String: String], _ message: UnsafeMutablePointer<CChar>?, _ capacity: UInt32) -> UInt64? {
    guard let text = args["vf"], let vf = UInt64(text) else {
        put("--vf is required (the 0-based VF index).", message, capacity)
        return nil
    }
    return vf + 1
}

func formatMAC(_ bytes: UnsafePointer<UInt8>) -> String {
    (0..<6).map { index -> String in
        let text = String(bytes[index], radix: 16)
        return text.count == 1 ? "0" + text : text
    }.joined(separator: ":")
}

let getEncode: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<UInt16>?, UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<UInt8>?,
                               UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = {
    text, opcode, member, _, dataLength, resultLength, message, capacity in
    guard let id = MACPlugin.member(arguments(text), message, capacity) else { return Int32(VA_PLUGIN_BAD_ARGUMENT) }
    opcode?.pointee = macGet
    member?.pointee = id
    dataLength?.pointee = 0
    resultLength?.pointee = 8
    return Int32(VA_PLUGIN_OK)
}

let setEncode: @convention(c) (UnsafePointer<CChar>?, UnsafeMutablePointer<UInt16>?, UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<UInt8>?,
                               UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = {
    text, opcode, member, data, dataLength, resultLength, message, capacity in
    let args = arguments(text)
    guard let id = MACPlugin.member(args, message, capacity) else { return Int32(VA_PLUGIN_BAD_ARGUMENT) }
    let octets = (args["mac"] ?? "").split(separator: ":").compactMap { UInt8($0, radix: 16) }
    guard octets.count == 6, let data, let dataLength, dataLength.pointee >= 8 else {
        put("--mac must be six hex octets, e.g. 52:54:00:12:34:56.", message, capacity)
        return Int32(VA_PLUGIN_BAD_ARGUMENT)
    }
    guard octets[0] & 1 == 0 else {
        put("--mac \(args["mac"]!) is a multicast address; a VF needs a unicast one.", message, capacity)
        return Int32(VA_PLUGIN_BAD_ARGUMENT)
    }
    for index in 0..<8 { data[index] = index < 6 ? octets[index] : 0 }
    opcode?.pointee = macSet
    member?.pointee = id
    dataLength.pointee = 8
    resultLength?.pointee = 0
    return Int32(VA_PLUGIN_OK)
}

let getDecode: @convention(c) (UnsafePointer<UInt8>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = {
    result, length, output, outputCapacity, message, capacity in
    guard let result, length >= 6 else {
        put("MAC_GET returned \(length) bytes; 6 expected.", message, capacity)
        return Int32(VA_PLUGIN_BAD_RESULT)
    }
    put("mac=\(formatMAC(result))\n", output, outputCapacity)
    return Int32(VA_PLUGIN_OK)
}

let setDecode: @convention(c) (UnsafePointer<UInt8>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32, UnsafeMutablePointer<CChar>?, UInt32) -> Int32 = {
    _, _, output, outputCapacity, _, _ in
    put("result=ok\n", output, outputCapacity)
    return Int32(VA_PLUGIN_OK)
}

/// A C string that lives for the process.
func cString(_ text: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

nonisolated(unsafe) let opcodes: UnsafeMutablePointer<UInt16> = {
    let pointer = UnsafeMutablePointer<UInt16>.allocate(capacity: 2)
    pointer[0] = macGet
    pointer[1] = macSet
    return pointer
}()

nonisolated(unsafe) let opcodeNames: UnsafeMutablePointer<UnsafePointer<CChar>?> = {
    let pointer = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: 2)
    pointer[0] = cString("MAC_GET")
    pointer[1] = cString("MAC_SET")
    return pointer
}()

nonisolated(unsafe) let operations: UnsafeMutablePointer<va_plugin_operation_v1> = {
    let pointer = UnsafeMutablePointer<va_plugin_operation_v1>.allocate(capacity: 2)
    pointer[0] = va_plugin_operation_v1(name: cString("get"), summary: cString("Print a VF's MAC address."),
                                        parameters: cString("vf"), encode: getEncode, decode: getDecode)
    pointer[1] = va_plugin_operation_v1(name: cString("set"), summary: cString("Set a VF's MAC address (the VF must be unbound)."),
                                        parameters: cString("vf,mac"), encode: setEncode, decode: setDecode)
    return pointer
}()

nonisolated(unsafe) let table: UnsafeMutablePointer<va_plugin_v1> = {
    let pointer = UnsafeMutablePointer<va_plugin_v1>.allocate(capacity: 1)
    pointer.initialize(to: va_plugin_v1(
        abi_version: VIRTIO_ADMIN_PLUGIN_ABI_VERSION, struct_size: UInt32(MemoryLayout<va_plugin_v1>.size),
        name: cString("mac"), version: cString("1.0"), summary: cString("VF MAC address provisioning (vendor example)"),
        group_type: 1, reserved: 0, opcode_count: 2, opcodes: UnsafePointer(opcodes), opcode_names: UnsafePointer(opcodeNames),
        operation_count: 2, operations: UnsafePointer(operations)))
    return pointer
}()

/// The entry point virtio-admin looks up with dlsym.
@_cdecl("virtio_admin_plugin_entry")
public func virtioAdminPluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
    hostABI == VIRTIO_ADMIN_PLUGIN_ABI_VERSION ? UnsafeRawPointer(table) : nil
}
