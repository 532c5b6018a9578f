/// PCI configuration-space layout: the offsets, ids and bit fields the decoders use.
///
/// Source: PCI Local Bus 3.0 / PCIe base spec, as summarised in `shared/spec/` §1 and §9.
/// Every magic number about PCI lives here.
package enum PCIHeader {
    package static let vendorID = 0x00
    package static let deviceID = 0x02
    package static let command = 0x04
    package static let status = 0x06
    package static let revisionID = 0x08
    /// Class code: programming interface @0x09, subclass @0x0a, base class @0x0b.
    package static let classCode = 0x09
    package static let headerType = 0x0e
    package static let bar0 = 0x10
    package static let barCount = 6
    package static let subsystemVendorID = 0x2c
    package static let subsystemID = 0x2e
    package static let capabilitiesPointer = 0x34
    package static let interruptLine = 0x3c
    package static let interruptPin = 0x3d

    /// Size of the standard (type 0) header; capabilities start at or after it.
    package static let size = 0x40
    /// Size of legacy PCI config space; PCIe extended capabilities start here.
    package static let legacyConfigSize = 0x100
    /// Size of PCIe config space.
    package static let extendedConfigSize = 0x1000

    /// Status register bit 4: the capabilities list is present.
    package static let statusCapabilitiesList: UInt16 = 1 << 4
    /// Header type low 7 bits: 0 = general device.
    package static let headerTypeMask: UInt8 = 0x7f
    /// Header type bit 7: multi-function device.
    package static let headerTypeMultiFunction: UInt8 = 0x80
    /// The low two bits of a capability pointer are reserved.
    package static let capabilityPointerMask: UInt8 = 0xfc

    /// Command register bits.
    package static let commandIOSpace: UInt16 = 1 << 0
    package static let commandMemorySpace: UInt16 = 1 << 1
    package static let commandBusMaster: UInt16 = 1 << 2
    package static let commandInterruptDisable: UInt16 = 1 << 10
}

/// BAR register bit fields.
package enum PCIBARBits {
    /// Bit 0: 1 = I/O space BAR.
    package static let ioSpace: UInt32 = 0x1
    /// Bits 1–2 of a memory BAR: 0b00 = 32-bit, 0b10 = 64-bit.
    package static let memoryTypeMask: UInt32 = 0x6
    package static let memoryType64: UInt32 = 0x4
    /// Bit 3 of a memory BAR: prefetchable.
    package static let prefetchable: UInt32 = 0x8
    package static let memoryAddressMask: UInt32 = 0xffff_fff0
    package static let ioAddressMask: UInt32 = 0xffff_fffc
}

/// Capability ids of the standard capability list.
package struct PCICapabilityID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }
    package static let powerManagement = Self(rawValue: 0x01)
    package static let msi = Self(rawValue: 0x05)
    /// Vendor-specific: virtio's capabilities. Spec: §4.1.4.
    package static let vendorSpecific = Self(rawValue: 0x09)
    package static let pciExpress = Self(rawValue: 0x10)
    package static let msix = Self(rawValue: 0x11)

    static let names: [UInt8: String] = [0x01: "Power Management", 0x05: "MSI", 0x09: "Vendor Specific", 0x10: "PCI Express", 0x11: "MSI-X"]
    package var description: String { Self.names[rawValue] ?? "capability \(hex(rawValue, width: 2))" }
}

/// Capability ids of the PCIe extended capability list.
package struct PCIExtendedCapabilityID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package let rawValue: UInt16
    package init(rawValue: UInt16) { self.rawValue = rawValue }
    package static let advancedErrorReporting = Self(rawValue: 0x0001)
    package static let alternativeRoutingID = Self(rawValue: 0x000e)
    package static let srIOV = Self(rawValue: 0x0010)

    static let names: [UInt16: String] = [0x0001: "Advanced Error Reporting", 0x000e: "Alternative Routing-ID", 0x0010: "SR-IOV"]
    package var description: String { Self.names[rawValue] ?? "extended capability \(hex(rawValue, width: 4))" }
}

/// Layout of one standard capability entry.
package enum PCICapabilityLayout {
    package static let id = 0
    package static let next = 1
    /// Smallest possible capability (id + next).
    package static let minimumSize = 2
    /// At most this many capabilities fit in 192 bytes; more means a loop.
    package static let maximumCount = 48
}

/// Layout of the PCIe extended capability header (32-bit, little-endian).
package enum PCIExtendedCapabilityLayout {
    package static let start = 0x100
    package static let headerSize = 4
    package static let idMask: UInt32 = 0xffff
    package static let versionShift: UInt32 = 16
    package static let versionMask: UInt32 = 0xf
    package static let nextShift: UInt32 = 20
    package static let nextMask: UInt32 = 0xffc
    /// At most this many extended capabilities fit in 3840 bytes; more means a loop.
    package static let maximumCount = (0x1000 - 0x100) / 4
}

/// MSI-X capability layout. Spec digest §9.
package enum MSIXLayout {
    package static let messageControl = 2
    package static let tableOffsetBIR = 4
    package static let pbaOffsetBIR = 8
    package static let size = 12
    package static let tableSizeMask: UInt16 = 0x07ff
    package static let functionMask: UInt16 = 1 << 14
    package static let enable: UInt16 = 1 << 15
    package static let birMask: UInt32 = 0x7
    package static let offsetMask: UInt32 = 0xffff_fff8
    /// One MSI-X table entry: address lo/hi, data, vector control.
    package static let tableEntrySize = 16
}

/// PCI Express capability layout.
package enum PCIExpressLayout {
    package static let capabilities = 2
    package static let size = 4
    package static let versionMask: UInt16 = 0xf
    package static let portTypeShift: UInt16 = 4
    package static let portTypeMask: UInt16 = 0xf
}

/// SR-IOV extended capability layout. Spec digest §9.
package enum SRIOVLayout {
    package static let capabilities = 0x04
    package static let control = 0x08
    package static let status = 0x0a
    package static let initialVFs = 0x0c
    package static let totalVFs = 0x0e
    package static let numVFs = 0x10
    package static let functionDependencyLink = 0x12
    package static let firstVFOffset = 0x14
    package static let vfStride = 0x16
    package static let vfDeviceID = 0x1a
    package static let supportedPageSizes = 0x1c
    package static let systemPageSize = 0x20
    package static let vfBAR0 = 0x24
    package static let vfMigrationState = 0x3c
    package static let size = 0x40
    package static let controlVFEnable: UInt16 = 1 << 0
    package static let controlVFMemorySpace: UInt16 = 1 << 3
    package static let controlARICapableHierarchy: UInt16 = 1 << 4
}
