import PCIConfig
import VirtioSpec

/// Where a simulated function keeps its structures in BAR 0. One layout serves the PF and
/// every VF; the config space advertises it through virtio capabilities and MSI-X.
package struct SimulatedBARLayout: Sendable, Hashable {
    package static let bar: UInt8 = 0
    package static let commonOffset: UInt32 = 0x0000
    package static let commonLength = UInt32(CommonConfigLayout.sizeWithAdminQueue)
    package static let isrOffset: UInt32 = 0x1000
    package static let isrLength: UInt32 = 1
    package static let deviceOffset: UInt32 = 0x2000
    package static let deviceLength: UInt32 = 0x100
    package static let notifyOffset: UInt32 = 0x3000
    package static let notifyLength: UInt32 = 0x1000
    package static let notifyOffMultiplier: UInt32 = 4
    package static let msixTableOffset: UInt32 = 0x4000
    package static let msixPBAOffset: UInt32 = 0x6000
    /// BAR 0 size (a power of two, as PCI requires).
    package static let size: UInt64 = 0x8000
    /// Most MSI-X vectors the table area holds.
    package static let maximumMSIXVectors = Int(msixPBAOffset - msixTableOffset) / MSIXLayout.tableEntrySize
}

/// Identity and PCI placement of a simulated virtio function.
package struct SimulatedFunctionIdentity: Sendable, Hashable {
    package var address: PCIAddress
    package var type: VirtioDeviceType
    /// Bus address of BAR 0.
    package var bar0Address: UInt64
    /// Number of MSI-X vectors the function's table has.
    package var msixTableSize: Int

    package init(address: PCIAddress, type: VirtioDeviceType, bar0Address: UInt64, msixTableSize: Int) {
        self.address = address
        self.type = type
        self.bar0Address = bar0Address
        self.msixTableSize = msixTableSize
    }

    /// PCI class code for the type (network, mass storage, or "other").
    package var classCode: UInt32 {
        switch type {
        case .net: 0x020000
        case .block: 0x018000
        default: 0xff0000
        }
    }
}

/// SR-IOV parameters of a simulated PF.
package struct SimulatedSRIOV: Sendable, Hashable {
    package var totalVFs: Int
    package var numVFs: Int
    package var firstVFOffset: Int
    package var vfStride: Int
    package var vfType: VirtioDeviceType
    /// Bus address of VF 0's BAR 0; VF n's is this + n × ``SimulatedBARLayout/size``.
    package var vfBAR0Base: UInt64

    package init(totalVFs: Int, numVFs: Int, firstVFOffset: Int = 1, vfStride: Int = 1, vfType: VirtioDeviceType, vfBAR0Base: UInt64) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.firstVFOffset = firstVFOffset
        self.vfStride = vfStride
        self.vfType = vfType
        self.vfBAR0Base = vfBAR0Base
    }
}

/// Builds the config space of a simulated virtio function: type-0 header, BAR 0 (64-bit),
/// virtio capabilities (common with the admin-queue fields, ISR, device, notify, PCI cfg
/// access), MSI-X, PCI Express, and for a PF the SR-IOV extended capability.
package func simulatedConfigSpace(_ identity: SimulatedFunctionIdentity, sriov: SimulatedSRIOV? = nil) -> [UInt8] {
    let deviceID = identity.type.modernPCIDeviceID
    var builder = ConfigSpaceBuilder(vendorID: PCIIdentity.virtioVendorID, deviceID: deviceID, classCode: identity.classCode,
                                     subsystemVendorID: PCIIdentity.virtioVendorID, subsystemID: deviceID)
    builder.setBAR64(Int(SimulatedBARLayout.bar), address: identity.bar0Address)
    typealias L = SimulatedBARLayout
    builder.addVirtioCapability(.common, bar: L.bar, offset: L.commonOffset, length: L.commonLength)
    builder.addVirtioCapability(.isr, bar: L.bar, offset: L.isrOffset, length: L.isrLength)
    builder.addVirtioCapability(.device, bar: L.bar, offset: L.deviceOffset, length: L.deviceLength)
    builder.addVirtioCapability(.notify, bar: L.bar, offset: L.notifyOffset, length: L.notifyLength, notifyOffMultiplier: L.notifyOffMultiplier)
    builder.addVirtioCapability(.pci, bar: 0, offset: 0, length: 0)
    builder.addMSIX(tableSize: identity.msixTableSize, tableBAR: L.bar, tableOffset: L.msixTableOffset, pbaBAR: L.bar, pbaOffset: L.msixPBAOffset)
    builder.addPCIExpress()
    if let sriov {
        builder.addSRIOV(totalVFs: sriov.totalVFs, initialVFs: sriov.totalVFs, numVFs: sriov.numVFs,
                         firstVFOffset: sriov.firstVFOffset, vfStride: sriov.vfStride,
                         vfDeviceID: sriov.vfType.modernPCIDeviceID, vfBAR0: sriov.vfBAR0Base, vfEnabled: sriov.numVFs > 0)
    }
    return builder.bytes
}
