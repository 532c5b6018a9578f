import VirtioSystem
import VirtioTransport

/// An access by the device that the model's strict IOMMU refused.
package struct IOMMUFault: Sendable, Hashable, CustomStringConvertible {
    package enum Kind: String, Sendable, Hashable {
        /// The range was mapped once and has been released since (use after free by DMA).
        case released
        /// The range was never mapped.
        case neverMapped
    }
    package var address: UInt64
    package var length: Int
    package var kind: Kind
    package var description: String { "device access to \(length) bytes at 0x\(String(address, radix: 16)): \(kind == .released ? "released" : "never-mapped") memory" }
}

/// The device model's DMA memory: host memory with device addresses from a private IOVA
/// space, and the translation the model's strict "IOMMU" applies to every address the device
/// touches (rings, descriptors, buffers, on every access, not once). An address outside
/// every live mapping is a recorded fault (``faults``), never a crash; tests assert that no
/// access ever reached released memory.
public final class SimulatedMemory: DMAAllocator, @unchecked Sendable {
    struct Allocation: @unchecked Sendable {
        let deviceAddress: UInt64
        let length: Int
        let pointer: UnsafeMutableRawPointer

        /// The host address of `length` bytes at `address` if they lie inside this allocation.
        @inline(__always)
        func pointer(for address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
            guard address >= deviceAddress else { return nil }
            let offset = address - deviceAddress
            guard offset <= UInt64(self.length), UInt64(length) <= UInt64(self.length) - offset else { return nil }
            return pointer + Int(offset)
        }
    }

    // Guarded by `lock` (which also keeps accesses exclusive: no run-time exclusivity
    // checks on them). Allocations sorted by device address, for binary search.
    private let lock = Lock()
    @exclusivity(unchecked) private var next: UInt64 = SimulatedMemory.iovaBase
    @exclusivity(unchecked) private var allocations: [Allocation] = []
    /// Index of the allocation the last translation hit (a hint: checked before use).
    @exclusivity(unchecked) private var lastHit = 0
    /// Device-address ranges released so far (start, length), to classify faults.
    @exclusivity(unchecked) private var released: [(UInt64, Int)] = []
    @exclusivity(unchecked) private var recordedFaults: [IOMMUFault] = []
    /// First device address handed out (high enough that 0 and small values never translate).
    package static let iovaBase: UInt64 = 0x1_0000_0000

    /// Empty DMA memory with its own IOVA space.
    public init() {}

    deinit {
        for allocation in allocations { Sys.freeAligned(allocation.pointer) }
    }

    package func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { throw .invalidAlignment(alignment) }
        guard length > 0 else { throw .outOfMemory(requested: length) }
        guard let pointer = Sys.allocateAligned(length, alignment: max(alignment, 16)) else { throw .outOfMemory(requested: length) }
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

    package func release(_ region: DMARegion) {
        let allocation = lock.withLock { () -> Allocation? in
            guard let index = find(region.deviceAddress), allocations[index].deviceAddress == region.deviceAddress else { return nil }
            let removed = allocations.remove(at: index)
            released.append((removed.deviceAddress, removed.length))
            return removed
        }
        if let allocation { Sys.freeAligned(allocation.pointer) }
    }

    /// The host pointer for `length` bytes at device address `address`, or `nil` when the
    /// range is not inside one live allocation.
    package func translate(_ address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        lock.withLock { translateLocked(address, length: length) }
    }

    /// Runs `body` with the lock held once for all the translations it makes (a notify's
    /// ring and descriptor reads): each address is checked as by ``translate(_:length:)``,
    /// and a refused one is recorded the same way. Nothing can be released meanwhile.
    /// `body` must not call other methods of this memory (the lock is not recursive).
    func withTranslator<R>(_ body: (borrowing Translator) -> R) -> R {
        lock.withLock { body(Translator(memory: self)) }
    }

    /// Translation inside ``withTranslator(_:)`` (the memory's lock held).
    struct Translator: ~Copyable {
        fileprivate unowned(unsafe) let memory: SimulatedMemory
        /// As ``SimulatedMemory/translate(_:length:)``.
        func translate(_ address: UInt64, length: Int) -> UnsafeMutableRawPointer? { memory.translateLocked(address, length: length) }
    }

    /// The translation (lock held). The allocation the last translation hit is tried first:
    /// allocations never overlap, so one that contains the whole range is the live one.
    private func translateLocked(_ address: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard length >= 0 else { return nil }
        if lastHit < allocations.count, let pointer = allocations[lastHit].pointer(for: address, length: length) { return pointer }
        guard let index = find(address), let pointer = allocations[index].pointer(for: address, length: length) else {
            return faultLocked(address, length)
        }
        lastHit = index
        return pointer
    }

    /// Records a refused access (lock held).
    private func faultLocked(_ address: UInt64, _ length: Int) -> UnsafeMutableRawPointer? {
        let wasReleased = released.contains { address < $0.0 &+ UInt64($0.1) && $0.0 < address &+ UInt64(max(length, 1)) }
        if recordedFaults.count < 10_000 {
            recordedFaults.append(IOMMUFault(address: address, length: length, kind: wasReleased ? .released : .neverMapped))
        }
        return nil
    }

    /// Every device access the IOMMU refused, in order.
    package var faults: [IOMMUFault] { lock.withLock { recordedFaults } }
    /// Refused device accesses to memory that had been released (a driver that freed DMA
    /// memory while the device could still use it).
    package var releasedMemoryAccesses: Int { lock.withLock { recordedFaults.count { $0.kind == .released } } }

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
    package var liveAllocations: Int { lock.withLock { allocations.count } }
}
