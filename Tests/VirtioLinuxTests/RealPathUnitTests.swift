import CLinuxVFIO
import Foundation
import Testing
import VirtioSimulator
import VirtioTestSupport
import VirtioTransport
@testable import PCIConfig
@testable import VirtioLinux
import VirtioSystem

/// Unit tests of the real-device path that need no device: pagemap entries, the IOVA
/// allocator, VFIO argument layouts, the in-use guard and bind plans on fake trees.
struct RealPathUnitTests {
    @Test func pagemapEntries() {
        // Bit 63 present, bits 0–54 PFN (digest §10).
        let entry = PagemapEntry(raw: 1 << 63 | 0x12345)
        #expect(entry.isPresent && entry.frameNumber == 0x12345)
        // (Optionals are unwrapped before #expect: Swift Testing's optional comparison trips AddressSanitizer.)
        #expect((entry.physicalAddress(pageSize: 4096, offset: 0x10) ?? 0) == 0x12345 * 4096 + 0x10)
        #expect(PagemapEntry(raw: 0x12345).physicalAddress(pageSize: 4096) == nil, "not present")
        #expect(PagemapEntry(raw: 1 << 63).physicalAddress(pageSize: 4096) == nil, "PFN hidden (non-root reader)")
        #expect(PagemapEntry(raw: 1 << 63 | 1 << 62 | 1 << 55 | 7).frameNumber == 7, "flag bits are not part of the PFN")
    }

    @Test func pagemapEntriesAreReadInNativeByteOrder() {
        // pagemap holds one u64 per page in the CPU's byte order (little-endian on x86-64
        // and arm64 Linux): present bit 63, PFN 0x12345.
        let value: UInt64 = 1 << 63 | 0x12345
        let native = withUnsafeBytes(of: value) { Array($0) }
        #expect(PagemapEntry(nativeBytes: native) == PagemapEntry(raw: value))
        #if _endian(little)
        #expect(native == [0x45, 0x23, 0x01, 0, 0, 0, 0, 0x80])
        #endif
        #expect(PagemapEntry(nativeBytes: [1, 2, 3]) == nil)
    }

    @Test func pagemapPathRefusesSmallPages() {
        // No huge page to be had: no fallback to small pages (compaction may move them).
        let allocator = PagemapDMAAllocator(mapHugePage: { _ in nil })
        #expect(throws: DMAError.mappingFailed(reason: DeviceAccessError.hugePageRequired(requested: 4096).description)) {
            _ = try allocator.allocate(length: 4096, alignment: 4096)
        }
        #expect(DeviceAccessError.hugePageRequired(requested: 4096).description.hasPrefix(
            "DMA at physical addresses (no IOMMU) needs a 2 MiB huge page for 4096 bytes, and none is available"))
    }

    /// Without an IOMMU, DMA memory comes from 2 MiB pages the allocator keeps; what is
    /// released (a command larger than a slot gives its memory back at each completion) is
    /// handed out again, so such commands do not use the pages up.
    @Test func pagemapPathHandsReleasedMemoryOutAgain() throws {
        let allocator = PagemapDMAAllocator(mapHugePage: { length in Sys.mapAnonymous(length: length) },
                                            physicalAddress: { UInt64(UInt(bitPattern: $0)) })
        let rings = try allocator.allocate(length: 8192, alignment: 4096)
        let slab = try allocator.allocate(length: 128 * 1024, alignment: 4096)
        var seen = Set<UInt64>()
        for round in 0..<2000 {
            let large = try allocator.allocate(length: 4032 + round % 3 * 8, alignment: 4096)
            #expect(large.cpuAddress.load(fromByteOffset: 100, as: UInt8.self) == 0, "zeroed")
            large.cpuAddress.storeBytes(of: 0xA5, toByteOffset: 100, as: UInt8.self)
            seen.insert(large.deviceAddress)
            allocator.release(large)
        }
        #expect(seen.count == 1, "one range, handed out again: \(seen.count) addresses")
        #expect(allocator.chunksUsed.count == 1, "2000 commands in one huge page")
        // Released neighbours merge; a range that reaches the bump pointer lowers it.
        let a = try allocator.allocate(length: 4096, alignment: 4096)
        let b = try allocator.allocate(length: 4096, alignment: 4096)
        let c = try allocator.allocate(length: 4096, alignment: 4096)
        allocator.release(b)
        allocator.release(b)
        allocator.release(a)
        #expect(allocator.freeRanges.count == 1 && allocator.freeRanges.first?.length == 8192, "a second release of b changes nothing")
        allocator.release(c)
        allocator.release(slab)
        #expect(allocator.freeRanges.isEmpty && allocator.chunksUsed == [8192], "everything after the rings is free again")
        // A free range hands out an aligned part and keeps the rest.
        let odd = try allocator.allocate(length: 100, alignment: 8)
        let aligned = try allocator.allocate(length: 4096, alignment: 4096)
        allocator.release(odd)
        let again = try allocator.allocate(length: 64, alignment: 64)
        #expect(again.deviceAddress == odd.deviceAddress && again.deviceAddress % 64 == 0)
        allocator.release(again)
        allocator.release(aligned)
        allocator.release(rings)
        #expect(allocator.freeRanges.isEmpty && allocator.chunksUsed == [0])
        allocator.release(rings)
        #expect(allocator.freeRanges.isEmpty && allocator.chunksUsed == [0], "released twice: ignored")
    }

    @Test func iovaWindowComesFromTheIOVARangeCapability() {
        // linux/vfio.h layouts, checked against the header itself.
        #expect(cvfio_iommu_info_cap_offset_offset() == 16 && cvfio_iommu_info_caps_flag() == 1 << 1)
        #expect(cvfio_iova_range_cap_id() == 1 && cvfio_iova_range_ranges_offset() == 16)
        // info: argsz 4096, flags CAPS, pgsizes 4 KiB, cap_offset 24; one capability at 24:
        // id 1, version 1, next 0, nr_iovas 2: [0, 0xfedfffff] and [0xfef00000, 2^48 − 1]
        // (the x86 MSI window 0xfee00000–0xfeefffff is a hole).
        var info = [UInt8](repeating: 0, count: 88)
        info.writeLE(UInt32(4096), at: 0)
        info.writeLE(UInt32(2), at: 4)
        info.writeLE(UInt64(4096), at: 8)
        info.writeLE(UInt32(24), at: 16)
        info.writeLE(UInt16(1), at: 24)
        info.writeLE(UInt16(1), at: 26)
        info.writeLE(UInt32(0), at: 28)
        info.writeLE(UInt32(2), at: 32)
        info.writeLE(UInt64(0), at: 40)
        info.writeLE(UInt64(0xfedf_ffff), at: 48)
        info.writeLE(UInt64(0xfef0_0000), at: 56)
        info.writeLE(UInt64(1 << 48 - 1), at: 64)
        let ranges = IOVAWindow.ranges(info: info) ?? []
        #expect(ranges.map { [$0.start, $0.end] } == [[0, 0xfedf_ffff], [0xfef0_0000, 1 << 48 - 1]])
        let window = IOVAWindow.choose(info: info)
        #expect(window.base == 0xfef0_0000 && window.limit == 1 << 48, "the larger range, end exclusive")
        // No capability (flags 0): the fixed fallback.
        info.writeLE(UInt32(0), at: 4)
        #expect(IOVAWindow.choose(info: info) == IOVAWindow.fallback)
        // A chain that points at itself does not hang.
        info.writeLE(UInt32(2), at: 4)
        info.writeLE(UInt16(9), at: 24)
        info.writeLE(UInt32(24), at: 28)
        #expect(IOVAWindow.ranges(info: info) == nil)
    }

    @Test func busMasterIsClearedAndReadBack() throws {
        // A config-space file (as sysfs `config` reads): command register le16 @0x04 =
        // 0x0006 (memory space + bus master). Clearing keeps memory space.
        let path = makeTemporaryDirectory("bme") + "/config"
        var bytes = [UInt8](repeating: 0, count: 64)
        bytes[4] = 0x06
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        #expect(clearBusMaster(fd: fd, configOffset: 0))
        let after = try #require(FileManager.default.contents(atPath: path))
        #expect(Array(after[4...5]) == [0x02, 0x00])
        #expect(clearBusMaster(fd: -1, configOffset: 0) == false, "an unreadable config space is reported, not assumed")
    }

    @Test func eventfdsAreClosedWhenOneCannotBeMade() throws {
        var made: [Int32] = []
        var closed: [Int32] = []
        #expect(throws: DeviceAccessError.self) {
            _ = try VFIODevice.makeEventFDs(count: 4, address: nil, make: {
                guard made.count < 2 else { errno = EMFILE; return -1 }
                let fd = cvfio_eventfd()
                made.append(fd)
                return fd
            }, release: { fd in
                closed.append(fd)
                close(fd)
            })
        }
        #expect(made.count == 2)
        // Each made eventfd was closed exactly once (checked through the release hook: a
        // test running beside this one may reuse the numbers at once).
        #expect(closed.sorted() == made.sorted())
    }

    @Test func iovaAllocation() {
        var allocator = IOVAAllocator(base: 0x1000, limit: 0x11000)
        let a = allocator.allocate(length: 0x1000, alignment: 0x1000)
        let b = allocator.allocate(length: 0x3000, alignment: 0x4000)
        #expect((a ?? 0) == 0x1000)
        #expect((b ?? 0) == 0x4000, "aligned up, leaving a hole")
        #expect((allocator.allocate(length: 0x2000, alignment: 0x1000) ?? 0) == 0x2000, "first fit takes the hole")
        #expect(allocator.allocate(length: 0x10000, alignment: 0x1000) == nil, "exhausted")
        allocator.release(start: 0x4000, length: 0x3000)
        allocator.release(start: 0x1000, length: 0x1000)
        allocator.release(start: 0x2000, length: 0x2000)
        #expect(allocator == IOVAAllocator(base: 0x1000, limit: 0x11000), "everything merged back into one range")
        #expect((allocator.allocate(length: 0x10000, alignment: 0x1000) ?? 0) == 0x1000)
    }

    @Test func vfioArgumentLayouts() {
        // struct vfio_iommu_type1_dma_map { argsz u32, flags u32, vaddr u64, iova u64, size u64 } (linux/vfio.h).
        #expect(cvfio_dma_map_size() == 32 && MemoryLayout<vfio_iommu_type1_dma_map>.size == 32)
        #expect(cvfio_dma_map_vaddr_offset() == 8 && MemoryLayout<vfio_iommu_type1_dma_map>.offset(of: \.vaddr) == 8)
        #expect(cvfio_dma_map_iova_offset() == 16 && MemoryLayout<vfio_iommu_type1_dma_map>.offset(of: \.iova) == 16)
        #expect(cvfio_dma_map_size_offset() == 24 && MemoryLayout<vfio_iommu_type1_dma_map>.offset(of: \.size) == 24)
        // struct vfio_region_info { argsz, flags, index, cap_offset u32; size u64; offset u64 }.
        #expect(cvfio_region_info_size() == 32 && MemoryLayout<vfio_region_info>.size == 32)
        #expect(cvfio_region_info_offset_offset() == 24 && MemoryLayout<vfio_region_info>.offset(of: \.offset) == 24)
        // struct vfio_irq_set { argsz, flags, index, start, count u32; data[] }, struct vfio_group_status { argsz, flags }.
        #expect(cvfio_irq_set_size() == 20 && MemoryLayout<vfio_irq_set>.size == 20)
        #expect(cvfio_group_status_size() == 8)
        // Request numbers: _IO(';', 100 + n) = 0x3b64 + n.
        #expect(cvfio_get_api_version() == 0x3b64)
        #expect(cvfio_group_get_device_fd() == 0x3b6a)
        #expect(cvfio_iommu_map_dma() == 0x3b71)
        #expect(cvfio_device_set_irqs() == 0x3b6e)
    }

    /// A fake tree with a virtio-blk disk, a virtio-net interface and a vsock, and fake proc tables.
    func fakeSystem(mounted: Bool, swap: Bool, up: Bool) throws -> (sys: String, proc: String) {
        let base = makeTemporaryDirectory("in-use")
        var tree = SimulatedSysfsTree(totalVFs: 1, numVFs: 0)
        tree.includeNonVirtioNeighbour = false
        tree.pfDriver = "virtio-pci"
        try tree.write(to: base + "/sys")
        let fm = FileManager.default
        let pci = base + "/sys/bus/pci/devices/0000:3b:00.0"
        try fm.createDirectory(atPath: pci + "/virtio3/block/vda/vda1", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: pci + "/virtio3/net/eth7", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: base + "/sys/class/net/eth7", withIntermediateDirectories: true)
        try (up ? "0x1003\n" : "0x1002\n").write(toFile: base + "/sys/class/net/eth7/flags", atomically: true, encoding: .utf8)
        try fm.createDirectory(atPath: base + "/proc", withIntermediateDirectories: true)
        try ("sysfs /sys sysfs rw 0 0\n" + (mounted ? "/dev/vda1 /srv\\040data ext4 rw 0 0\n" : ""))
            .write(toFile: base + "/proc/mounts", atomically: true, encoding: .utf8)
        try ("Filename Type Size Used Priority\n" + (swap ? "/dev/vda partition 1024 0 -2\n" : ""))
            .write(toFile: base + "/proc/swaps", atomically: true, encoding: .utf8)
        return (base + "/sys", base + "/proc")
    }

    @Test func inUseDetection() throws {
        let address = PCIAddress("0000:3b:00.0")!
        let busy = try fakeSystem(mounted: true, swap: true, up: true)
        let uses = InUseDetector(sysfsRoot: busy.sys, procRoot: busy.proc).uses(of: address)
        #expect(uses == [.mountedFilesystem(disk: "vda1", mountPoint: "/srv data"), .swap(disk: "vda"), .interfaceUp(name: "eth7")])
        let idle = try fakeSystem(mounted: false, swap: false, up: false)
        #expect(InUseDetector(sysfsRoot: idle.sys, procRoot: idle.proc).uses(of: address).isEmpty)
    }

    @Test func bindPlansAndTheGuard() throws {
        let address = PCIAddress("0000:3b:00.0")!
        let busy = try fakeSystem(mounted: false, swap: false, up: true)
        let binder = DeviceBinder(sysfsRoot: busy.sys, procRoot: busy.proc, timeoutMilliseconds: 0)
        #expect(throws: BindingError.inUse(address: address, driver: "virtio-pci", uses: [.interfaceUp(name: "eth7")])) {
            try binder.bindPlan(address, to: .vfioPCI, force: false)
        }
        #expect(BindingError.inUse(address: address, driver: "virtio-pci", uses: [.interfaceUp(name: "eth7")]).description
                == "0000:3b:00.0: refusing to take the function from virtio-pci: network interface eth7 is up; stop using it first, or pass --force.")
        let forced = try binder.bindPlan(address, to: .vfioPCI, force: true)
        let directory = busy.sys + "/bus/pci/devices/0000:3b:00.0"
        #expect(forced == [BindingStep(path: directory + "/driver_override", value: "vfio-pci"),
                           BindingStep(path: directory + "/driver/unbind", value: "0000:3b:00.0"),
                           BindingStep(path: busy.sys + "/bus/pci/drivers_probe", value: "0000:3b:00.0")])
        #expect(try binder.restorePlan(address) == [BindingStep(path: directory + "/driver_override", value: "\n"),
                                                     BindingStep(path: directory + "/driver/unbind", value: "0000:3b:00.0"),
                                                     BindingStep(path: busy.sys + "/bus/pci/drivers_probe", value: "0000:3b:00.0")])
        // The driver is not loaded in the fake tree: a clear error, nothing written.
        #expect(throws: BindingError.driverNotLoaded(driver: "vfio-pci", path: busy.sys + "/bus/pci/drivers/vfio-pci")) {
            try binder.bind(address, to: .vfioPCI, force: true)
        }
        #expect(try String(contentsOfFile: directory + "/driver_override", encoding: .utf8) == "(null)\n")
    }

    @Test func nonVirtioIsRefused() throws {
        let root = makeTemporaryDirectory("bind-nonvirtio")
        try SimulatedSysfsTree(totalVFs: 1, numVFs: 0).write(to: root)
        #expect(throws: BindingError.notVirtio(address: SimulatedSysfsTree.neighbourAddress)) {
            try DeviceBinder(sysfsRoot: root).bindPlan(SimulatedSysfsTree.neighbourAddress, to: .vfioPCI, force: true)
        }
    }

    @Test func kernelOwnedFunctionsAreNotOpened() throws {
        // This host's virtio functions are bound to virtio-pci: the opener refuses before mapping anything.
        let functions = try SysfsEnumerator().functions().filter { $0.driver != nil && $0.driver != "vfio-pci" && $0.driver != "uio_pci_generic" }
        guard let function = functions.first else { print("skipped: no kernel-bound virtio function here"); return }
        #expect {
            try RealDeviceOpener().open(function.address)
        } throws: { error in
            guard case DeviceAccessError.kernelDriverBound(let address, let driver) = error else {
                // Without root, reading the config space fails first; that is a refusal too.
                if case DeviceAccessError.config = error { return true }
                return false
            }
            return address == function.address && driver == function.driver
        }
    }
}
