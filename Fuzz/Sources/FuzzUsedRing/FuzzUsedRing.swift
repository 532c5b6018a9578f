import VirtioSimulator
import VirtioTransport
import Virtqueue

// A hostile device writes the used ring: ids, lengths and the index. The engine must
// answer with a typed error or valid completions, never touch memory it should not.
let memory = SimulatedMemory()
nonisolated(unsafe) let buffer = try! memory.allocate(length: 4096, alignment: 64)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
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
