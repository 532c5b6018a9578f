import PCIConfig
import VirtioSpec
import VirtioTransport
import SystemPackage
import VirtioSystem

/// A real virtio function opened for driving from user space: its decoded config space,
/// its BARs as register spaces, DMA memory the device can reach, and how that was done.
package struct OpenedFunction: @unchecked Sendable {
    package let address: PCIAddress
    package let config: PCIConfigSpace
    package let bars: [Int: any RegisterSpace]
    package let allocator: any DMAAllocator
    /// How the device is reached and DMA memory is obtained, in words ("VFIO, type-1 IOMMU, group 5").
    package let mode: String
    /// Set when the function is driven through VFIO (for MSI-X eventfds).
    package let vfio: VFIODevice?
    /// Clears Bus Master Enable (VFIO config region or sysfs `config`); returns whether it
    /// reads clear. For a device that does not confirm its reset.
    package let disableBusMaster: @Sendable () -> Bool
    /// Sets Bus Master Enable (the admin driver, at every bring-up once the reset is
    /// confirmed, so also after ``disableBusMaster``); returns whether it did.
    package let enableBusMaster: @Sendable () -> Bool
}

/// Opens real functions: through VFIO when bound to vfio-pci (type-1 IOMMU DMA), through
/// sysfs `resourceN` when bound to uio_pci_generic or unbound (locked memory, physical
/// addresses from pagemap). A function a kernel driver owns is refused unless forced.
package struct RealDeviceOpener: Sendable {
    package var sysfsRoot: String
    package init(sysfsRoot: String = "/sys") { self.sysfsRoot = sysfsRoot }

    /// Opens `address`. With `busMaster`, Bus Master Enable is set at once; without it the
    /// caller sets it (``OpenedFunction/enableBusMaster``) once it has reset the device: a
    /// device left mid-DMA by an earlier owner must not reach memory before that reset.
    package func open(_ address: PCIAddress, force: Bool = false, busMaster: Bool = true) throws(DeviceAccessError) -> OpenedFunction {
        let enumerator = SysfsEnumerator(root: sysfsRoot)
        let details: FunctionDetails
        do { details = try enumerator.details(of: address) } catch { throw .config(error) }
        let driver = details.function.driver
        let needed = Set(details.config.virtioCapabilities.filter { $0.cfgType != .pci }.map(\.bar))
        if driver == UserSpaceDriver.vfioPCI.rawValue {
            let device = try VFIODevice(address: address, sysfsRoot: sysfsRoot)
            if busMaster { try device.enableBusMaster() }
            var bars: [Int: any RegisterSpace] = [:]
            for index in needed.sorted() { bars[index] = try device.bar(index) }
            try checkSizes(details, bars: bars)
            return OpenedFunction(address: address, config: details.config, bars: bars, allocator: device.dmaAllocator(),
                                  mode: "VFIO with the type-1 IOMMU (IOMMU group \(device.group)); DMA at IOVAs the driver maps", vfio: device,
                                  disableBusMaster: { device.disableBusMaster() },
                                  enableBusMaster: { (try? device.enableBusMaster()) != nil })
        }
        if let driver, driver != UserSpaceDriver.uioPCIGeneric.rawValue, !force {
            throw .kernelDriverBound(address: address, driver: driver)
        }
        var bars: [Int: any RegisterSpace] = [:]
        for index in needed.sorted() {
            let size = index < details.barSizes.count ? details.barSizes[index] : 0
            guard size > 0 else { throw .barTooSmall(address: address, bar: index, size: 0, needed: 1) }
            bars[index] = try SysfsBARMapping(resourcePath: enumerator.directory(of: address) + "/resource\(index)", length: Int(size), address: address)
        }
        try checkSizes(details, bars: bars)
        if busMaster { try enableBusMaster(address, directory: enumerator.directory(of: address)) }
        let reason = driver == nil ? "the function is unbound" : "uio_pci_generic gives no IOMMU mapping"
        let configPath = enumerator.directory(of: address) + "/" + SysfsAttribute.config
        return OpenedFunction(address: address, config: details.config, bars: bars, allocator: PagemapDMAAllocator(),
                              mode: "sysfs resourceN mapping without an IOMMU (\(reason)); DMA at physical addresses from /proc/self/pagemap", vfio: nil,
                              disableBusMaster: {
                                  guard let fd = try? Sys.open(configPath, .readWrite) else { return false }
                                  defer { Sys.close(fd) }
                                  return clearBusMaster(fd: fd.rawValue, configOffset: 0)
                              },
                              enableBusMaster: { [self] in (try? enableBusMaster(address, directory: enumerator.directory(of: address))) != nil })
    }

    /// Sets Bus Master Enable through the sysfs `config` file (the function is driven from
    /// user space, so nobody else does).
    func enableBusMaster(_ address: PCIAddress, directory: String) throws(DeviceAccessError) {
        let path = directory + "/" + SysfsAttribute.config
        let fd: FileDescriptor
        do { fd = try Sys.open(path, .readWrite) } catch { throw .system(address: address, error) }
        defer { Sys.close(fd) }
        try setBusMaster(fd: fd.rawValue, configOffset: 0, path: path, address: address)
    }

    /// Every capability's structure must lie inside the BAR as mapped.
    func checkSizes(_ details: FunctionDetails, bars: [Int: any RegisterSpace]) throws(DeviceAccessError) {
        for capability in details.config.virtioCapabilities where capability.cfgType != .pci {
            guard let bar = bars[capability.bar] else { continue }
            let end = capability.offset + capability.length
            if end > UInt64(bar.length) {
                throw .barTooSmall(address: details.function.address, bar: capability.bar, size: UInt64(bar.length), needed: end)
            }
        }
    }
}
