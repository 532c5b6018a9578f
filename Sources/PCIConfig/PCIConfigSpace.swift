import VirtioSpec

/// A decoded PCI configuration space.
///
/// Decoding is strict: config space is input from a device, so every pointer and length is
/// checked, and a malformed structure throws a ``PCIConfigError`` naming the device and
/// the offset. Nothing traps on bad input.
package struct PCIConfigSpace: Sendable {
    package var address: PCIAddress
    /// The raw bytes (64, 256 or 4096 of them).
    package var bytes: [UInt8]

    package var vendorID: UInt16
    package var deviceID: UInt16
    package var command: UInt16
    package var status: UInt16
    package var revision: UInt8
    /// 24-bit class code: base class << 16 | subclass << 8 | programming interface.
    package var classCode: UInt32
    package var headerType: UInt8
    package var subsystemVendorID: UInt16
    package var subsystemID: UInt16

    package var bars: [PCIBAR]
    package var capabilities: [PCICapability]
    package var extendedCapabilities: [PCIExtendedCapability]
    /// Virtio vendor capabilities of known `cfg_type`, in list order.
    package var virtioCapabilities: [VirtioCapability]
    /// Offsets of vendor capabilities with a `cfg_type` the spec does not define (ignored, as the spec requires).
    package var unknownVirtioCapabilityOffsets: [Int]
    package var msix: MSIXCapability?
    package var pciExpress: PCIExpressCapability?
    package var sriov: SRIOVCapability?

    /// Decodes `bytes` as the config space of `address`.
    ///
    /// - Parameters:
    ///   - bytes: config space as read from sysfs `config` (64, 256 or 4096 bytes).
    ///   - address: the function, for error messages and VF address computation.
    ///   - barSizes: BAR sizes from sysfs `resource` (index 0...5); when given, every
    ///     virtio region and the MSI-X table/PBA are checked to lie within their BAR.
    /// - Throws: ``PCIConfigError`` for truncated input, out-of-range or looping capability
    ///   pointers, capabilities shorter than their structure, BAR index > 5, and regions past
    ///   the end of their BAR.
    package init(decoding bytes: [UInt8], address: PCIAddress, barSizes: [UInt64]? = nil) throws(PCIConfigError) {
        guard bytes.count >= PCIHeader.size else {
            throw .truncated(device: address, offset: 0, needed: PCIHeader.size, available: bytes.count)
        }
        self.address = address
        self.bytes = bytes
        vendorID = bytes.readLE(UInt16.self, at: PCIHeader.vendorID)
        deviceID = bytes.readLE(UInt16.self, at: PCIHeader.deviceID)
        command = bytes.readLE(UInt16.self, at: PCIHeader.command)
        status = bytes.readLE(UInt16.self, at: PCIHeader.status)
        revision = bytes[PCIHeader.revisionID]
        classCode = UInt32(bytes[PCIHeader.classCode]) | UInt32(bytes[PCIHeader.classCode + 1]) << 8 | UInt32(bytes[PCIHeader.classCode + 2]) << 16
        headerType = bytes[PCIHeader.headerType]
        subsystemVendorID = bytes.readLE(UInt16.self, at: PCIHeader.subsystemVendorID)
        subsystemID = bytes.readLE(UInt16.self, at: PCIHeader.subsystemID)

        bars = try Self.decodeBARs(bytes, address: address, headerType: headerType, sizes: barSizes)
        capabilities = try Self.walkCapabilities(bytes, address: address, status: status)
        extendedCapabilities = try Self.walkExtendedCapabilities(bytes, address: address)

        virtioCapabilities = []
        unknownVirtioCapabilityOffsets = []
        msix = nil
        pciExpress = nil
        sriov = nil
        let isVirtio = vendorID == PCIIdentity.virtioVendorID
        for capability in capabilities {
            switch capability.id {
            case .vendorSpecific where isVirtio:
                if let virtio = try Self.decodeVirtioCapability(bytes, address: address, at: capability.offset) {
                    virtioCapabilities.append(virtio)
                } else {
                    unknownVirtioCapabilityOffsets.append(capability.offset)
                }
            case .msix where msix == nil:
                msix = try Self.decodeMSIX(bytes, address: address, at: capability.offset)
            case .pciExpress where pciExpress == nil:
                try Self.require(bytes, address: address, at: capability.offset, PCIExpressLayout.size)
                let caps = bytes.readLE(UInt16.self, at: capability.offset + PCIExpressLayout.capabilities)
                pciExpress = PCIExpressCapability(
                    capabilityOffset: capability.offset,
                    version: Int(caps & PCIExpressLayout.versionMask),
                    portType: Int((caps >> PCIExpressLayout.portTypeShift) & PCIExpressLayout.portTypeMask))
            default:
                break
            }
        }
        if let sriovCap = extendedCapabilities.first(where: { $0.id == .srIOV }) {
            sriov = try Self.decodeSRIOV(bytes, address: address, at: sriovCap.offset)
        }
        if let barSizes {
            try checkRegions(barSizes: barSizes)
        }
    }

    /// Whether this is a virtio function (vendor 0x1af4, device 0x1000...0x107f).
    package var isVirtio: Bool { PCIIdentity.isVirtio(vendorID: vendorID, deviceID: deviceID) }

    /// The virtio device type, for virtio functions.
    package var virtioDeviceType: VirtioDeviceType? {
        isVirtio ? VirtioDeviceType(pciDeviceID: deviceID) : nil
    }

    /// The first virtio capability of `type` — the one a driver uses (spec §4.1.4.1).
    package func virtioCapability(_ type: VirtioPCICfgType) -> VirtioCapability? {
        virtioCapabilities.first { $0.cfgType == type }
    }

    // MARK: - Decoding steps

    static func require(_ bytes: [UInt8], address: PCIAddress, at offset: Int, _ length: Int) throws(PCIConfigError) {
        if offset + length > bytes.count {
            throw .truncated(device: address, offset: offset, needed: length, available: max(0, bytes.count - offset))
        }
    }

    static func decodeBARs(_ bytes: [UInt8], address: PCIAddress, headerType: UInt8, sizes: [UInt64]?) throws(PCIConfigError) -> [PCIBAR] {
        // Type 0 headers have six BARs, type 1 (bridges) two, type 2 (CardBus) none we decode.
        let count: Int
        switch headerType & PCIHeader.headerTypeMask {
        case 0: count = PCIHeader.barCount
        case 1: count = 2
        default: count = 0
        }
        var bars: [PCIBAR] = []
        var index = 0
        while index < count {
            let offset = PCIHeader.bar0 + 4 * index
            let raw = bytes.readLE(UInt32.self, at: offset)
            let size = sizes.flatMap { index < $0.count ? $0[index] : nil }
            if raw & PCIBARBits.ioSpace != 0 {
                bars.append(PCIBAR(index: index, kind: .io, prefetchable: false, address: UInt64(raw & PCIBARBits.ioAddressMask), size: size))
                index += 1
            } else if raw & PCIBARBits.memoryTypeMask == PCIBARBits.memoryType64 {
                guard index + 1 < count else { throw .bar64InLastSlot(device: address, offset: offset) }
                let high = bytes.readLE(UInt32.self, at: offset + 4)
                bars.append(PCIBAR(index: index, kind: .memory64, prefetchable: raw & PCIBARBits.prefetchable != 0,
                                   address: UInt64(high) << 32 | UInt64(raw & PCIBARBits.memoryAddressMask), size: size))
                index += 2
            } else {
                if raw != 0 || (size ?? 0) != 0 {
                    bars.append(PCIBAR(index: index, kind: .memory32, prefetchable: raw & PCIBARBits.prefetchable != 0,
                                       address: UInt64(raw & PCIBARBits.memoryAddressMask), size: size))
                }
                index += 1
            }
        }
        return bars
    }

    static func walkCapabilities(_ bytes: [UInt8], address: PCIAddress, status: UInt16) throws(PCIConfigError) -> [PCICapability] {
        guard status & PCIHeader.statusCapabilitiesList != 0 else { return [] }
        let limit = min(bytes.count, PCIHeader.legacyConfigSize)
        var capabilities: [PCICapability] = []
        var seen = Set<Int>()
        var pointerAt = PCIHeader.capabilitiesPointer
        var pointer = Int(bytes[pointerAt] & PCIHeader.capabilityPointerMask)
        while pointer != 0 {
            guard pointer >= PCIHeader.size, pointer + PCICapabilityLayout.minimumSize <= limit else {
                // Config space readable only in part (64 bytes for non-root readers) shows as truncation.
                if bytes.count < PCIHeader.legacyConfigSize && pointer >= PCIHeader.size && pointer < PCIHeader.legacyConfigSize {
                    throw .truncated(device: address, offset: pointer, needed: PCICapabilityLayout.minimumSize, available: max(0, bytes.count - pointer))
                }
                throw .capabilityPointerOutOfRange(device: address, at: pointerAt, pointer: pointer, limit: limit)
            }
            guard seen.insert(pointer).inserted, capabilities.count < PCICapabilityLayout.maximumCount else {
                throw .capabilityLoop(device: address, at: pointerAt, revisits: pointer)
            }
            capabilities.append(PCICapability(id: PCICapabilityID(rawValue: bytes[pointer + PCICapabilityLayout.id]), offset: pointer))
            pointerAt = pointer + PCICapabilityLayout.next
            pointer = Int(bytes[pointerAt] & PCIHeader.capabilityPointerMask)
        }
        return capabilities
    }

    static func walkExtendedCapabilities(_ bytes: [UInt8], address: PCIAddress) throws(PCIConfigError) -> [PCIExtendedCapability] {
        let start = PCIExtendedCapabilityLayout.start
        guard bytes.count >= start + PCIExtendedCapabilityLayout.headerSize else { return [] }
        var capabilities: [PCIExtendedCapability] = []
        var seen = Set<Int>()
        var offset = start
        var pointerAt = start
        while true {
            let header = bytes.readLE(UInt32.self, at: offset)
            // An all-zero or all-ones header at 0x100 means no extended capabilities.
            if header == 0 || header == UInt32.max {
                if offset == start { break }
            }
            guard seen.insert(offset).inserted, capabilities.count < PCIExtendedCapabilityLayout.maximumCount else {
                throw .capabilityLoop(device: address, at: pointerAt, revisits: offset)
            }
            capabilities.append(PCIExtendedCapability(
                id: PCIExtendedCapabilityID(rawValue: UInt16(header & PCIExtendedCapabilityLayout.idMask)),
                version: UInt8((header >> PCIExtendedCapabilityLayout.versionShift) & PCIExtendedCapabilityLayout.versionMask),
                offset: offset))
            let next = Int((header >> PCIExtendedCapabilityLayout.nextShift) & PCIExtendedCapabilityLayout.nextMask)
            if next == 0 { break }
            guard next >= start, next + PCIExtendedCapabilityLayout.headerSize <= bytes.count else {
                throw .capabilityPointerOutOfRange(device: address, at: offset, pointer: next, limit: bytes.count)
            }
            pointerAt = offset
            offset = next
        }
        return capabilities
    }

    static func decodeVirtioCapability(_ bytes: [UInt8], address: PCIAddress, at offset: Int) throws(PCIConfigError) -> VirtioCapability? {
        let limit = min(bytes.count, PCIHeader.legacyConfigSize)
        guard offset + VirtioPCICapLayout.size <= limit else {
            throw .truncated(device: address, offset: offset, needed: VirtioPCICapLayout.size, available: max(0, limit - offset))
        }
        let capLength = Int(bytes[offset + VirtioPCICapLayout.capLength])
        guard let cfgType = VirtioPCICfgType(rawValue: bytes[offset + VirtioPCICapLayout.cfgType]) else {
            return nil  // Spec §4.1.4: the driver ignores capabilities of unknown cfg_type.
        }
        let name = "virtio \(cfgType.name)"
        let minimum = VirtioPCICapLayout.size(of: cfgType)
        guard capLength >= minimum else {
            throw .capabilityTooShort(device: address, offset: offset, capability: name, length: capLength, minimum: minimum)
        }
        guard offset + capLength <= limit else {
            throw .truncated(device: address, offset: offset, needed: capLength, available: max(0, limit - offset))
        }
        let bar = Int(bytes[offset + VirtioPCICapLayout.bar])
        guard bar <= Int(VirtioPCICapLayout.maximumBAR) else {
            return nil  // Spec §4.1.4: the driver MUST ignore a capability with a reserved bar value.
        }
        var regionOffset = UInt64(bytes.readLE(UInt32.self, at: offset + VirtioPCICapLayout.offset))
        var regionLength = UInt64(bytes.readLE(UInt32.self, at: offset + VirtioPCICapLayout.length))
        var multiplier: UInt32?
        if cfgType == .notify {
            multiplier = bytes.readLE(UInt32.self, at: offset + VirtioPCICapLayout.notifyOffMultiplier)
        }
        if cfgType == .sharedMemory {
            regionOffset |= UInt64(bytes.readLE(UInt32.self, at: offset + VirtioPCICapLayout.offsetHigh)) << 32
            regionLength |= UInt64(bytes.readLE(UInt32.self, at: offset + VirtioPCICapLayout.lengthHigh)) << 32
        }
        return VirtioCapability(capabilityOffset: offset, cfgType: cfgType, bar: bar, id: bytes[offset + VirtioPCICapLayout.id],
                                offset: regionOffset, length: regionLength, notifyOffMultiplier: multiplier, capLength: capLength)
    }

    static func decodeMSIX(_ bytes: [UInt8], address: PCIAddress, at offset: Int) throws(PCIConfigError) -> MSIXCapability {
        try require(bytes, address: address, at: offset, MSIXLayout.size)
        let control = bytes.readLE(UInt16.self, at: offset + MSIXLayout.messageControl)
        let table = bytes.readLE(UInt32.self, at: offset + MSIXLayout.tableOffsetBIR)
        let pba = bytes.readLE(UInt32.self, at: offset + MSIXLayout.pbaOffsetBIR)
        let tableBAR = Int(table & MSIXLayout.birMask)
        let pbaBAR = Int(pba & MSIXLayout.birMask)
        for bar in [tableBAR, pbaBAR] where bar > Int(VirtioPCICapLayout.maximumBAR) {
            throw .barIndexOutOfRange(device: address, offset: offset, capability: "MSI-X", bar: bar)
        }
        return MSIXCapability(capabilityOffset: offset, tableSize: Int(control & MSIXLayout.tableSizeMask) + 1,
                              enabled: control & MSIXLayout.enable != 0, functionMasked: control & MSIXLayout.functionMask != 0,
                              tableBAR: tableBAR, tableOffset: table & MSIXLayout.offsetMask,
                              pbaBAR: pbaBAR, pbaOffset: pba & MSIXLayout.offsetMask)
    }

    static func decodeSRIOV(_ bytes: [UInt8], address: PCIAddress, at offset: Int) throws(PCIConfigError) -> SRIOVCapability {
        try require(bytes, address: address, at: offset, SRIOVLayout.size)
        func u16(_ field: Int) -> UInt16 { bytes.readLE(UInt16.self, at: offset + field) }
        func u32(_ field: Int) -> UInt32 { bytes.readLE(UInt32.self, at: offset + field) }
        return SRIOVCapability(
            capabilityOffset: offset, capabilities: u32(SRIOVLayout.capabilities), control: u16(SRIOVLayout.control),
            status: u16(SRIOVLayout.status), initialVFs: Int(u16(SRIOVLayout.initialVFs)), totalVFs: Int(u16(SRIOVLayout.totalVFs)),
            numVFs: Int(u16(SRIOVLayout.numVFs)), functionDependencyLink: bytes[offset + SRIOVLayout.functionDependencyLink],
            firstVFOffset: Int(u16(SRIOVLayout.firstVFOffset)), vfStride: Int(u16(SRIOVLayout.vfStride)),
            vfDeviceID: u16(SRIOVLayout.vfDeviceID), supportedPageSizes: u32(SRIOVLayout.supportedPageSizes),
            systemPageSize: u32(SRIOVLayout.systemPageSize),
            vfBARs: (0..<PCIHeader.barCount).map { u32(SRIOVLayout.vfBAR0 + 4 * $0) })
    }

    /// Checks that every virtio region and the MSI-X table and PBA lie inside their BAR.
    func checkRegions(barSizes: [UInt64]) throws(PCIConfigError) {
        func check(_ capability: String, at offset: Int, bar: Int, start: UInt64, length: UInt64) throws(PCIConfigError) {
            let size = bar < barSizes.count ? barSizes[bar] : 0
            guard size > 0 else { throw .regionInMissingBAR(device: address, offset: offset, capability: capability, bar: bar) }
            let (end, overflow) = start.addingReportingOverflow(length)
            guard !overflow, end <= size else {
                throw .regionBeyondBAR(device: address, offset: offset, capability: capability, bar: bar, regionEnd: overflow ? UInt64.max : end, barSize: size)
            }
        }
        for capability in virtioCapabilities where capability.cfgType != .pci && capability.length > 0 {
            try check("virtio \(capability.cfgType.name)", at: capability.capabilityOffset, bar: capability.bar, start: capability.offset, length: capability.length)
        }
        if let msix {
            try check("MSI-X table", at: msix.capabilityOffset, bar: msix.tableBAR, start: UInt64(msix.tableOffset), length: msix.tableLength)
            try check("MSI-X PBA", at: msix.capabilityOffset, bar: msix.pbaBAR, start: UInt64(msix.pbaOffset), length: msix.pbaLength)
        }
    }
}

/// BAR sizes from sysfs `resource` text: one line per resource, `start end flags` in hex.
///
/// Lines 0...5 are the BARs. A BAR that is not implemented reads `0x0 0x0 0x0` (size 0).
package func parseResourceSizes(_ text: String) -> [UInt64] {
    var sizes: [UInt64] = []
    for line in text.split(separator: "\n").prefix(PCIHeader.barCount) {
        let fields = line.split(separator: " ")
        guard fields.count >= 2,
              let start = UInt64(fields[0].dropFirst(fields[0].hasPrefix("0x") ? 2 : 0), radix: 16),
              let end = UInt64(fields[1].dropFirst(fields[1].hasPrefix("0x") ? 2 : 0), radix: 16)
        else { sizes.append(0); continue }
        sizes.append(end > start || (end == start && end != 0) ? end - start + 1 : 0)
    }
    return sizes
}
