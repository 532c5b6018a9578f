import PCIConfig
import Synchronization
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
///
/// The sysfs walker's ``SysfsEnumerator/functions(counter:)`` reads a VF that its PF lists
/// (`virtfnN`) in one link read: its identity comes from the PF (`vendor`, `sriov_vf_device`,
/// as the kernel sets it) and its driver from its `driver` link. The VF's other attributes
/// (class, subsystem ids, revision, `driver_override`, IOMMU group, NUMA node,
/// `sriov_vf_msix_count`) are read together on first use of any of them, once, and then kept.
@dynamicMemberLookup
package struct VirtioFunction: Sendable, Hashable {
    package var address: PCIAddress
    package var vendorID: UInt16
    package var deviceID: UInt16
    /// The virtio device type (from the modern or transitional device id).
    package var type: VirtioDeviceType?
    package var role: FunctionRole
    /// VFs: the PF's address (sysfs `physfn`).
    package var physfn: PCIAddress?
    /// PFs: VF addresses by 0-based index (sysfs `virtfnN`).
    package var virtfns: [Int: PCIAddress]
    package var sriov: SRIOVState?
    /// The bound driver's name, or `nil` when unbound.
    package var driver: String?

    /// The attributes a listing rarely needs; for a VF read through its PF, read on first use.
    package struct Details: Sendable, Hashable {
        /// 24-bit class code.
        package var classCode: UInt32 = 0
        package var subsystemVendorID: UInt16?
        package var subsystemID: UInt16?
        package var revision: UInt8?
        /// sysfs `driver_override`, when set.
        package var driverOverride: String?
        /// IOMMU group number, when the function is in one.
        package var iommuGroup: Int?
        /// NUMA node (`-1` when the platform has none).
        package var numaNode: Int?
        /// VFs: sysfs `sriov_vf_msix_count`, when present.
        package var vfMSIXCount: Int?
    }

    private var storedDetails = Details()
    /// Set while the details are still to be read (VFs from ``SysfsEnumerator/functions(counter:)``).
    private var deferred: DeferredDetails?

    var details: Details {
        get { deferred?.details ?? storedDetails }
        set {
            storedDetails = newValue
            deferred = nil
        }
    }

    /// A detail by name (`function.classCode`, `function.iommuGroup`, ...): read on first use.
    package subscript<T>(dynamicMember keyPath: WritableKeyPath<Details, T>) -> T {
        get { details[keyPath: keyPath] }
        set { details[keyPath: keyPath] = newValue }
    }

    package init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, role: FunctionRole) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.type = VirtioDeviceType(pciDeviceID: deviceID)
        self.role = role
        self.virtfns = [:]
        self.storedDetails.classCode = classCode
    }

    /// A VF whose details are read from `deferred` on first use.
    init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, physfn: PCIAddress, driver: String?, deferred: DeferredDetails) {
        self.init(address: address, vendorID: vendorID, deviceID: deviceID, classCode: 0, role: .vf)
        self.physfn = physfn
        self.driver = driver
        self.deferred = deferred
    }

    /// Whether the function is transitional (has a legacy interface).
    package var isTransitional: Bool { PCIIdentity.isTransitional(deviceID: deviceID) }

    /// Equal when every attribute is (details not yet read are read).
    package static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.address == rhs.address && lhs.vendorID == rhs.vendorID && lhs.deviceID == rhs.deviceID && lhs.type == rhs.type
            && lhs.role == rhs.role && lhs.physfn == rhs.physfn && lhs.virtfns == rhs.virtfns && lhs.sriov == rhs.sriov
            && lhs.driver == rhs.driver && lhs.details == rhs.details
    }

    package func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(vendorID)
        hasher.combine(deviceID)
        hasher.combine(type)
        hasher.combine(role)
        hasher.combine(physfn)
        hasher.combine(virtfns)
        hasher.combine(sriov)
        hasher.combine(driver)
        hasher.combine(details)
    }
}

/// A VF's details still to be read: read together on first use, once (thread-safe), then kept.
final class DeferredDetails: Sendable {
    private let read: @Sendable () -> VirtioFunction.Details
    private let cache = Mutex<VirtioFunction.Details?>(nil)

    init(read: @escaping @Sendable () -> VirtioFunction.Details) { self.read = read }

    var details: VirtioFunction.Details {
        cache.withLock { cached in
            if let cached { return cached }
            let details = read()
            cached = details
            return details
        }
    }
}
