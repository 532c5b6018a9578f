import VirtioLock
import VirtioTransport

#if canImport(Glibc)
import Glibc
#endif

/// The device model's DMA memory: host memory with device addresses from a private IOVA
/// space, and the translation the model's "IOMMU" applies to every address the driver
/// gives it. An address outside every live allocation is a device-side fault, not a crash.
public final class SimulatedMemory: DMAAllocator, @unchecked Sendable {
    struct Allocation: @unchecked Sendable {
        let deviceAddress: UInt64
        let length: Int
        let pointer: UnsafeMutableRawPointer
    }

    // Guarded by `lock`. Allocations sorted by device address, for binary search.
    private let lock = Lock()
    private var next: UInt64 = SimulatedMemory.iovaBase
    private var allocations: [Allocation] = []
    /// First device address handed out (high enough that 0 and small values never translate).
    public static let iovaBase: UInt64 = 0x1_0000_0000

    public init() {}

    deinit {
        for allocation in allocations { free(allocation.pointer) }
    }

    public func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { throw .invalidAlignment(alignment) }
        guard length > 0 else { throw .outOfMemory(requested: length) }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, max(alignment, 16), length) == 0, let pointer = raw else { throw .outOfMemory(requested: length) }
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        let address = lock.withLock { () -> UInt64 in
            let align = UInt64(max(alignment, 64))
            let address = (next + align - 1) & ~(align - 1)
            // Leave a guard gap so that running off one allocation never lands in the next.
            next = address + UInt64(length) + 4096
            // Addresses only grow, so appending keeps the array sorted.
            allocations.append(Allocation(deviceAddress: address, length: length, pointer: pointer))
            return address
        }
        return DMARegion(cpuAddress: pointer, deviceAddress: address, length: length)
    }

    public func release(_ region: DMARegion) {
        let allocation = lock.withLock { () -> Allocation? in
            guard let index = find(region.deviceAddress), allocations[index].deviceAddress == region.deviceAddress else { return nil }
            return allocations.remove(at: index)
        }
        if let allocation { free(allocation.pointer) }
    }

    /// The host pointer for `length` bytes at device address `address`, or `nil` when the
    /// range is not inside one live allocation.
    public func translate(_ address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard length >= 0 else { return nil }
        return lock.withLock { () -> UnsafeMutableRawPointer? in
            guard let index = find(address) else { return nil }
            let allocation = allocations[index]
            let offset = address - allocation.deviceAddress
            guard offset <= UInt64(allocation.length), UInt64(length) <= UInt64(allocation.length) - offset else { return nil }
            return allocation.pointer + Int(offset)
        }
    }

    /// Index of the last allocation starting at or below `address` (lock held).
    private func find(_ address: UInt64) -> Int? {
        var low = 0
        var high = allocations.count
        while low < high {
            let middle = (low + high) / 2
            if allocations[middle].deviceAddress <= address { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : low - 1
    }

    /// Number of live allocations (tests check that teardown releases everything).
    public var liveAllocations: Int { lock.withLock { allocations.count } }
}
