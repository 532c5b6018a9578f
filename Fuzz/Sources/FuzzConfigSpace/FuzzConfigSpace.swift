import PCIConfig

// Config space is device input: any bytes must decode or throw a typed error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Make virtio capability parsing reachable more often: vendor 0x1af4, capability list bit.
    if bytes.count >= 64 && bytes.count % 3 == 0 { bytes[0] = 0xf4; bytes[1] = 0x1a; bytes[6] |= 0x10 }
    let sizes: [UInt64]? = bytes.count % 2 == 0 ? [0x8000, 0, 0x1000, 0, 0, 0] : nil
    _ = try? PCIConfigSpace(decoding: bytes, address: PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 0), barSizes: sizes)
    _ = parseResourceSizes(String(decoding: bytes.prefix(512), as: UTF8.self))
    _ = PCIAddress(String(decoding: bytes.prefix(32), as: UTF8.self))
    return 0
}
