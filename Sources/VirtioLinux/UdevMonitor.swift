import CUdev
import PCIConfig
import VirtioSpec
import VirtioSystem

/// A hotplug event for a virtio PCI function, from the udev netlink monitor.
package struct HotplugEvent: Sendable, Hashable {
    package var action: String
    package var devpath: String
    package var address: PCIAddress
    package var vendorID: UInt16?
    package var deviceID: UInt16?
    package var driver: String?
    package var isVF: Bool
}

/// Watches udev for PCI events of virtio functions (vendor 0x1af4).
package final class UdevMonitor: @unchecked Sendable {
    // Owned exclusively; used from one thread.
    let udev: OpaquePointer
    let monitor: OpaquePointer

    /// - Parameter source: "udev" (events after udev processed them) or "kernel".
    package init(source: String = "udev") throws(LinuxError) {
        guard let udev = udev_new() else { throw .udev(call: "udev_new", errno: Sys.lastError) }
        guard let monitor = udev_monitor_new_from_netlink(udev, source) else {
            udev_unref(udev)
            throw .udev(call: "udev_monitor_new_from_netlink", errno: Sys.lastError)
        }
        udev_monitor_filter_add_match_subsystem_devtype(monitor, "pci", nil)
        // A burst (1024 VFs created at once) must not overflow the socket (ENOBUFS): ask
        // for udevd's own 128 MiB (granted to root; otherwise the default stays).
        _ = udev_monitor_set_receive_buffer_size(monitor, 128 * 1024 * 1024)
        let status = udev_monitor_enable_receiving(monitor)
        guard status >= 0 else {
            udev_monitor_unref(monitor)
            udev_unref(udev)
            throw .udev(call: "udev_monitor_enable_receiving", errno: -status)
        }
        self.udev = udev
        self.monitor = monitor
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
    }

    /// The next virtio event, or nil when `timeoutMilliseconds` passes first (-1: wait forever).
    package func next(timeoutMilliseconds: Int32) -> HotplugEvent? {
        let fd = udev_monitor_get_fd(monitor)
        while true {
            guard Sys.poll(fd, timeoutMilliseconds: timeoutMilliseconds), let device = udev_monitor_receive_device(monitor) else { return nil }
            defer { udev_device_unref(device) }
            guard let name = udev_device_get_sysname(device), let address = PCIAddress(String(cString: name)) else { continue }
            let source = UdevDevice(device: device, directory: udev_device_get_syspath(device).map { String(cString: $0) } ?? "")
            let vendor: UInt16? = source.hexAttribute(SysfsAttribute.vendor)
            guard vendor == nil || vendor == PCIIdentity.virtioVendorID else { continue }
            let action = udev_device_get_action(device).map { String(cString: $0) } ?? "?"
            return HotplugEvent(action: action, devpath: udev_device_get_devpath(device).map { String(cString: $0) } ?? "",
                                address: address, vendorID: vendor, deviceID: source.hexAttribute(SysfsAttribute.device),
                                driver: source.driverName(), isVF: Sys.readLink(source.directory + "/physfn") != nil)
        }
    }
}
