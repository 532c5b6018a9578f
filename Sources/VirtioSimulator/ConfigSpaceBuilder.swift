import PCIConfig
import VirtioSpec

/// Writes PCI config-space structures byte by byte: the device maker's side of the
/// layouts that ``PCIConfigSpace`` decodes. Offsets come from VirtioSpec's layout tables.
package struct ConfigSpaceBuilder: Sendable {
    package private(set) var bytes: [UInt8]
    /// Offset of the next free byte in the standard capability area.
    private var nextCapability = PCIHeader.size
    private var lastCapabilityNext: Int = PCIHeader.capabilitiesPointer
    private var lastExtendedCapability: Int?
    private var nextExtendedCapability = PCIExtendedCapabilityLayout.start

    /// A config space of `size` bytes (256 for PCI, 4096 for PCIe) with a type-0 header.
    package init(size: Int = PCIHeader.extendedConfigSize, vendorID: UInt16, deviceID: UInt16, classCode: UInt32,
                revision: UInt8 = 1, subsystemVendorID: UInt16, subsystemID: UInt16) {
        bytes = [UInt8](repeating: 0, count: size)
        bytes.writeLE(vendorID, at: PCIHeader.vendorID)
        bytes.writeLE(deviceID, at: PCIHeader.deviceID)
        bytes.writeLE(PCIHeader.commandMemorySpace | PCIHeader.commandBusMaster, at: PCIHeader.command)
        bytes[PCIHeader.revisionID] = revision
        bytes[PCIHeader.classCode] = UInt8(classCode & 0xff)
        bytes[PCIHeader.classCode + 1] = UInt8((classCode >> 8) & 0xff)
        bytes[PCIHeader.classCode + 2] = UInt8((classCode >> 16) & 0xff)
        bytes.writeLE(subsystemVendorID, at: PCIHeader.subsystemVendorID)
        bytes.writeLE(subsystemID, at: PCIHeader.subsystemID)
    }

    /// Programs BAR `index` as a 64-bit non-prefetchable memory BAR at `address`.
    package mutating func setBAR64(_ index: Int, address: UInt64, prefetchable: Bool = false) {
        precondition(index + 1 < PCIHeader.barCount)
        let low = UInt32(truncatingIfNeeded: address) & PCIBARBits.memoryAddressMask
        bytes.writeLE(low | PCIBARBits.memoryType64 | (prefetchable ? PCIBARBits.prefetchable : 0), at: PCIHeader.bar0 + 4 * index)
        bytes.writeLE(UInt32(truncatingIfNeeded: address >> 32), at: PCIHeader.bar0 + 4 * index + 4)
    }

    /// Appends a standard capability of `length` bytes (id and next are filled in) and
    /// returns its offset; `body` writes the rest, relative to the capability.
    @discardableResult
    package mutating func addCapability(_ id: PCICapabilityID, length: Int, body: (inout CapabilityWriter) -> Void = { _ in }) -> Int {
        let offset = nextCapability
        precondition(offset + length <= PCIHeader.legacyConfigSize, "capability area full")
        bytes[lastCapabilityNext] = UInt8(offset)
        var status = bytes.readLE(UInt16.self, at: PCIHeader.status)
        status |= PCIHeader.statusCapabilitiesList
        bytes.writeLE(status, at: PCIHeader.status)
        bytes[offset + PCICapabilityLayout.id] = id.rawValue
        bytes[offset + PCICapabilityLayout.next] = 0
        var writer = CapabilityWriter(base: offset, bytes: bytes)
        body(&writer)
        bytes = writer.bytes
        lastCapabilityNext = offset + PCICapabilityLayout.next
        nextCapability = (offset + length + 3) & ~3
        return offset
    }

    /// Appends a virtio vendor capability. `notifyOffMultiplier` makes it the 20-byte notify
    /// variant; `pciCfg` the 20-byte PCI-config-access variant.
    @discardableResult
    package mutating func addVirtioCapability(_ type: VirtioPCICfgType, bar: UInt8, offset: UInt32, length: UInt32,
                                             id: UInt8 = 0, notifyOffMultiplier: UInt32? = nil) -> Int {
        let capLength = VirtioPCICapLayout.size(of: type)
        return addCapability(.vendorSpecific, length: capLength) { cap in
            cap.write(UInt8(capLength), at: VirtioPCICapLayout.capLength)
            cap.write(type.rawValue, at: VirtioPCICapLayout.cfgType)
            cap.write(bar, at: VirtioPCICapLayout.bar)
            cap.write(id, at: VirtioPCICapLayout.id)
            cap.write(offset, at: VirtioPCICapLayout.offset)
            cap.write(length, at: VirtioPCICapLayout.length)
            if let notifyOffMultiplier { cap.write(notifyOffMultiplier, at: VirtioPCICapLayout.notifyOffMultiplier) }
        }
    }

    /// Appends an MSI-X capability with `tableSize` vectors.
    @discardableResult
    package mutating func addMSIX(tableSize: Int, tableBAR: UInt8, tableOffset: UInt32, pbaBAR: UInt8, pbaOffset: UInt32) -> Int {
        precondition((1...2048).contains(tableSize))
        return addCapability(.msix, length: MSIXLayout.size) { cap in
            cap.write(UInt16(tableSize - 1), at: MSIXLayout.messageControl)
            cap.write(tableOffset | UInt32(tableBAR), at: MSIXLayout.tableOffsetBIR)
            cap.write(pbaOffset | UInt32(pbaBAR), at: MSIXLayout.pbaOffsetBIR)
        }
    }

    /// Appends a PCI Express capability (version 2) of the given device/port type.
    @discardableResult
    package mutating func addPCIExpress(portType: UInt16 = 0) -> Int {
        // The PCIe capability structure of a version-2 endpoint is 0x3c bytes.
        addCapability(.pciExpress, length: 0x3c) { cap in
            cap.write(UInt16(2) | (portType << PCIExpressLayout.portTypeShift), at: PCIExpressLayout.capabilities)
        }
    }

    /// Appends a PCIe extended capability of `length` bytes and returns its offset.
    @discardableResult
    package mutating func addExtendedCapability(_ id: PCIExtendedCapabilityID, version: UInt8 = 1, length: Int,
                                               body: (inout CapabilityWriter) -> Void = { _ in }) -> Int {
        precondition(bytes.count == PCIHeader.extendedConfigSize, "extended capabilities need 4096-byte config space")
        let offset = nextExtendedCapability
        precondition(offset + length <= bytes.count)
        if let last = lastExtendedCapability {
            let header = bytes.readLE(UInt32.self, at: last)
            bytes.writeLE(header | UInt32(offset) << PCIExtendedCapabilityLayout.nextShift, at: last)
        }
        bytes.writeLE(UInt32(id.rawValue) | UInt32(version) << PCIExtendedCapabilityLayout.versionShift, at: offset)
        var writer = CapabilityWriter(base: offset, bytes: bytes)
        body(&writer)
        bytes = writer.bytes
        lastExtendedCapability = offset
        nextExtendedCapability = (offset + length + 3) & ~3
        return offset
    }

    /// Appends an SR-IOV extended capability.
    @discardableResult
    package mutating func addSRIOV(totalVFs: Int, initialVFs: Int, numVFs: Int, firstVFOffset: Int, vfStride: Int,
                                  vfDeviceID: UInt16, vfBAR0: UInt64?, vfEnabled: Bool) -> Int {
        addExtendedCapability(.srIOV, length: SRIOVLayout.size) { cap in
            cap.write(UInt16(vfEnabled ? SRIOVLayout.controlVFEnable | SRIOVLayout.controlVFMemorySpace : 0), at: SRIOVLayout.control)
            cap.write(UInt16(initialVFs), at: SRIOVLayout.initialVFs)
            cap.write(UInt16(totalVFs), at: SRIOVLayout.totalVFs)
            cap.write(UInt16(numVFs), at: SRIOVLayout.numVFs)
            cap.write(UInt16(firstVFOffset), at: SRIOVLayout.firstVFOffset)
            cap.write(UInt16(vfStride), at: SRIOVLayout.vfStride)
            cap.write(vfDeviceID, at: SRIOVLayout.vfDeviceID)
            cap.write(UInt32(0x553), at: SRIOVLayout.supportedPageSizes)  // 4K, 8K, 64K, 256K, 1M, 4M
            cap.write(UInt32(1), at: SRIOVLayout.systemPageSize)  // 4K
            if let vfBAR0 {
                cap.write(UInt32(truncatingIfNeeded: vfBAR0) | PCIBARBits.memoryType64, at: SRIOVLayout.vfBAR0)
                cap.write(UInt32(truncatingIfNeeded: vfBAR0 >> 32), at: SRIOVLayout.vfBAR0 + 4)
            }
        }
    }

    /// Writes fields of one capability, relative to its start.
    package struct CapabilityWriter {
        let base: Int
        var bytes: [UInt8]
        package mutating func write<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
            bytes.writeLE(value, at: base + offset)
        }
    }
}
