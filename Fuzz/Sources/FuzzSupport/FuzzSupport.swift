// The bodies of Fuzz/'s libFuzzer targets that reach `package` declarations. This target builds
// in the main package (product _VirtioAdminFuzzSupport, not API); each Fuzz/ target is an
// `LLVMFuzzerTestOneInput` entry point that calls one function here. Fuzz/ builds it with the
// fuzzer and address sanitizers like its own targets, so coverage reaches this code too.
import PCIConfig
import VirtioProjectCommands
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import Virtqueue

// MARK: FuzzConfigSpace
// Config space is device input: any bytes must decode or throw a typed error.
/// FuzzConfigSpace: one input.
public func fuzzConfigSpace(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Make virtio capability parsing reachable more often: vendor 0x1af4, capability list bit.
    if bytes.count >= 64 && bytes.count % 3 == 0 { bytes[0] = 0xf4; bytes[1] = 0x1a; bytes[6] |= 0x10 }
    let sizes: [UInt64]? = bytes.count % 2 == 0 ? [0x8000, 0, 0x1000, 0, 0, 0] : nil
    _ = try? PCIConfigSpace(decoding: bytes, address: PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 0), barSizes: sizes)
    _ = parseResourceSizes(String(decoding: bytes.prefix(512), as: UTF8.self))
    _ = PCIAddress(String(decoding: bytes.prefix(32), as: UTF8.self))
    return 0
}

// MARK: FuzzAdminResult
// What a device writes back for an admin command: status header, bitmaps, results.
/// FuzzAdminResult: one input.
public func fuzzAdminResult(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
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

// MARK: FuzzUsedRing
// A hostile device writes the used ring: ids, lengths and the index. The engine must
// answer with a typed error or valid completions, never touch memory it should not.
let memory = SimulatedMemory()
let buffer = try! memory.allocate(length: 4096, alignment: 64)
/// FuzzUsedRing: one input.
public func fuzzUsedRing(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard bytes.count >= 4 else { return 0 }
    let queueSize = 1 << Int(bytes[0] % 5 + 1)  // 2...32
    guard let queue = try? SplitVirtqueue(size: queueSize, allocator: memory, eventIndex: bytes[1] & 1 == 1) else { return 0 }
    // Chains of 1–3 descriptors, readable and writable.
    var added = 0
    while added < Int(bytes[2]) % (queueSize + 1) {
        let chain = 1 + added % 3
        guard (try? queue.add(readable: [DMABuffer(address: buffer.deviceAddress, length: 8)],
                              writable: Array(repeating: DMABuffer(address: buffer.deviceAddress(at: 64), length: 16), count: chain - 1))) != nil
        else { break }
        added += 1
    }
    _ = queue.publish()
    // The device's writes: used elements, then the index.
    var offset = 4
    var slot = 0
    while offset + 8 <= bytes.count && slot < queueSize {
        queue.ring.setUsedEntry(slot, id: bytes.readLE(UInt32.self, at: offset), length: bytes.readLE(UInt32.self, at: offset + 4))
        offset += 8
        slot += 1
    }
    queue.ring.storeUsedIndex(UInt16(bytes[3]))
    for _ in 0..<3 {
        do { try queue.takeCompletions { _ in } } catch { _ = error.isDeviceError; break }
    }
    return 0
}
