import PCIConfig
import VirtioSpec

/// Where a simulated function keeps its structures in BAR 0. One layout serves the PF and
/// every VF; the config space advertises it through virtio capabilities and MSI-X.
public struct SimulatedBARLayout: Sendable, Hashable {
    public static let bar: UInt8 = 0
    public static let commonOffset: UInt32 = 0x0000
    public static let commonLength = UInt32(CommonConfigLayout.sizeWithAdminQueue)
    public static let isrOffset: UInt32 = 0x1000
    public static let isrLength: UInt32 = 1
    public static let deviceOffset: UInt32 = 0x2000
    public static let deviceLength: UInt32 = 0x100
    public static let notifyOffset: UInt32 = 0x3000
    public static let notifyLength: UInt32 = 0x1000
    public static let notifyOffMultiplier: UInt32 = 4
    public static let msixTableOffset: UInt32 = 0x4000
    public static let msixPBAOffset: UInt32 = 0x6000
    /// BAR 0 size (a power of two, as PCI requires).
    public static let size: UInt64 = 0x8000
    /// Most MSI-X vectors the table area holds.
    public static let maximumMSIXVectors = Int(msixPBAOffset - msixTableOffset) / MSIXLayout.tableEntrySize
}

/// Identity and PCI placement of a simulated virtio function.
public struct SimulatedFunctionIdentity: Sendable, Hashable {
    public var address: PCIAddress
    public var type: VirtioDeviceType
    /// Bus address of BAR 0.
    public var bar0Address: UInt64
    /// Number of MSI-X vectors the function's table has.
    public var msixTableSize: Int

    public init(address: PCIAddress, type: VirtioDeviceType, bar0Address: UInt64, msixTableSize: Int) {
        self.address = address
        self.type = type
        self.bar0Address = bar0Address
        self.msixTableSize = msixTableSize
    }

    /// PCI class code for the type (network, mass storage, or "other").
    public var classCode: UInt32 {
        switch type {
        case .net: 0x020000
        case .block: 0x018000
        default: 0xff0000
        }
    }
}

/// SR-IOV parameters of a simulated PF.
public struct SimulatedSRIOV: Sendable, Hashable {
    public var totalVFs: Int
    public var numVFs: Int
    public var firstVFOffset: Int
    public var vfStride: Int
    public var vfType: VirtioDeviceType
    /// Bus address of VF 0's BAR 0; VF n's is this + n × ``SimulatedBARLayout/size``.
    public var vfBAR0Base: UInt64

    public init(totalVFs: Int, numVFs: Int, firstVFOffset: Int = 1, vfStride: Int = 1, vfType: VirtioDeviceType, vfBAR0Base: UInt64) {
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
public func simulatedConfigSpace(_ identity: SimulatedFunctionIdentity, sriov: SimulatedSRIOV? = nil) -> [UInt8] {
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
