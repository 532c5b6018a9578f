import PCIConfig
import Synchronization
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import Virtqueue

/// A register space that records every access (offset, width, read/write, value), in the
/// style of swift-mmio's tracing interposer.
final class TracingRegisterSpace: RegisterSpace, @unchecked Sendable {
    struct Access: Equatable, CustomStringConvertible {
        var write: Bool
        var offset: Int
        var width: Int
        var value: UInt32
        var description: String { "\(write ? "W" : "R")\(width * 8) \(hex(offset, width: 4)) = \(hex(value))" }
    }
    let inner: any RegisterSpace
    let log = Mutex<[Access]>([])
    init(_ inner: any RegisterSpace) { self.inner = inner }
    var length: Int { inner.length }
    var accesses: [Access] { log.withLock { $0 } }
    func clear() { log.withLock { $0.removeAll() } }
    func record(_ access: Access) { log.withLock { $0.append(access) } }
    func read8(at offset: Int) -> UInt8 { let v = inner.read8(at: offset); record(.init(write: false, offset: offset, width: 1, value: UInt32(v))); return v }
    func read16(at offset: Int) -> UInt16 { let v = inner.read16(at: offset); record(.init(write: false, offset: offset, width: 2, value: UInt32(v))); return v }
    func read32(at offset: Int) -> UInt32 { let v = inner.read32(at: offset); record(.init(write: false, offset: offset, width: 4, value: v)); return v }
    func write8(_ value: UInt8, at offset: Int) { record(.init(write: true, offset: offset, width: 1, value: UInt32(value))); inner.write8(value, at: offset) }
    func write16(_ value: UInt16, at offset: Int) { record(.init(write: true, offset: offset, width: 2, value: UInt32(value))); inner.write16(value, at: offset) }
    func write32(_ value: UInt32, at offset: Int) { record(.init(write: true, offset: offset, width: 4, value: value)); inner.write32(value, at: offset) }
}

/// A VF of a simulated device, brought up with one loopback queue.
struct LoopbackQueue {
    let device: SimulatedSRIOVDevice
    let transport: ModernPCITransport
    let queue: SplitVirtqueue
    let notifier: QueueNotifier
    let buffers: DMARegion

    init(device: SimulatedSRIOVDevice = SimulatedSRIOVDevice(), vf: Int = 0, size: Int = 16, eventIndex: Bool = false) throws {
        self.device = device
        transport = try ModernPCITransport(config: device.vfConfigSpace(vf), bars: [0: device.vfBAR(vf)])
        let features = try transport.negotiate(required: [.version1], wanted: eventIndex ? [.eventIndex] : [])
        queue = try SplitVirtqueue(size: size, allocator: device.memory, eventIndex: features.contains(.eventIndex))
        notifier = try transport.setUpQueue(0, size: size, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea, deviceArea: queue.deviceArea)
        try transport.driverOK()
        buffers = try device.memory.allocate(length: 64 * 1024, alignment: 4096)
    }
}
