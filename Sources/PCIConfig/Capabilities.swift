import VirtioSpec

/// One Base Address Register as decoded from config space (and sized from sysfs `resource`).
public struct PCIBAR: Hashable, Sendable {
    public enum Kind: String, Sendable, Hashable, Codable {
        case memory32, memory64, io
    }
    /// BAR index 0...5.
    public var index: Int
    public var kind: Kind
    public var prefetchable: Bool
    /// Bus address programmed in the BAR (0 when unassigned).
    public var address: UInt64
    /// Size in bytes, when known (from sysfs `resource`); `nil` when not given.
    public var size: UInt64?

    public init(index: Int, kind: Kind, prefetchable: Bool, address: UInt64, size: UInt64?) {
        self.index = index
        self.kind = kind
        self.prefetchable = prefetchable
        self.address = address
        self.size = size
    }
}

/// An entry of the standard capability list.
public struct PCICapability: Hashable, Sendable {
    public var id: PCICapabilityID
    /// Offset in config space.
    public var offset: Int
}

/// An entry of the PCIe extended capability list.
public struct PCIExtendedCapability: Hashable, Sendable {
    public var id: PCIExtendedCapabilityID
    public var version: UInt8
    /// Offset in config space.
    public var offset: Int
}

/// A decoded virtio vendor capability (`struct virtio_pci_cap` and variants). Spec: §4.1.4.
public struct VirtioCapability: Hashable, Sendable {
    /// Offset of the capability in config space.
    public var capabilityOffset: Int
    public var cfgType: VirtioPCICfgType
    /// BAR index (0...5).
    public var bar: Int
    /// `id`: distinguishes several capabilities of one type (shared memory regions).
    public var id: UInt8
    /// Offset of the structure within the BAR.
    public var offset: UInt64
    /// Length of the structure in bytes.
    public var length: UInt64
    /// `notify_off_multiplier` (notify capabilities only).
    public var notifyOffMultiplier: UInt32?
    /// The capability's own length field.
    public var capLength: Int
}

/// The MSI-X capability. Digest §9.
public struct MSIXCapability: Hashable, Sendable {
    public var capabilityOffset: Int
    /// Number of table entries (the field holds size − 1).
    public var tableSize: Int
    public var enabled: Bool
    public var functionMasked: Bool
    public var tableBAR: Int
    public var tableOffset: UInt32
    public var pbaBAR: Int
    public var pbaOffset: UInt32

    /// Bytes of the vector table.
    public var tableLength: UInt64 { UInt64(tableSize) * UInt64(MSIXLayout.tableEntrySize) }
    /// Bytes of the pending-bit array (one bit a vector, in 64-bit words).
    public var pbaLength: UInt64 { UInt64((tableSize + 63) / 64 * 8) }
}

/// The PCI Express capability (only the fields the project reads).
public struct PCIExpressCapability: Hashable, Sendable {
    public var capabilityOffset: Int
    public var version: Int
    /// Device/port type (0 = endpoint, 9 = root-complex integrated endpoint, …).
    public var portType: Int
}

/// The SR-IOV extended capability. Digest §9.
public struct SRIOVCapability: Hashable, Sendable {
    public var capabilityOffset: Int
    public var capabilities: UInt32
    public var control: UInt16
    public var status: UInt16
    public var initialVFs: Int
    public var totalVFs: Int
    public var numVFs: Int
    public var functionDependencyLink: UInt8
    public var firstVFOffset: Int
    public var vfStride: Int
    public var vfDeviceID: UInt16
    public var supportedPageSizes: UInt32
    public var systemPageSize: UInt32
    /// Raw VF BAR registers 0...5.
    public var vfBARs: [UInt32]

    public var vfEnabled: Bool { control & SRIOVLayout.controlVFEnable != 0 }
    public var vfMemorySpaceEnabled: Bool { control & SRIOVLayout.controlVFMemorySpace != 0 }

    /// Routing id of VF `index` (0-based): PF routing id + First VF Offset + index × VF Stride.
    public func vfRoutingID(pf: PCIAddress, index: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: Int(pf.routingID) + firstVFOffset + index * vfStride)
    }

    /// Address of VF `index` (0-based).
    public func vfAddress(pf: PCIAddress, index: Int) -> PCIAddress {
        PCIAddress(domain: pf.domain, routingID: vfRoutingID(pf: pf, index: index))
    }
}
