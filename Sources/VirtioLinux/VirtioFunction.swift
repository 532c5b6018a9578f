import PCIConfig
import VirtioSpec

/// What a function is in its SR-IOV group.
public enum FunctionRole: String, Sendable, Hashable, Codable {
    /// A physical function with SR-IOV (it owns a group of VFs).
    case pf
    /// A virtual function (it has a `physfn` link).
    case vf
    /// Neither.
    case function
}

/// SR-IOV state of a PF, from sysfs.
public struct SRIOVState: Sendable, Hashable {
    /// sysfs: `sriov_totalvfs`.
    public var totalVFs: Int
    /// sysfs: `sriov_numvfs`.
    public var numVFs: Int
    /// sysfs: `sriov_vf_total_msix` (PFs whose driver supports per-VF MSI-X), when present.
    public var vfTotalMSIX: Int?
    /// sysfs: `sriov_drivers_autoprobe`, when present.
    public var driversAutoprobe: Bool?

    public init(totalVFs: Int, numVFs: Int, vfTotalMSIX: Int? = nil, driversAutoprobe: Bool? = nil) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.vfTotalMSIX = vfTotalMSIX
        self.driversAutoprobe = driversAutoprobe
    }
}

/// A virtio PCI function as enumeration finds it. Both back ends (sysfs walker and libudev)
/// produce this type, and for the same host they produce equal values.
public struct VirtioFunction: Sendable, Hashable {
    public var address: PCIAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16?
    public var subsystemID: UInt16?
    public var revision: UInt8?
    /// 24-bit class code.
    public var classCode: UInt32
    /// The virtio device type (from the modern or transitional device id).
    public var type: VirtioDeviceType?
    public var role: FunctionRole
    /// VFs: the PF's address (sysfs `physfn`).
    public var physfn: PCIAddress?
    /// PFs: VF addresses by 0-based index (sysfs `virtfnN`).
    public var virtfns: [Int: PCIAddress]
    public var sriov: SRIOVState?
    /// VFs: sysfs `sriov_vf_msix_count`, when present.
    public var vfMSIXCount: Int?
    /// The bound driver's name, or `nil` when unbound.
    public var driver: String?
    /// sysfs `driver_override`, when set.
    public var driverOverride: String?
    /// IOMMU group number, when the function is in one.
    public var iommuGroup: Int?
    /// NUMA node (`-1` when the platform has none).
    public var numaNode: Int?

    public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, role: FunctionRole) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.type = VirtioDeviceType(pciDeviceID: deviceID)
        self.role = role
        self.virtfns = [:]
    }

    /// Whether the function is transitional (has a legacy interface).
    public var isTransitional: Bool { PCIIdentity.isTransitional(deviceID: deviceID) }
}
