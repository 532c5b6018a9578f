/// PCI configuration-space layout: the offsets, ids and bit fields the decoders use.
///
/// Source: PCI Local Bus 3.0 / PCIe base spec, as summarised in `shared/spec/` §1 and §9.
/// Every magic number about PCI lives here.
public enum PCIHeader {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revisionID = 0x08
    /// Class code: programming interface @0x09, subclass @0x0a, base class @0x0b.
    public static let classCode = 0x09
    public static let headerType = 0x0e
    public static let bar0 = 0x10
    public static let barCount = 6
    public static let subsystemVendorID = 0x2c
    public static let subsystemID = 0x2e
    public static let capabilitiesPointer = 0x34
    public static let interruptLine = 0x3c
    public static let interruptPin = 0x3d

    /// Size of the standard (type 0) header; capabilities start at or after it.
    public static let size = 0x40
    /// Size of legacy PCI config space; PCIe extended capabilities start here.
    public static let legacyConfigSize = 0x100
    /// Size of PCIe config space.
    public static let extendedConfigSize = 0x1000

    /// Status register bit 4: the capabilities list is present.
    public static let statusCapabilitiesList: UInt16 = 1 << 4
    /// Header type low 7 bits: 0 = general device.
    public static let headerTypeMask: UInt8 = 0x7f
    /// Header type bit 7: multi-function device.
    public static let headerTypeMultiFunction: UInt8 = 0x80
    /// The low two bits of a capability pointer are reserved.
    public static let capabilityPointerMask: UInt8 = 0xfc

    /// Command register bits.
    public static let commandIOSpace: UInt16 = 1 << 0
    public static let commandMemorySpace: UInt16 = 1 << 1
    public static let commandBusMaster: UInt16 = 1 << 2
    public static let commandInterruptDisable: UInt16 = 1 << 10
}

/// BAR register bit fields.
public enum PCIBARBits {
    /// Bit 0: 1 = I/O space BAR.
    public static let ioSpace: UInt32 = 0x1
    /// Bits 1–2 of a memory BAR: 0b00 = 32-bit, 0b10 = 64-bit.
    public static let memoryTypeMask: UInt32 = 0x6
    public static let memoryType64: UInt32 = 0x4
    /// Bit 3 of a memory BAR: prefetchable.
    public static let prefetchable: UInt32 = 0x8
    public static let memoryAddressMask: UInt32 = 0xffff_fff0
    public static let ioAddressMask: UInt32 = 0xffff_fffc
}

/// Capability ids of the standard capability list.
public struct PCICapabilityID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let powerManagement = Self(rawValue: 0x01)
    public static let msi = Self(rawValue: 0x05)
    /// Vendor-specific: virtio's capabilities. Spec: §4.1.4.
    public static let vendorSpecific = Self(rawValue: 0x09)
    public static let pciExpress = Self(rawValue: 0x10)
    public static let msix = Self(rawValue: 0x11)

    static let names: [UInt8: String] = [0x01: "Power Management", 0x05: "MSI", 0x09: "Vendor Specific", 0x10: "PCI Express", 0x11: "MSI-X"]
    public var description: String { Self.names[rawValue] ?? "capability \(hex(rawValue, width: 2))" }
}

/// Capability ids of the PCIe extended capability list.
public struct PCIExtendedCapabilityID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let advancedErrorReporting = Self(rawValue: 0x0001)
    public static let alternativeRoutingID = Self(rawValue: 0x000e)
    public static let srIOV = Self(rawValue: 0x0010)

    static let names: [UInt16: String] = [0x0001: "Advanced Error Reporting", 0x000e: "Alternative Routing-ID", 0x0010: "SR-IOV"]
    public var description: String { Self.names[rawValue] ?? "extended capability \(hex(rawValue, width: 4))" }
}

/// Layout of one standard capability entry.
public enum PCICapabilityLayout {
    public static let id = 0
    public static let next = 1
    /// Smallest possible capability (id + next).
    public static let minimumSize = 2
    /// At most this many capabilities fit in 192 bytes; more means a loop.
    public static let maximumCount = 48
}

/// Layout of the PCIe extended capability header (32-bit, little-endian).
public enum PCIExtendedCapabilityLayout {
    public static let start = 0x100
    public static let headerSize = 4
    public static let idMask: UInt32 = 0xffff
    public static let versionShift: UInt32 = 16
    public static let versionMask: UInt32 = 0xf
    public static let nextShift: UInt32 = 20
    public static let nextMask: UInt32 = 0xffc
    /// At most this many extended capabilities fit in 3840 bytes; more means a loop.
    public static let maximumCount = (0x1000 - 0x100) / 4
}

/// MSI-X capability layout. Spec digest §9.
public enum MSIXLayout {
    public static let messageControl = 2
    public static let tableOffsetBIR = 4
    public static let pbaOffsetBIR = 8
    public static let size = 12
    public static let tableSizeMask: UInt16 = 0x07ff
    public static let functionMask: UInt16 = 1 << 14
    public static let enable: UInt16 = 1 << 15
    public static let birMask: UInt32 = 0x7
    public static let offsetMask: UInt32 = 0xffff_fff8
    /// One MSI-X table entry: address lo/hi, data, vector control.
    public static let tableEntrySize = 16
}

/// PCI Express capability layout.
public enum PCIExpressLayout {
    public static let capabilities = 2
    public static let size = 4
    public static let versionMask: UInt16 = 0xf
    public static let portTypeShift: UInt16 = 4
    public static let portTypeMask: UInt16 = 0xf
}

/// SR-IOV extended capability layout. Spec digest §9.
public enum SRIOVLayout {
    public static let capabilities = 0x04
    public static let control = 0x08
    public static let status = 0x0a
    public static let initialVFs = 0x0c
    public static let totalVFs = 0x0e
    public static let numVFs = 0x10
    public static let functionDependencyLink = 0x12
    public static let firstVFOffset = 0x14
    public static let vfStride = 0x16
    public static let vfDeviceID = 0x1a
    public static let supportedPageSizes = 0x1c
    public static let systemPageSize = 0x20
    public static let vfBAR0 = 0x24
    public static let vfMigrationState = 0x3c
    public static let size = 0x40
    public static let controlVFEnable: UInt16 = 1 << 0
    public static let controlVFMemorySpace: UInt16 = 1 << 3
    public static let controlARICapableHierarchy: UInt16 = 1 << 4
}
