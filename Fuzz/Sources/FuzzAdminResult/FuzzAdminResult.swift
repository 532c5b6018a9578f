import VirtioProjectCommands
import VirtioSpec

// What a device writes back for an admin command: status header, bitmaps, results.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let header = AdminResultHeader(decoding: bytes) {
        _ = header.status.name + header.status.meaning + header.qualifier.name
    }
    let bitmap = AdminOpcodeBitmap(decoding: bytes)
    for opcode in bitmap.opcodes { _ = opcode.specName }
    _ = bitmap.encode()
    _ = AdminCommandHeader(decoding: bytes)
    if bytes.count >= 16 {
        let features = FeatureSet(low64: bytes.readLE(UInt64.self, at: 0), high64: bytes.readLE(UInt64.self, at: 8))
        _ = features.names(for: .net)
        _ = features.hexMask
    }
    _ = bytes.readLEIfPresent(UInt32.self, at: ProjectCommandLayout.msixPoolAvailable)
    _ = FeatureSet.bit(named: String(decoding: bytes.prefix(40), as: UTF8.self), for: .block)
    return 0
}
