import VirtioTransport

/// A BAR of a simulated function, as a ``RegisterSpace``.
final class SimulatedBAR: RegisterSpace, @unchecked Sendable {
    let device: SimulatedSRIOVDevice
    let function: Int?
    let length = Int(SimulatedBARLayout.size)

    init(device: SimulatedSRIOVDevice, function: Int?) {
        self.device = device
        self.function = function
    }

    func check(_ offset: Int, _ width: Int) {
        precondition(offset >= 0 && offset <= length - width && offset % width == 0, "register access outside BAR or misaligned")
    }
    func read8(at offset: Int) -> UInt8 { check(offset, 1); return UInt8(truncatingIfNeeded: device.read(function, offset: offset, width: 1)) }
    func read16(at offset: Int) -> UInt16 { check(offset, 2); return UInt16(truncatingIfNeeded: device.read(function, offset: offset, width: 2)) }
    func read32(at offset: Int) -> UInt32 { check(offset, 4); return device.read(function, offset: offset, width: 4) }
    func write8(_ value: UInt8, at offset: Int) { check(offset, 1); device.write(function, offset: offset, width: 1, value: UInt32(value)) }
    func write16(_ value: UInt16, at offset: Int) { check(offset, 2); device.write(function, offset: offset, width: 2, value: UInt32(value)) }
    func write32(_ value: UInt32, at offset: Int) { check(offset, 4); device.write(function, offset: offset, width: 4, value: value) }
}
