import PCIConfig
import VirtioSpec

/// What a function is in its SR-IOV group.
package enum FunctionRole: String, Sendable, Hashable, Codable {
    /// A physical function with SR-IOV (it owns a group of VFs).
    case pf
    /// A virtual function (it has a `physfn` link).
    case vf
    /// Neither.
    case function
}

/// SR-IOV state of a PF, from sysfs.
package struct SRIOVState: Sendable, Hashable {
    /// sysfs: `sriov_totalvfs`.
    package var totalVFs: Int
    /// sysfs: `sriov_numvfs`.
    package var numVFs: Int
    /// sysfs: `sriov_vf_total_msix` (PFs whose driver supports per-VF MSI-X), when present.
    package var vfTotalMSIX: Int?
    /// sysfs: `sriov_drivers_autoprobe`, when present.
    package var driversAutoprobe: Bool?

    package init(totalVFs: Int, numVFs: Int, vfTotalMSIX: Int? = nil, driversAutoprobe: Bool? = nil) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.vfTotalMSIX = vfTotalMSIX
        self.driversAutoprobe = driversAutoprobe
    }
}

/// A virtio PCI function as enumeration finds it. Both back ends (sysfs walker and libudev)
/// produce this type, and for the same host they produce equal values.
package struct VirtioFunction: Sendable, Hashable {
    package var address: PCIAddress
    package var vendorID: UInt16
    package var deviceID: UInt16
    package var subsystemVendorID: UInt16?
    package var subsystemID: UInt16?
    package var revision: UInt8?
    /// 24-bit class code.
    package var classCode: UInt32
    /// The virtio device type (from the modern or transitional device id).
    package var type: VirtioDeviceType?
    package var role: FunctionRole
    /// VFs: the PF's address (sysfs `physfn`).
    package var physfn: PCIAddress?
    /// PFs: VF addresses by 0-based index (sysfs `virtfnN`).
    package var virtfns: [Int: PCIAddress]
    package var sriov: SRIOVState?
    /// VFs: sysfs `sriov_vf_msix_count`, when present.
    package var vfMSIXCount: Int?
    /// The bound driver's name, or `nil` when unbound.
    package var driver: String?
    /// sysfs `driver_override`, when set.
    package var driverOverride: String?
    /// IOMMU group number, when the function is in one.
    package var iommuGroup: Int?
    /// NUMA node (`-1` when the platform has none).
    package var numaNode: Int?

    package init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, role: FunctionRole) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.type = VirtioDeviceType(pciDeviceID: deviceID)
        self.role = role
        self.virtfns = [:]
    }

    /// Whether the function is transitional (has a legacy interface).
    package var isTransitional: Bool { PCIIdentity.isTransitional(deviceID: deviceID) }
}
