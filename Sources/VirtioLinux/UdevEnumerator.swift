import CUdev
import PCIConfig
import VirtioSpec
import VirtioSystem

/// Enumerates virtio PCI functions through libudev (subsystem `pci`, vendor `0x1af4`).
///
/// libudev always reads the host's `/sys`; use ``SysfsEnumerator`` for another root.
/// Identity attributes and the driver come from libudev; SR-IOV links (`physfn`,
/// `virtfnN`, `iommu_group`), which libudev does not expose as attributes, are read from
/// the device's syspath. The result equals ``SysfsEnumerator`` on the same host.
package struct UdevEnumerator: Sendable {
    package init() {}

    /// All virtio functions, sorted by address.
    package func functions() throws(LinuxError) -> [VirtioFunction] {
        guard let udev = udev_new() else { throw .udev(call: "udev_new", errno: Sys.lastError) }
        defer { udev_unref(udev) }
        guard let enumerate = udev_enumerate_new(udev) else { throw .udev(call: "udev_enumerate_new", errno: Sys.lastError) }
        defer { udev_enumerate_unref(enumerate) }
        udev_enumerate_add_match_subsystem(enumerate, "pci")
        udev_enumerate_add_match_sysattr(enumerate, SysfsAttribute.vendor, hex(PCIIdentity.virtioVendorID, width: 4))
        let status = udev_enumerate_scan_devices(enumerate)
        guard status >= 0 else { throw .udev(call: "udev_enumerate_scan_devices", errno: -status) }

        var result: [VirtioFunction] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let current = entry {
            defer { entry = udev_list_entry_get_next(current) }
            guard let syspath = udev_list_entry_get_name(current),
                  let device = udev_device_new_from_syspath(udev, syspath) else { continue }
            defer { udev_device_unref(device) }
            let source = UdevDevice(device: device, directory: String(cString: syspath))
            guard let name = udev_device_get_sysname(device), let address = PCIAddress(String(cString: name)),
                  let function = source.virtioFunction(address: address) else { continue }
            result.append(function)
        }
        return result.sorted { $0.address < $1.address }
    }
}

/// One udev device as an attribute source.
struct UdevDevice: DeviceAttributeSource {
    let device: OpaquePointer
    let directory: String

    func attribute(_ name: String) -> String? {
        guard let value = udev_device_get_sysattr_value(device, name) else { return nil }
        return trimmed(String(cString: value))
    }

    func driverName() -> String? {
        udev_device_get_driver(device).map { String(cString: $0) }
    }
}
