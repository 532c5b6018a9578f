import CLinuxVFIO
import PCIConfig
import SystemPackage
import VirtioSystem
import VirtioSpec
import VirtioTransport

/// First-fit allocator of I/O virtual addresses for VFIO DMA mappings.
package struct IOVAAllocator: Sendable, Hashable {
    /// Free ranges (start, length), sorted by start, never adjacent (they are merged).
    package private(set) var free: [(start: UInt64, length: UInt64)]
    package let base: UInt64
    package let limit: UInt64

    package static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.base == rhs.base && lhs.limit == rhs.limit && lhs.free.elementsEqual(rhs.free) { $0.start == $1.start && $0.length == $1.length }
    }
    package func hash(into hasher: inout Hasher) { hasher.combine(base); hasher.combine(limit) }

    /// Addresses in [base, limit).
    package init(base: UInt64, limit: UInt64) {
        precondition(limit > base)
        self.base = base
        self.limit = limit
        free = [(base, limit - base)]
    }

    /// Takes `length` bytes aligned to `alignment` (a power of two); nil when none is left.
    package mutating func allocate(length: UInt64, alignment: UInt64) -> UInt64? {
        precondition(length > 0 && alignment > 0 && alignment & (alignment - 1) == 0)
        for (index, range) in free.enumerated() {
            let start = (range.start + alignment - 1) & ~(alignment - 1)
            let end = range.start + range.length
            guard start < end, end - start >= length else { continue }
            var replacement: [(start: UInt64, length: UInt64)] = []
            if start > range.start { replacement.append((range.start, start - range.start)) }
            if start + length < end { replacement.append((start + length, end - start - length)) }
            free.replaceSubrange(index...index, with: replacement)
            return start
        }
        return nil
    }

    /// Returns a range, merging it with its neighbours.
    package mutating func release(start: UInt64, length: UInt64) {
        precondition(start >= base && start + length <= limit)
        let index = free.firstIndex { $0.start > start } ?? free.count
        precondition(index == 0 || free[index - 1].start + free[index - 1].length <= start, "double free of IOVA")
        free.insert((start, length), at: index)
        if index + 1 < free.count, free[index].start + free[index].length == free[index + 1].start {
            free[index].length += free[index + 1].length
            free.remove(at: index + 1)
        }
        if index > 0, free[index - 1].start + free[index - 1].length == free[index].start {
            free[index - 1].length += free[index].length
            free.remove(at: index)
        }
    }
}

/// A PCI function opened through VFIO: container → group → device (digest §10).
package final class VFIODevice: @unchecked Sendable {
    package let address: PCIAddress
    package let group: Int
    let containerFD: Int32
    let groupFD: Int32
    package let deviceFD: Int32

    /// Opens the function, which must be bound to vfio-pci.
    package init(address: PCIAddress, sysfsRoot: String = "/sys") throws(DeviceAccessError) {
        self.address = address
        let directory = SysfsEnumerator(root: sysfsRoot).directory(of: address)
        guard let groupName = Sys.readLink(directory + "/iommu_group").map(baseName), let group = Int(groupName) else {
            throw .vfio(address: address, message: "the function has no IOMMU group (no IOMMU, and this kernel has no VFIO no-IOMMU mode)")
        }
        self.group = group
        let container: Int32
        do { container = try Sys.open("/dev/vfio/vfio", .readWrite).rawValue } catch { throw .system(address: address, error) }
        var groupFD: Int32 = -1
        do {
            let version = try Sys.ioctl(container, cvfio_get_api_version(), value: 0, call: "VFIO_GET_API_VERSION", path: "/dev/vfio/vfio")
            guard version == VFIO_API_VERSION else {
                throw DeviceAccessError.vfio(address: address, message: "API version \(version); expected \(VFIO_API_VERSION)")
            }
            guard try Sys.ioctl(container, cvfio_check_extension(), value: UInt(VFIO_TYPE1v2_IOMMU), call: "VFIO_CHECK_EXTENSION", path: "/dev/vfio/vfio") == 1 else {
                throw DeviceAccessError.vfio(address: address, message: "the container does not support the type-1 v2 IOMMU")
            }
            groupFD = try Sys.open("/dev/vfio/\(group)", .readWrite).rawValue
            var status = vfio_group_status()
            status.argsz = UInt32(MemoryLayout<vfio_group_status>.size)
            try Sys.ioctl(groupFD, cvfio_group_get_status(), &status, call: "VFIO_GROUP_GET_STATUS", path: "/dev/vfio/\(group)")
            guard status.flags & UInt32(VFIO_GROUP_FLAGS_VIABLE) != 0 else {
                throw DeviceAccessError.vfio(address: address, message: "IOMMU group \(group) is not viable (every device in it must be bound to vfio-pci or unbound)")
            }
            var containerValue = container
            try Sys.ioctl(groupFD, cvfio_group_set_container(), &containerValue, call: "VFIO_GROUP_SET_CONTAINER", path: "/dev/vfio/\(group)")
            try Sys.ioctl(container, cvfio_set_iommu(), value: UInt(VFIO_TYPE1v2_IOMMU), call: "VFIO_SET_IOMMU", path: "/dev/vfio/vfio")
            deviceFD = try Sys.ioctl(groupFD, cvfio_group_get_device_fd(), string: address.description, call: "VFIO_GROUP_GET_DEVICE_FD", path: "/dev/vfio/\(group)")
        } catch {
            if groupFD >= 0 { Sys.closeFD(groupFD) }
            Sys.closeFD(container)
            switch error {
            case let error as SystemCallError: throw .system(address: address, error)
            case let error as DeviceAccessError: throw error
            default: throw .vfio(address: address, message: "\(error)")
            }
        }
        containerFD = container
        self.groupFD = groupFD
    }

    deinit {
        Sys.closeFD(deviceFD)
        Sys.closeFD(groupFD)
        Sys.closeFD(containerFD)
    }

    /// Region info (BARs 0–5 = indices 0–5, config = 7).
    package func regionInfo(_ index: UInt32) throws(DeviceAccessError) -> vfio_region_info {
        var info = vfio_region_info()
        info.argsz = UInt32(MemoryLayout<vfio_region_info>.size)
        info.index = index
        do { try Sys.ioctl(deviceFD, cvfio_device_get_region_info(), &info, call: "VFIO_DEVICE_GET_REGION_INFO", path: "VFIO region \(index)") } catch {
            throw .system(address: address, error)
        }
        return info
    }

    /// Sets Bus Master Enable in the command register (through config region 7): VFIO leaves
    /// it to user space, and a device without it cannot DMA.
    package func enableBusMaster() throws(DeviceAccessError) {
        let info = try regionInfo(UInt32(VFIO_PCI_CONFIG_REGION_INDEX))
        try setBusMaster(fd: deviceFD, configOffset: Int64(info.offset), path: "vfio config", address: address)
    }

    /// Clears Bus Master Enable through the VFIO config region; returns whether it reads clear.
    package func disableBusMaster() -> Bool {
        guard let info = try? regionInfo(UInt32(VFIO_PCI_CONFIG_REGION_INDEX)) else { return false }
        return clearBusMaster(fd: deviceFD, configOffset: Int64(info.offset))
    }

    /// Config space through region 7.
    package func readConfig() throws(DeviceAccessError) -> [UInt8] {
        let info = try regionInfo(UInt32(VFIO_PCI_CONFIG_REGION_INDEX))
        do { return try Sys.preadExactly(FileDescriptor(rawValue: deviceFD), count: Int(min(info.size, 4096)), offset: Int64(info.offset), path: "vfio config") } catch {
            throw .system(address: address, error)
        }
    }

    /// BAR `index` as a register space: mmap where the region allows it whole, pread/pwrite otherwise.
    package func bar(_ index: Int) throws(DeviceAccessError) -> any RegisterSpace {
        let info = try regionInfo(UInt32(index))
        guard info.size > 0 else { throw .vfio(address: address, message: "BAR \(index) is not implemented") }
        let mappable = info.flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0 && info.flags & UInt32(VFIO_REGION_INFO_FLAG_CAPS) == 0
        if mappable {
            if let pointer = try? Sys.mapShared(FileDescriptor(rawValue: deviceFD), length: Int(info.size), offset: Int64(info.offset), path: "VFIO BAR \(index)") {
                return VFIOMappedRegion(region: MMIORegion(base: pointer, length: Int(info.size)))
            }
        }
        return VFIORegionIO(fd: deviceFD, offset: Int64(info.offset), length: Int(info.size))
    }

    /// `count` eventfds; if one cannot be made, those already made are closed (none leak).
    /// - Parameter make: makes one eventfd, or returns -1 with errno set.
    static func makeEventFDs(count: Int, address: PCIAddress?, make: () -> Int32 = { (try? Sys.eventFD()) ?? -1 },
                             release: (Int32) -> Void = { Sys.closeFD($0) }) throws(DeviceAccessError) -> [Int32] {
        var fds: [Int32] = []
        for _ in 0..<count {
            let fd = make()
            guard fd >= 0 else {
                let saved = Sys.lastError
                fds.forEach(release)
                throw .system(address: address, SystemCallError(call: "eventfd", path: "", errno: saved))
            }
            fds.append(fd)
        }
        return fds
    }

    /// Maps DMA memory for the device through the type-1 IOMMU.
    package func dmaAllocator() -> VFIODMAAllocator { VFIODMAAllocator(containerFD: containerFD, owner: self) }

    /// Enables `count` MSI-X vectors, each signalling an eventfd (returned in vector order).
    package func enableMSIX(count: Int) throws(DeviceAccessError) -> [Int32] {
        let fds = try Self.makeEventFDs(count: count, address: address)
        let size = MemoryLayout<vfio_irq_set>.size + 4 * count
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        let set = buffer.bindMemory(to: vfio_irq_set.self, capacity: 1)
        set.pointee.argsz = UInt32(size)
        set.pointee.flags = UInt32(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER)
        set.pointee.index = UInt32(VFIO_PCI_MSIX_IRQ_INDEX)
        set.pointee.start = 0
        set.pointee.count = UInt32(count)
        for (index, fd) in fds.enumerated() {
            buffer.storeBytes(of: fd, toByteOffset: MemoryLayout<vfio_irq_set>.size + 4 * index, as: Int32.self)
        }
        do { try Sys.ioctl(deviceFD, cvfio_device_set_irqs(), buffer, call: "VFIO_DEVICE_SET_IRQS", path: "VFIO MSI-X") } catch {
            fds.forEach { Sys.closeFD($0) }
            throw .system(address: address, error)
        }
        return fds
    }
}

final class VFIOMappedRegion: RegisterSpace, @unchecked Sendable {
    let region: MMIORegion
    init(region: MMIORegion) { self.region = region }
    deinit { Sys.unmap(region.base, length: region.length) }
    var length: Int { region.length }
    func read8(at offset: Int) -> UInt8 { region.read8(at: offset) }
    func read16(at offset: Int) -> UInt16 { region.read16(at: offset) }
    func read32(at offset: Int) -> UInt32 { region.read32(at: offset) }
    func write8(_ value: UInt8, at offset: Int) { region.write8(value, at: offset) }
    func write16(_ value: UInt16, at offset: Int) { region.write16(value, at: offset) }
    func write32(_ value: UInt32, at offset: Int) { region.write32(value, at: offset) }
}

/// A VFIO region accessed with pread/pwrite (regions that cannot be mapped). A failed
/// access reads all ones, as a vanished device would.
final class VFIORegionIO: RegisterSpace, @unchecked Sendable {
    let fd: Int32
    let offset: Int64
    let length: Int
    init(fd: Int32, offset: Int64, length: Int) {
        self.fd = fd
        self.offset = offset
        self.length = length
    }
    func read<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
        precondition(at >= 0 && at + MemoryLayout<T>.size <= length)
        return Sys.preadInteger(FileDescriptor(rawValue: fd), T.self, offset: offset + Int64(at)) ?? T.max
    }
    func write<T: FixedWidthInteger>(_ value: T, _ at: Int) {
        precondition(at >= 0 && at + MemoryLayout<T>.size <= length)
        Sys.pwriteInteger(FileDescriptor(rawValue: fd), value, offset: offset + Int64(at))
    }
    func read8(at offset: Int) -> UInt8 { read(offset, UInt8.self) }
    func read16(at offset: Int) -> UInt16 { read(offset, UInt16.self) }
    func read32(at offset: Int) -> UInt32 { read(offset, UInt32.self) }
    func write8(_ value: UInt8, at offset: Int) { write(value, offset) }
    func write16(_ value: UInt16, at offset: Int) { write(value, offset) }
    func write32(_ value: UInt32, at offset: Int) { write(value, offset) }
}

/// DMA memory mapped into the device's IOMMU domain (VFIO type-1), with IOVAs from an
/// ``IOVAAllocator``.
package final class VFIODMAAllocator: DMAAllocator, @unchecked Sendable {
    let containerFD: Int32
    let owner: VFIODevice
    private let lock = Lock()
    private var iovas: IOVAAllocator
    private var mappings: [UInt64: (pointer: UnsafeMutableRawPointer, length: Int)] = [:]
    let pageSize = Sys.pageSize

    init(containerFD: Int32, owner: VFIODevice) {
        self.containerFD = containerFD
        self.owner = owner
        // The IOVA window comes from the IOMMU's IOVA-range capability (reserved regions
        // such as the MSI window are holes in it), not from a constant.
        var info = [UInt8](repeating: 0, count: 4096)
        info.writeLE(UInt32(info.count), at: 0)
        let window: (base: UInt64, limit: UInt64)
        if (try? info.withUnsafeMutableBytes({ buffer throws(SystemCallError) in
            try Sys.ioctl(containerFD, cvfio_iommu_get_info(), buffer.baseAddress, call: "VFIO_IOMMU_GET_INFO", path: "/dev/vfio/vfio")
        })) != nil {
            window = IOVAWindow.choose(info: info)
        } else {
            window = IOVAWindow.fallback
        }
        iovas = IOVAAllocator(base: window.base, limit: window.limit)
    }

    deinit {
        for (iova, mapping) in mappings { unmap(iova: iova, length: mapping.length); Sys.unmap(mapping.pointer, length: mapping.length) }
    }

    package func allocate(length: Int, alignment: Int) throws(DMAError) -> DMARegion {
        guard alignment > 0, alignment & (alignment - 1) == 0 else { throw .invalidAlignment(alignment) }
        let rounded = (length + pageSize - 1) / pageSize * pageSize
        // (A forked child gets no copy-on-write copy of memory the device writes.)
        guard let pointer = Sys.mapAnonymous(length: rounded) else { throw .outOfMemory(requested: length) }
        guard let iova = lock.withLock({ iovas.allocate(length: UInt64(rounded), alignment: UInt64(max(alignment, pageSize))) }) else {
            Sys.unmap(pointer, length: rounded)
            throw .outOfMemory(requested: length)
        }
        var map = vfio_iommu_type1_dma_map()
        map.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_map>.size)
        map.flags = UInt32(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)
        map.vaddr = UInt64(UInt(bitPattern: pointer))
        map.iova = iova
        map.size = UInt64(rounded)
        do { try Sys.ioctl(containerFD, cvfio_iommu_map_dma(), &map, call: "VFIO_IOMMU_MAP_DMA", path: "/dev/vfio/vfio") } catch {
            lock.withLock { iovas.release(start: iova, length: UInt64(rounded)) }
            Sys.unmap(pointer, length: rounded)
            throw .mappingFailed(reason: "VFIO_IOMMU_MAP_DMA of \(rounded) bytes at IOVA \(hex(iova)) failed: \(error.errno)")
        }
        lock.withLock { mappings[iova] = (pointer, rounded) }
        return DMARegion(cpuAddress: pointer, deviceAddress: iova, length: length)
    }

    func unmap(iova: UInt64, length: Int) {
        var unmap = vfio_iommu_type1_dma_unmap()
        unmap.argsz = UInt32(MemoryLayout<vfio_iommu_type1_dma_unmap>.size)
        unmap.iova = iova
        unmap.size = UInt64(length)
        _ = try? Sys.ioctl(containerFD, cvfio_iommu_unmap_dma(), &unmap, call: "VFIO_IOMMU_UNMAP_DMA", path: "/dev/vfio/vfio")
    }

    package func release(_ region: DMARegion) {
        guard let mapping = lock.withLock({ mappings.removeValue(forKey: region.deviceAddress) }) else { return }
        unmap(iova: region.deviceAddress, length: mapping.length)
        Sys.unmap(mapping.pointer, length: mapping.length)
        lock.withLock { iovas.release(start: region.deviceAddress, length: UInt64(mapping.length)) }
    }
}

/// Sets Memory Space and Bus Master Enable in the PCI command register of config space
/// reached through `fd` at `configOffset` (a VFIO config region or sysfs `config`).
func setBusMaster(fd: Int32, configOffset: Int64, path: String, address: PCIAddress) throws(DeviceAccessError) {
    let offset = configOffset + Int64(PCIHeader.command)
    let file = FileDescriptor(rawValue: fd)
    let command: UInt16
    do { command = try Sys.preadExactly(file, count: 2, offset: offset, path: path).readLE(UInt16.self, at: 0) } catch {
        throw .system(address: address, error)
    }
    let wanted = command | PCIHeader.commandMemorySpace | PCIHeader.commandBusMaster
    guard wanted != command else { return }
    guard Sys.pwriteInteger(file, wanted, offset: offset) else {
        throw .system(address: address, SystemCallError(call: "pwrite", path: path + " at offset \(hex(UInt64(offset)))", errno: .ioError))
    }
}

/// The IOVA window of a VFIO type-1 container, from `VFIO_IOMMU_GET_INFO`'s IOVA-range
/// capability (linux/vfio.h): `struct vfio_iommu_type1_info { u32 argsz; u32 flags;
/// u64 iova_pgsizes; u32 cap_offset; u32 pad; }`, then a chain of `struct
/// vfio_info_cap_header { u16 id; u16 version; u32 next; }`; the IOVA-range capability
/// (id 1) holds `u32 nr_iovas; u32 reserved; { u64 start; u64 end; }[nr_iovas]` (end inclusive).
enum IOVAWindow {
    /// What is used when the kernel reports no ranges (old kernels).
    static let fallback: (base: UInt64, limit: UInt64) = (0x1000_0000, 0x80_0000_0000)
    static let capsFlag: UInt32 = 1 << 1  // VFIO_IOMMU_INFO_CAPS
    static let iovaRangeID: UInt16 = 1    // VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE

    /// The valid IOVA ranges listed in `info` (`nil` when there is no such capability).
    static func ranges(info: [UInt8]) -> [(start: UInt64, end: UInt64)]? {
        guard info.count >= 24, info.readLE(UInt32.self, at: 4) & capsFlag != 0 else { return nil }
        var offset = Int(info.readLE(UInt32.self, at: 16))
        var seen = 0
        while offset != 0, offset >= 24, offset + 8 <= info.count, seen < 64 {
            seen += 1
            let id = info.readLE(UInt16.self, at: offset)
            if id == iovaRangeID, offset + 16 <= info.count {
                let count = Int(info.readLE(UInt32.self, at: offset + 8))
                var ranges: [(UInt64, UInt64)] = []
                for index in 0..<min(count, 1024) {
                    let at = offset + 16 + index * 16
                    guard at + 16 <= info.count else { break }
                    ranges.append((info.readLE(UInt64.self, at: at), info.readLE(UInt64.self, at: at + 8)))
                }
                return ranges
            }
            offset = Int(info.readLE(UInt32.self, at: offset + 4))
        }
        return nil
    }

    /// The largest valid range, kept above the first 64 KiB (IOVA 0 must never be handed
    /// out) and below 2^63; the fallback when the kernel lists none.
    static func choose(info: [UInt8]) -> (base: UInt64, limit: UInt64) {
        guard let ranges = ranges(info: info) else { return fallback }
        var best: (base: UInt64, limit: UInt64)?
        for (start, end) in ranges {
            let base = max(start, 0x1_0000)
            let limit = end == .max ? UInt64(1) << 63 : min(end + 1, UInt64(1) << 63)
            guard limit > base else { continue }
            if best.map({ limit - base > $0.limit - $0.base }) ?? true { best = (base, limit) }
        }
        return best ?? fallback
    }
}

/// Clears Bus Master Enable in the command register (config space through `fd` at
/// `configOffset`) and reads it back: the device can start no more DMA. What the admin
/// driver does when a device does not confirm its reset, before it lets memory go.
/// - Returns: whether the bit reads clear afterwards.
func clearBusMaster(fd: Int32, configOffset: Int64) -> Bool {
    let offset = configOffset + Int64(PCIHeader.command)
    let file = FileDescriptor(rawValue: fd)
    guard let command = Sys.preadInteger(file, UInt16.self, offset: offset),
          Sys.pwriteInteger(file, command & ~PCIHeader.commandBusMaster, offset: offset),
          let readBack = Sys.preadInteger(file, UInt16.self, offset: offset) else { return false }
    return readBack & PCIHeader.commandBusMaster == 0
}
