import PCIConfig
import VirtioSpec
import VirtioSystem

/// Errors of the Linux platform layer (enumeration, sysfs, udev).
public enum LinuxError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The sysfs PCI device directory does not exist under the given root.
    case sysfsMissing(path: String)
    /// No PCI function with this address exists.
    case noSuchDevice(address: PCIAddress, path: String)
    /// The function exists but is not a virtio function.
    case notVirtio(address: PCIAddress, vendorID: UInt16, deviceID: UInt16)
    /// A sysfs file could not be read.
    case unreadable(address: PCIAddress?, SystemCallError)
    /// `config` returned only the first 64 bytes: the kernel shows the rest to root only.
    case configRestricted(address: PCIAddress, available: Int)
    /// Config space was read but does not decode.
    case config(PCIConfigError)
    /// A sysfs attribute holds text that does not parse.
    case malformedAttribute(address: PCIAddress, attribute: String, value: String)
    /// A device path resolves outside the sysfs root (a symlink pointing elsewhere).
    case outsideSysfsRoot(address: PCIAddress, resolved: String, root: String)
    /// libudev failed.
    case udev(call: String, errno: Int32)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case .sysfsMissing(let path):
            "\(path) does not exist: is sysfs mounted there (or is --sysfs-root right)?"
        case let .noSuchDevice(address, path):
            "\(address): no such PCI function (nothing at \(path))."
        case let .notVirtio(address, vendorID, deviceID):
            "\(address): not a virtio function (vendor \(hex(vendorID, width: 4)), device \(hex(deviceID, width: 4)); virtio is vendor 0x1af4, device 0x1000-0x107f)."
        case let .unreadable(address, error):
            if let address {
                error.isPermissionDenied
                    ? "\(address): cannot read \(error.path): permission denied (run as root)."
                    : "\(address): cannot read \(error.path): \(error)."
            } else {
                "\(error)."
            }
        case let .configRestricted(address, available):
            "\(address): only \(available) bytes of config space are readable; the kernel shows the capabilities to root only (run as root)."
        case .config(let error):
            error.description
        case let .malformedAttribute(address, attribute, value):
            "\(address): sysfs attribute \(attribute) holds '\(value)', which does not parse."
        case let .outsideSysfsRoot(address, resolved, root):
            "\(address): refusing to read \(resolved): it is outside the sysfs root \(root) (a symlink points out of it)."
        case let .udev(call, errno):
            "libudev: \(call) failed (errno \(errno))."
        }
    }
}
