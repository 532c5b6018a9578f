import PCIConfig
import VirtioSpec
import VirtioSystem

/// sysfs attribute and link names the project reads or writes. Digest §10.
public enum SysfsAttribute {
    public static let vendor = "vendor"
    public static let device = "device"
    public static let classCode = "class"
    public static let subsystemVendor = "subsystem_vendor"
    public static let subsystemDevice = "subsystem_device"
    public static let revision = "revision"
    public static let config = "config"
    public static let resource = "resource"
    public static let driver = "driver"
    public static let driverOverride = "driver_override"
    public static let iommuGroup = "iommu_group"
    public static let numaNode = "numa_node"
    public static let physfn = "physfn"
    public static let virtfnPrefix = "virtfn"
    public static let sriovTotalVFs = "sriov_totalvfs"
    public static let sriovNumVFs = "sriov_numvfs"
    public static let sriovOffset = "sriov_offset"
    public static let sriovStride = "sriov_stride"
    public static let sriovVFDevice = "sriov_vf_device"
    public static let sriovDriversAutoprobe = "sriov_drivers_autoprobe"
    public static let sriovVFTotalMSIX = "sriov_vf_total_msix"
    public static let sriovVFMSIXCount = "sriov_vf_msix_count"
    /// Relative path of PCI devices under the sysfs mount point.
    public static let pciDevicesDirectory = "bus/pci/devices"
}

/// Read access to one device's sysfs attributes. The sysfs walker reads files under a
/// directory; the libudev back end asks libudev. Links are read from the device directory.
protocol DeviceAttributeSource {
    /// The directory of the device (its sysfs path).
    var directory: String { get }
    /// An attribute's text, trimmed, or `nil` when absent or unreadable.
    func attribute(_ name: String) -> String?
    /// The bound driver's name.
    func driverName() -> String?
    /// The target of the link `name` in the device directory.
    func link(_ name: String) -> String?
    /// Names in the device directory.
    func entries() -> [String]
}

extension DeviceAttributeSource {
    func link(_ name: String) -> String? { Sys.readLink(directory + "/" + name) }
    func entries() -> [String] { (try? Sys.listDirectory(directory)) ?? [] }

    func linkBaseName(_ name: String) -> String? {
        link(name).map(baseName)
    }

    func driverName() -> String? { linkBaseName(SysfsAttribute.driver) }

    func hexAttribute<T: FixedWidthInteger>(_ name: String, as: T.Type = T.self) -> T? {
        guard let text = attribute(name) else { return nil }
        let digits = text.hasPrefix("0x") ? text.dropFirst(2) : Substring(text)
        return T(digits, radix: 16)
    }

    func intAttribute(_ name: String) -> Int? { attribute(name).flatMap { Int($0) } }

    /// Builds the function record, or `nil` when the device is not a virtio function.
    func virtioFunction(address: PCIAddress) -> VirtioFunction? {
        guard let vendorID = hexAttribute(SysfsAttribute.vendor, as: UInt16.self),
              let deviceID = hexAttribute(SysfsAttribute.device, as: UInt16.self),
              PCIIdentity.isVirtio(vendorID: vendorID, deviceID: deviceID)
        else { return nil }
        let classCode = hexAttribute(SysfsAttribute.classCode, as: UInt32.self) ?? 0
        let physfn = linkBaseName(SysfsAttribute.physfn).flatMap(PCIAddress.init)
        let totalVFs = intAttribute(SysfsAttribute.sriovTotalVFs)
        let role: FunctionRole = physfn != nil ? .vf : (totalVFs != nil ? .pf : .function)
        var function = VirtioFunction(address: address, vendorID: vendorID, deviceID: deviceID, classCode: classCode, role: role)
        function.subsystemVendorID = hexAttribute(SysfsAttribute.subsystemVendor)
        function.subsystemID = hexAttribute(SysfsAttribute.subsystemDevice)
        function.revision = hexAttribute(SysfsAttribute.revision)
        function.physfn = physfn
        function.driver = driverName()
        if let override = attribute(SysfsAttribute.driverOverride), override != "(null)", !override.isEmpty {
            function.driverOverride = override
        }
        function.iommuGroup = linkBaseName(SysfsAttribute.iommuGroup).flatMap { Int($0) }
        function.numaNode = intAttribute(SysfsAttribute.numaNode)
        function.vfMSIXCount = intAttribute(SysfsAttribute.sriovVFMSIXCount)
        if let totalVFs {
            function.sriov = SRIOVState(
                totalVFs: totalVFs, numVFs: intAttribute(SysfsAttribute.sriovNumVFs) ?? 0,
                vfTotalMSIX: intAttribute(SysfsAttribute.sriovVFTotalMSIX),
                driversAutoprobe: intAttribute(SysfsAttribute.sriovDriversAutoprobe).map { $0 != 0 })
            for entry in entries() where entry.hasPrefix(SysfsAttribute.virtfnPrefix) {
                guard let index = Int(entry.dropFirst(SysfsAttribute.virtfnPrefix.count)),
                      let vf = linkBaseName(entry).flatMap(PCIAddress.init) else { continue }
                function.virtfns[index] = vf
            }
        }
        return function
    }
}

/// A device directory read directly: opened once, every attribute and link read relative
/// to it (openat/readlinkat), so the `bus/pci/devices/ADDR` symlink is resolved once per
/// function instead of once per file.
final class SysfsDirectory: DeviceAttributeSource {
    let directory: String
    let fd: Int32

    init(directory: String) {
        self.directory = directory
        fd = Sys.openDirectory(directory)
    }

    deinit { if fd >= 0 { Sys.closeFD(fd) } }

    func attribute(_ name: String) -> String? {
        guard fd >= 0 else { return nil }
        return Sys.readSmallText(at: fd, name).map(trimmed)
    }

    func link(_ name: String) -> String? {
        guard fd >= 0 else { return nil }
        return Sys.readLink(at: fd, name)
    }
}

func trimmed(_ text: String) -> String {
    var scalars = Substring(text)
    while let last = scalars.last, last == "\n" || last == " " || last == "\0" { scalars = scalars.dropLast() }
    while let first = scalars.first, first == " " { scalars = scalars.dropFirst() }
    return String(scalars)
}
