import CLinuxVFIO
import PCIConfig
import VirtioSystem
import VirtioSpec
import VirtioTransport

/// Errors of user-space device access (BAR mapping, VFIO, DMA memory).
public enum DeviceAccessError: Error, Hashable, Sendable, CustomStringConvertible {
    case kernelDriverBound(address: PCIAddress, driver: String)
    case system(address: PCIAddress?, SystemCallError)
    case vfio(address: PCIAddress?, message: String)
    case barTooSmall(address: PCIAddress, bar: Int, size: UInt64, needed: UInt64)
    case noIOMMUAndNotRoot
    /// No 2 MiB huge page: small pages are not pinned physically (compaction moves them
    /// even when locked), so DMA at physical addresses needs a huge page (or VFIO).
    case hugePageRequired(requested: Int)
    case config(LinuxError)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case let .kernelDriverBound(address, driver):
            "\(address): the kernel driver \(driver) owns this function; bind it to vfio-pci or uio_pci_generic first ('virtio-admin bind \(address) --driver vfio-pci'), or force."
        case let .system(address, error):
            (address.map { "\($0): " } ?? "") + "\(error)."
        case let .vfio(address, message):
            (address.map { "\($0): " } ?? "") + "VFIO: \(message)."
        case let .barTooSmall(address, bar, size, needed):
            "\(address): BAR \(bar) is \(hex(size)) bytes; the capabilities need \(hex(needed))."
        case .noIOMMUAndNotRoot:
            "DMA without an IOMMU needs physical addresses from /proc/self/pagemap, which only root can read."
        case .hugePageRequired(let requested):
            "DMA at physical addresses (no IOMMU) needs a 2 MiB huge page for \(requested) bytes, and none is available (mlock does not pin small pages: compaction can move them); reserve one (echo 8 > /proc/sys/vm/nr_hugepages) or bind the function to vfio-pci."
        case .config(let error):
            error.description
        }
    }
}

// MARK: - sysfs resourceN

/// A BAR mapped from sysfs `resourceN` (function unbound or bound to uio_pci_generic).
package final class SysfsBARMapping: RegisterSpace, @unchecked Sendable {
    // SAFETY: `base` is a MAP_SHARED mapping of `length` bytes of the BAR, unmapped in deinit only.
    let mapping: MMIORegion
    package var length: Int { mapping.length }
    package let path: String

    package init(resourcePath: String, length: Int, address: PCIAddress) throws(DeviceAccessError) {
        let pointer: UnsafeMutableRawPointer
        do {
            let fd = try Sys.open(resourcePath, .readWrite, options: .synchronized)
            defer { Sys.close(fd) }
            pointer = try Sys.mapShared(fd, length: length, path: resourcePath)
        } catch { throw .system(address: address, error) }
        mapping = MMIORegion(base: pointer, length: length)
        path = resourcePath
    }

    deinit { Sys.unmap(mapping.base, length: mapping.length) }

    package func read8(at offset: Int) -> UInt8 { mapping.read8(at: offset) }
    package func read16(at offset: Int) -> UInt16 { mapping.read16(at: offset) }
    package func read32(at offset: Int) -> UInt32 { mapping.read32(at: offset) }
    package func write8(_ value: UInt8, at offset: Int) { mapping.write8(value, at: offset) }
    package func write16(_ value: UInt16, at offset: Int) { mapping.write16(value, at: offset) }
    package func write32(_ value: UInt32, at offset: Int) { mapping.write32(value, at: offset) }
}

// MARK: - pagemap (no IOMMU)

/// One entry of `/proc/self/pagemap`: bit 63 present, bits 0–54 the page frame number.
package struct PagemapEntry: Hashable, Sendable {
    package let raw: UInt64
    package init(raw: UInt64) { self.raw = raw }
    /// Decodes the 8 bytes read from pagemap, which are a u64 in the CPU's byte order.
    package init?(nativeBytes bytes: [UInt8]) {
        guard bytes.count == 8 else { return nil }
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes) }
        raw = value
    }
    package var isPresent: Bool { raw & (1 << 63) != 0 }
    package var frameNumber: UInt64 { raw & ((1 << 55) - 1) }
    /// The physical address of byte `offset` of the page, or nil when absent (or hidden: PFN 0 for non-root).
    package func physicalAddress(pageSize: Int, offset: Int = 0) -> UInt64? {
        guard isPresent, frameNumber != 0 else { return nil }
        return frameNumber * UInt64(pageSize) + UInt64(offset)
    }
}

/// Physically contiguous, locked memory with physical addresses from pagemap, for DMA
/// without an IOMMU (uio_pci_generic) — IOVA-as-PA, as DPDK and SPDK do it. It needs 2 MiB
/// huge pages (contiguous by construction, and never moved): small pages are refused with
/// ``DeviceAccessError/hugePageRequired(requested:)``, since mlock does not stop compaction
/// from moving their frames while the device uses the old physical address.
package final class PagemapDMAAllocator: DMAAllocator, @unchecked Sendable {
    struct Chunk { let base: UnsafeMutableRawPointer; let length: Int; let physical: UInt64; var used: Int }
    /// Bytes released within a chunk, to be handed out again.
    struct FreeRange: Equatable { var chunk: Int; var start: Int; var length: Int }
    private let lock = Lock()
    private var chunks: [Chunk] = []
    /// Released ranges, by chunk and start, neighbours merged (a range that reached a
    /// chunk's end went back to its bump pointer instead).
    private var free: [FreeRange] = []
    /// How memory was obtained ("2 MiB huge page").
    package private(set) var mode = ""
    let pageSize = Sys.pageSize

    /// Maps one locked, populated 2 MiB huge page (nil when none is available).
    let mapHugePage: @Sendable (Int) -> UnsafeMutableRawPointer?
    /// The physical address of a mapped page (pagemap; nil when hidden).
    let physicalAddress: @Sendable (UnsafeRawPointer) throws(DeviceAccessError) -> UInt64?

    package init() {
        // (Not shared with a forked child: no copy-on-write copy of DMA memory.)
        mapHugePage = { length in Sys.mapAnonymous(length: length, hugePage: true) }
        let pageSize = Sys.pageSize
        physicalAddress = { pointer throws(DeviceAccessError) in try Self.pagemapEntry(for: pointer, pageSize: pageSize).physicalAddress(pageSize: pageSize) }
    }

    /// For tests: a huge-page source that may fail, and physical addresses of their own.
    init(mapHugePage: @escaping @Sendable (Int) -> UnsafeMutableRawPointer?,
         physicalAddress: @escaping @Sendable (UnsafeRawPointer) throws(DeviceAccessError) -> UInt64? = { _ in nil }) {
        self.mapHugePage = mapHugePage
        self.physicalAddress = physicalAddress
    }

    deinit { for chunk in chunks { Sys.unmap(chunk.base, length: chunk.length, locked: true) } }

    /// Reads the pagemap entry of the page holding `pointer`.
    static func pagemapEntry(for pointer: UnsafeRawPointer, pageSize: Int) throws(DeviceAccessError) -> PagemapEntry {
        let index = Int64(UInt(bitPattern: pointer) / UInt(pageSize))
        let bytes: [UInt8]
        do {
            let fd = try Sys.open("/proc/self/pagemap", .readOnly)
            defer { Sys.close(fd) }
            bytes = try Sys.preadExactly(fd, count: 8, offset: index * 8, path: "/proc/self/pagemap")
        } catch { throw .system(address: nil, error) }
        return PagemapEntry(nativeBytes: bytes)!  // (preadExactly returned 8 bytes)
    }

    func makeChunk(length: Int) throws(DeviceAccessError) -> Chunk {
        let huge = 2 << 20
        guard length <= huge, let pointer = mapHugePage(huge) else { throw .hugePageRequired(requested: length) }
        guard let physical = try physicalAddress(pointer) else {
            Sys.unmap(pointer, length: huge, locked: true)
            throw .noIOMMUAndNotRoot
        }
        mode = "2 MiB huge page (IOVA = physical address)"
        return Chunk(base: pointer, length: huge, physical: physical, used: 0)
    }

    package func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { throw .invalidAlignment(alignment) }
        return try lock.withLock { () throws(DMAError) -> DMARegion in
            // Released memory first: the first range that holds `length` at `alignment`.
            for (position, range) in free.enumerated() {
                let start = (range.start + alignment - 1) & ~(alignment - 1)
                let end = start + length
                guard end <= range.start + range.length else { continue }
                free.remove(at: position)
                if start > range.start { insertFreeLocked(FreeRange(chunk: range.chunk, start: range.start, length: start - range.start)) }
                if end < range.start + range.length { insertFreeLocked(FreeRange(chunk: range.chunk, start: end, length: range.start + range.length - end)) }
                let pointer = chunks[range.chunk].base + start
                pointer.initializeMemory(as: UInt8.self, repeating: 0, count: length)
                return DMARegion(cpuAddress: pointer, deviceAddress: chunks[range.chunk].physical + UInt64(start), length: length)
            }
            for index in chunks.indices {
                let used = chunks[index].used
                let start = (used + alignment - 1) & ~(alignment - 1)
                if start + length <= chunks[index].length {
                    chunks[index].used = start + length
                    // The bytes skipped for the alignment can be handed out later.
                    if start > used { insertFreeLocked(FreeRange(chunk: index, start: used, length: start - used)) }
                    let pointer = chunks[index].base + start
                    pointer.initializeMemory(as: UInt8.self, repeating: 0, count: length)
                    return DMARegion(cpuAddress: pointer, deviceAddress: chunks[index].physical + UInt64(start), length: length)
                }
            }
            let chunk: Chunk
            do { chunk = try makeChunk(length: max(length, alignment)) } catch { throw .mappingFailed(reason: "\(error)") }
            chunks.append(chunk)
            chunks[chunks.count - 1].used = length
            chunk.base.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            return DMARegion(cpuAddress: chunk.base, deviceAddress: chunk.physical, length: length)
        }
    }

    /// Takes a region back to hand it out again (the device no longer uses it): commands
    /// larger than a command slot come and go, each with memory of its own. The huge pages
    /// themselves are unmapped when the allocator goes away.
    package func release(_ region: DMARegion) {
        guard region.length > 0 else { return }
        lock.withLock {
            guard let index = chunks.firstIndex(where: { region.cpuAddress >= $0.base && region.cpuAddress < $0.base + $0.length }) else { return }
            let range = FreeRange(chunk: index, start: region.cpuAddress - chunks[index].base, length: region.length)
            // A region released twice (or never handed out) is ignored: free again, it could
            // be handed to two users at once.
            guard range.start + range.length <= chunks[index].used,
                  !free.contains(where: { $0.chunk == index && $0.start < range.start + range.length && range.start < $0.start + $0.length })
            else { return }
            insertFreeLocked(range)
        }
    }

    /// Adds a free range, merged with its neighbours; one that reaches its chunk's bump
    /// pointer lowers it (lock held).
    private func insertFreeLocked(_ range: FreeRange) {
        var range = range
        let position = free.firstIndex { ($0.chunk, $0.start) > (range.chunk, range.start) } ?? free.count
        var at = position
        if at > 0, free[at - 1].chunk == range.chunk, free[at - 1].start + free[at - 1].length == range.start {
            range = FreeRange(chunk: range.chunk, start: free[at - 1].start, length: free[at - 1].length + range.length)
            free.remove(at: at - 1)
            at -= 1
        }
        if at < free.count, free[at].chunk == range.chunk, range.start + range.length == free[at].start {
            range.length += free[at].length
            free.remove(at: at)
        }
        // Neighbours are merged as they come, so no free range ends where this one starts.
        if range.start + range.length == chunks[range.chunk].used {
            chunks[range.chunk].used = range.start
        } else {
            free.insert(range, at: at)
        }
    }

    /// Released ranges and each chunk's bump pointer (for tests).
    var freeRanges: [FreeRange] { lock.withLock { free } }
    var chunksUsed: [Int] { lock.withLock { chunks.map(\.used) } }
}
