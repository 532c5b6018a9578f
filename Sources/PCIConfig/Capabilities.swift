import VirtioSpec

/// One Base Address Register as decoded from config space (and sized from sysfs `resource`).
package struct PCIBAR: Hashable, Sendable {
    package enum Kind: String, Sendable, Hashable, Codable {
        case memory32, memory64, io
    }
    /// BAR index 0...5.
    package var index: Int
    package var kind: Kind
    package var prefetchable: Bool
    /// Bus address programmed in the BAR (0 when unassigned).
    package var address: UInt64
    /// Size in bytes, when known (from sysfs `resource`); `nil` when not given.
    package var size: UInt64?

    package init(index: Int, kind: Kind, prefetchable: Bool, address: UInt64, size: UInt64?) {
        self.index = index
        self.kind = kind
        self.prefetchable = prefetchable
        self.address = address
        self.size = size
    }
}

/// An entry of the standard capability list.
package struct PCICapability: Hashable, Sendable {
    package var id: PCICapabilityID
    /// Offset in config space.
    package var offset: Int
}

/// An entry of the PCIe extended capability list.
package struct PCIExtendedCapability: Hashable, Sendable {
    package var id: PCIExtendedCapabilityID
    package var version: UInt8
    /// Offset in config space.
    package var offset: Int
}

/// A decoded virtio vendor capability (`struct virtio_pci_cap` and variants). Spec: §4.1.4.
package struct VirtioCapability: Hashable, Sendable {
    /// Offset of the capability in config space.
    package var capabilityOffset: Int
    package var cfgType: VirtioPCICfgType
    /// BAR index (0...5).
    package var bar: Int
    /// `id`: distinguishes several capabilities of one type (shared memory regions).
    package var id: UInt8
    /// Offset of the structure within the BAR.
    package var offset: UInt64
    /// Length of the structure in bytes.
    package var length: UInt64
    /// `notify_off_multiplier` (notify capabilities only).
    package var notifyOffMultiplier: UInt32?
    /// The capability's own length field.
    package var capLength: Int
}

/// The MSI-X capability. Digest §9.
package struct MSIXCapability: Hashable, Sendable {
    package var capabilityOffset: Int
    /// Number of table entries (the field holds size − 1).
    package var tableSize: Int
    package var enabled: Bool
    package var functionMasked: Bool
    package var tableBAR: Int
    package var tableOffset: UInt32
    package var pbaBAR: Int
    package var pbaOffset: UInt32

    /// Bytes of the vector table.
    package var tableLength: UInt64 { UInt64(tableSize) * UInt64(MSIXLayout.tableEntrySize) }
    /// Bytes of the pending-bit array (one bit a vector, in 64-bit words).
    package var pbaLength: UInt64 { UInt64((tableSize + 63) / 64 * 8) }
}

/// The PCI Express capability (only the fields the project reads).
package struct PCIExpressCapability: Hashable, Sendable {
    package var capabilityOffset: Int
    package var version: Int
    /// Device/port type (0 = endpoint, 9 = root-complex integrated endpoint, …).
    package var portType: Int
}

/// The SR-IOV extended capability. Digest §9.
package struct SRIOVCapability: Hashable, Sendable {
    package var capabilityOffset: Int
    package var capabilities: UInt32
    package var control: UInt16
    package var status: UInt16
    package var initialVFs: Int
    package var totalVFs: Int
    package var numVFs: Int
    package var functionDependencyLink: UInt8
    package var firstVFOffset: Int
    package var vfStride: Int
    package var vfDeviceID: UInt16
    package var supportedPageSizes: UInt32
    package var systemPageSize: UInt32
    /// Raw VF BAR registers 0...5.
    package var vfBARs: [UInt32]

    package var vfEnabled: Bool { control & SRIOVLayout.controlVFEnable != 0 }
    package var vfMemorySpaceEnabled: Bool { control & SRIOVLayout.controlVFMemorySpace != 0 }

    /// Routing id of VF `index` (0-based): PF routing id + First VF Offset + index × VF Stride.
    package func vfRoutingID(pf: PCIAddress, index: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: Int(pf.routingID) + firstVFOffset + index * vfStride)
    }

    /// Address of VF `index` (0-based).
    package func vfAddress(pf: PCIAddress, index: Int) -> PCIAddress {
        PCIAddress(domain: pf.domain, routingID: vfRoutingID(pf: pf, index: index))
    }
}
