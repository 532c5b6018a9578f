import PCIConfig
import Synchronization
import VirtioSpec
import VirtioSystem

/// sysfs attribute and link names the project reads or writes. Digest §10.
package enum SysfsAttribute {
    package static let vendor = "vendor"
    package static let device = "device"
    package static let classCode = "class"
    package static let subsystemVendor = "subsystem_vendor"
    package static let subsystemDevice = "subsystem_device"
    package static let revision = "revision"
    package static let config = "config"
    package static let resource = "resource"
    package static let driver = "driver"
    package static let driverOverride = "driver_override"
    package static let iommuGroup = "iommu_group"
    package static let numaNode = "numa_node"
    package static let physfn = "physfn"
    package static let virtfnPrefix = "virtfn"
    package static let sriovTotalVFs = "sriov_totalvfs"
    package static let sriovNumVFs = "sriov_numvfs"
    package static let sriovOffset = "sriov_offset"
    package static let sriovStride = "sriov_stride"
    package static let sriovVFDevice = "sriov_vf_device"
    package static let sriovDriversAutoprobe = "sriov_drivers_autoprobe"
    package static let sriovVFTotalMSIX = "sriov_vf_total_msix"
    package static let sriovVFMSIXCount = "sriov_vf_msix_count"
    /// Relative path of PCI devices under the sysfs mount point.
    package static let pciDevicesDirectory = "bus/pci/devices"
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
    /// The targets of the links `names` in the device directory, in order (`nil`: unreadable).
    func links(_ names: [String]) -> [String?]
}

extension DeviceAttributeSource {
    func link(_ name: String) -> String? { Sys.readLink(directory + "/" + name) }
    /// The targets of the links `names` in the device directory, in order.
    func links(_ names: [String]) -> [String?] { names.map(link) }
    func entries() -> [String] { (try? Sys.listDirectory(directory)) ?? [] }

    func linkBaseName(_ name: String) -> String? {
        link(name).map(lastPathComponent)
    }

    func driverName() -> String? { linkBaseName(SysfsAttribute.driver) }

    func hexAttribute<T: FixedWidthInteger>(_ name: String, as: T.Type = T.self) -> T? {
        attribute(name).flatMap { parseAttributeInteger($0, radix: 16) }
    }

    func intAttribute(_ name: String) -> Int? { attribute(name).flatMap { parseAttributeInteger($0, radix: 10) } }

    /// Builds the function record, or `nil` when the device is not a virtio function. Without
    /// `withVFs`, a PF's `virtfnN` links are not read (its `virtfns` stay empty). `identity`,
    /// when given, is the `vendor` and `device` already read.
    func virtioFunction(address: PCIAddress, withVFs: Bool = true, identity: (vendorID: UInt16, deviceID: UInt16)? = nil) -> VirtioFunction? {
        guard let vendorID = identity?.vendorID ?? hexAttribute(SysfsAttribute.vendor, as: UInt16.self),
              let deviceID = identity?.deviceID ?? hexAttribute(SysfsAttribute.device, as: UInt16.self),
              PCIIdentity.isVirtio(vendorID: vendorID, deviceID: deviceID)
        else { return nil }
        let physfn = linkBaseName(SysfsAttribute.physfn).flatMap(PCIAddress.init)
        let totalVFs = intAttribute(SysfsAttribute.sriovTotalVFs)
        let role: FunctionRole = physfn != nil ? .vf : (totalVFs != nil ? .pf : .function)
        var function = VirtioFunction(address: address, vendorID: vendorID, deviceID: deviceID, classCode: 0, role: role)
        function.details = details()
        function.physfn = physfn
        function.driver = driverName()
        if let totalVFs {
            function.sriov = SRIOVState(
                totalVFs: totalVFs, numVFs: intAttribute(SysfsAttribute.sriovNumVFs) ?? 0,
                vfTotalMSIX: intAttribute(SysfsAttribute.sriovVFTotalMSIX),
                driversAutoprobe: intAttribute(SysfsAttribute.sriovDriversAutoprobe).map { $0 != 0 })
            let virtfns = (withVFs ? entries() : []).compactMap { entry -> (Int, String)? in
                guard entry.hasPrefix(SysfsAttribute.virtfnPrefix), let index = Int(entry.dropFirst(SysfsAttribute.virtfnPrefix.count)) else { return nil }
                return (index, entry)
            }
            for ((index, _), link) in zip(virtfns, links(virtfns.map(\.1))) {
                guard let vf = link.map(lastPathComponent).flatMap(PCIAddress.init) else { continue }
                function.virtfns[index] = vf
            }
        }
        return function
    }

    /// The attributes a listing rarely needs (read on first use for VFs read through their PF).
    func details() -> VirtioFunction.Details {
        var details = VirtioFunction.Details()
        details.classCode = hexAttribute(SysfsAttribute.classCode, as: UInt32.self) ?? 0
        details.subsystemVendorID = hexAttribute(SysfsAttribute.subsystemVendor)
        details.subsystemID = hexAttribute(SysfsAttribute.subsystemDevice)
        details.revision = hexAttribute(SysfsAttribute.revision)
        if let override = attribute(SysfsAttribute.driverOverride), override != "(null)", !override.isEmpty {
            details.driverOverride = override
        }
        details.iommuGroup = linkBaseName(SysfsAttribute.iommuGroup).flatMap { Int($0) }
        details.numaNode = intAttribute(SysfsAttribute.numaNode)
        details.vfMSIXCount = intAttribute(SysfsAttribute.sriovVFMSIXCount)
        return details
    }
}

/// An attribute's integer value: optional `0x` (hex only), optional sign, digits in `radix`;
/// `nil` for anything else or on overflow. The text is already trimmed. Works on the bytes
/// (no `Character` walks), as `T(text, radix:)` would answer.
func parseAttributeInteger<T: FixedWidthInteger>(_ text: String, radix: Int) -> T? {
    var text = text
    return text.withUTF8 { bytes -> T? in
        var index = 0
        if radix == 16, bytes.count >= 2, bytes[0] == 0x30, bytes[1] == 0x78 { index = 2 }
        var negative = false
        if index < bytes.count, bytes[index] == 0x2b || bytes[index] == 0x2d {
            negative = bytes[index] == 0x2d
            index += 1
        }
        guard index < bytes.count else { return nil }
        var value: T = 0
        let base = T(radix)
        while index < bytes.count {
            let byte = bytes[index]
            let digit: Int
            switch byte {
            case 0x30...0x39: digit = Int(byte - 0x30)
            case 0x61...0x7a: digit = Int(byte - 0x61) + 10
            case 0x41...0x5a: digit = Int(byte - 0x41) + 10
            default: return nil
            }
            guard digit < radix else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: base)
            let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(T(digit)) : shifted.addingReportingOverflow(T(digit))
            guard !overflow, !overflow2 else { return nil }
            value = next
            index += 1
        }
        return value
    }
}

/// The last component of a link target (`../../../devices/x/0000:3b:00.1` → `0000:3b:00.1`),
/// found on the bytes. Trailing slashes are ignored; a path of slashes only is returned as is.
func lastPathComponent(_ path: String) -> String {
    let utf8 = path.utf8
    var end = utf8.endIndex
    while end > utf8.startIndex, utf8[utf8.index(before: end)] == 0x2f { end = utf8.index(before: end) }
    guard end > utf8.startIndex else { return path }
    var start = end
    while start > utf8.startIndex, utf8[utf8.index(before: start)] != 0x2f { start = utf8.index(before: start) }
    return start == utf8.startIndex && end == utf8.endIndex ? path : String(path[start..<end])
}

/// Counts the attribute files and links a sysfs walk reads (benchmarks and tests; the
/// enumerator's promise of what a VF costs is checked with it).
package final class SysfsReadCounter: Sendable {
    private let count = Atomic<Int>(0)
    package init() {}
    /// Attribute files opened plus links read so far.
    package var reads: Int { count.load(ordering: .relaxed) }
    func add() { count.wrappingAdd(1, ordering: .relaxed) }
}

/// A device directory read directly: opened once, every attribute and link read relative
/// to it (openat/readlinkat), so the `bus/pci/devices/ADDR` symlink is resolved once per
/// function instead of once per file.
final class SysfsDirectory: DeviceAttributeSource {
    let directory: String
    let fd: Int32
    let counter: SysfsReadCounter?

    init(directory: String, counter: SysfsReadCounter? = nil) {
        self.directory = directory
        self.counter = counter
        fd = Sys.openDirectory(directory)
    }

    deinit { if fd >= 0 { Sys.closeFD(fd) } }

    func attribute(_ name: String) -> String? {
        guard fd >= 0 else { return nil }
        counter?.add()
        return Sys.readSmallText(at: fd, name).map(trimmed)
    }

    func link(_ name: String) -> String? {
        guard fd >= 0 else { return nil }
        counter?.add()
        return Sys.readLink(at: fd, name)
    }

    /// The function's `vendor` and `device` ids, or why they cannot be had: a file that
    /// cannot be read (out of descriptors, say) is not an id of 0, and a function removed
    /// meanwhile is no such device. Each id is read once more by path only when the first
    /// read failed, and the value that was read decides.
    func identity(address: PCIAddress) throws(LinuxError) -> (vendorID: UInt16, deviceID: UInt16) {
        func id(_ name: String) throws(LinuxError) -> UInt16 {
            let text: String
            if let value = attribute(name) {
                text = value
            } else {
                let path = directory + "/" + name
                do { text = trimmed(try Sys.readText(path)) } catch {
                    if error.isNotFound { throw .noSuchDevice(address: address, path: directory) }
                    throw .unreadable(address: address, error)
                }
            }
            guard let value: UInt16 = parseAttributeInteger(text, radix: 16) else {
                throw .malformedAttribute(address: address, attribute: name, value: text)
            }
            return value
        }
        return (try id(SysfsAttribute.vendor), try id(SysfsAttribute.device))
    }

    /// The links' targets, from 256 on read by two threads (a PF's `virtfnN` links).
    func links(_ names: [String]) -> [String?] {
        guard fd >= 0 else { return names.map { _ in nil } }
        return readLinks(at: fd, names, counter: counter)
    }
}

/// `text` without trailing newlines, spaces and NULs and without leading spaces (a `\r\n`
/// pair is one character and stays), found on the bytes.
func trimmed(_ text: String) -> String {
    let utf8 = text.utf8
    var end = utf8.endIndex
    while end > utf8.startIndex {
        let before = utf8.index(before: end)
        let byte = utf8[before]
        guard byte == 0x0a || byte == 0x20 || byte == 0x00 else { break }
        if byte == 0x0a, before > utf8.startIndex, utf8[utf8.index(before: before)] == 0x0d { break }
        end = before
    }
    var start = utf8.startIndex
    while start < end, utf8[start] == 0x20 { start = utf8.index(after: start) }
    return start == utf8.startIndex && end == utf8.endIndex ? text : String(text[start..<end])
}
