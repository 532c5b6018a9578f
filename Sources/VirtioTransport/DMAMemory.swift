/// A DMA-able memory region: a CPU pointer and the address the device uses for it.
package struct DMARegion: @unchecked Sendable, Hashable {
    // SAFETY: the allocator keeps the memory alive and pinned until `release` is called;
    // `cpuAddress` spans `length` bytes.
    package let cpuAddress: UnsafeMutableRawPointer
    /// The address the device uses (an IOVA, a physical address, or the model's own).
    package let deviceAddress: UInt64
    package let length: Int

    package init(cpuAddress: UnsafeMutableRawPointer, deviceAddress: UInt64, length: Int) {
        self.cpuAddress = cpuAddress
        self.deviceAddress = deviceAddress
        self.length = length
    }

    /// The device address of byte `offset`.
    @inline(__always) package func deviceAddress(at offset: Int) -> UInt64 { deviceAddress + UInt64(offset) }

    /// The bytes as a buffer.
    package var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: cpuAddress, count: length) }
}

/// Why DMA memory could not be had.
public enum DMAError: Error, Hashable, Sendable, CustomStringConvertible {
    case outOfMemory(requested: Int)
    case invalidAlignment(Int)
    case mappingFailed(reason: String)
    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case .outOfMemory(let requested): "cannot allocate \(requested) bytes of DMA memory."
        case .invalidAlignment(let alignment): "DMA alignment \(alignment) is not a power of two."
        case .mappingFailed(let reason): "DMA mapping failed: \(reason)."
        }
    }
}

/// Allocates zeroed, aligned memory the device can reach.
///
/// Back ends: the device model's own memory (``VirtioSimulator``), and on Linux VFIO
/// type-1 IOMMU mappings or locked memory with physical addresses from pagemap.
package protocol DMAAllocator: AnyObject, Sendable {
    /// Allocates `length` zeroed bytes aligned to `alignment` (a power of two).
    func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion
    /// Releases a region; the device must no longer use it.
    func release(_ region: DMARegion)
}
