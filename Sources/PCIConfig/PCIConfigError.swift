import VirtioSpec

/// Why a PCI configuration space could not be decoded.
///
/// Every case names the device and the config-space offset involved; `description` is one
/// sentence starting with the device address.
public enum PCIConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the structure at `offset` needs.
    case truncated(device: PCIAddress, offset: Int, needed: Int, available: Int)
    /// A capability pointer that points outside config space or into the standard header.
    case capabilityPointerOutOfRange(device: PCIAddress, at: Int, pointer: Int, limit: Int)
    /// A capability list that comes back to an entry already seen.
    case capabilityLoop(device: PCIAddress, at: Int, revisits: Int)
    /// A capability whose length field is smaller than its structure.
    case capabilityTooShort(device: PCIAddress, offset: Int, capability: String, length: Int, minimum: Int)
    /// A capability that names a BAR index above 5.
    case barIndexOutOfRange(device: PCIAddress, offset: Int, capability: String, bar: Int)
    /// A region that extends past the end of its BAR.
    case regionBeyondBAR(device: PCIAddress, offset: Int, capability: String, bar: Int, regionEnd: UInt64, barSize: UInt64)
    /// A region in a BAR that is not implemented (size 0 or the upper half of a 64-bit BAR).
    case regionInMissingBAR(device: PCIAddress, offset: Int, capability: String, bar: Int)
    /// A 64-bit BAR in the last BAR slot, with no slot for its upper half.
    case bar64InLastSlot(device: PCIAddress, offset: Int)

    /// The function whose config space is malformed.
    public var device: PCIAddress {
        switch self {
        case .truncated(let device, _, _, _), .capabilityPointerOutOfRange(let device, _, _, _),
             .capabilityLoop(let device, _, _), .capabilityTooShort(let device, _, _, _, _),
             .barIndexOutOfRange(let device, _, _, _), .regionBeyondBAR(let device, _, _, _, _, _),
             .regionInMissingBAR(let device, _, _, _), .bar64InLastSlot(let device, _):
            device
        }
    }

    /// One sentence naming the device, the offset and what was expected.
    public var description: String {
        switch self {
        case let .truncated(device, offset, needed, available):
            "\(device): config space is truncated at offset \(hex(offset, width: 3)): \(needed) bytes needed, \(available) available."
        case let .capabilityPointerOutOfRange(device, at, pointer, limit):
            "\(device): capability pointer at offset \(hex(at, width: 3)) is \(hex(pointer, width: 3)), outside the capability area (\(hex(PCIHeader.size, width: 2))..<\(hex(limit, width: 3)))."
        case let .capabilityLoop(device, at, revisits):
            "\(device): capability list loops: the pointer at offset \(hex(at, width: 3)) leads back to \(hex(revisits, width: 3))."
        case let .capabilityTooShort(device, offset, capability, length, minimum):
            "\(device): \(capability) capability at offset \(hex(offset, width: 3)) has length \(length); at least \(minimum) expected."
        case let .barIndexOutOfRange(device, offset, capability, bar):
            "\(device): \(capability) capability at offset \(hex(offset, width: 3)) names BAR \(bar); BARs are 0 to 5."
        case let .regionBeyondBAR(device, offset, capability, bar, regionEnd, barSize):
            "\(device): \(capability) capability at offset \(hex(offset, width: 3)) ends at \(hex(regionEnd)) in BAR \(bar), which is only \(hex(barSize)) bytes long."
        case let .regionInMissingBAR(device, offset, capability, bar):
            "\(device): \(capability) capability at offset \(hex(offset, width: 3)) names BAR \(bar), which the device does not implement."
        case let .bar64InLastSlot(device, offset):
            "\(device): BAR at offset \(hex(offset, width: 2)) is 64-bit but has no upper half (it is the last BAR)."
        }
    }
}
