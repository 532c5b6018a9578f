import PCIConfig
import VirtioSpec
import VirtioSystem

/// Why the kernel is using a function (a reason to refuse taking it over).
package enum DeviceUse: Hashable, Sendable, CustomStringConvertible {
    case mountedFilesystem(disk: String, mountPoint: String)
    case swap(disk: String)
    case interfaceUp(name: String)
    case vsock(driver: String)

    package var description: String {
        switch self {
        case let .mountedFilesystem(disk, mountPoint): "block device \(disk) is mounted on \(mountPoint)"
        case let .swap(disk): "block device \(disk) is in use as swap"
        case let .interfaceUp(name): "network interface \(name) is up"
        case let .vsock(driver): "it carries the host's vsock channel (driver \(driver))"
        }
    }
}

/// Finds out whether a function's kernel driver is in use: mounted filesystems or swap on
/// its disks, network interfaces that are up, a vsock transport.
///
/// It reads only files under a sysfs root and a proc root, so tests drive it with fake
/// trees and tables instead of this host's devices.
package struct InUseDetector: Sendable {
    package var sysfsRoot: String
    package var procRoot: String

    package init(sysfsRoot: String = "/sys", procRoot: String = "/proc") {
        self.sysfsRoot = sysfsRoot
        self.procRoot = procRoot
    }

    /// Every use found for the function at `address` (empty: nothing uses it).
    package func uses(of address: PCIAddress) -> [DeviceUse] {
        let directory = SysfsEnumerator(root: sysfsRoot).directory(of: address)
        var uses: [DeviceUse] = []
        // The virtio core puts its device under the PCI function: DIR/virtioN/{block,net}/…
        let children = (try? Sys.listDirectory(directory)) ?? []
        var blockDevices: [String] = []
        var interfaces: [String] = []
        for child in children where child.hasPrefix("virtio") && Int(child.dropFirst(6)) != nil {
            let virtioDirectory = directory + "/" + child
            blockDevices += (try? Sys.listDirectory(virtioDirectory + "/block")) ?? []
            interfaces += (try? Sys.listDirectory(virtioDirectory + "/net")) ?? []
            if let driver = Sys.readLink(virtioDirectory + "/driver").map(baseName), driver.contains("vsock") {
                uses.append(.vsock(driver: driver))
            }
        }
        if !blockDevices.isEmpty {
            // Partitions appear as DIR/virtioN/block/vda/vda1.
            var names = Set(blockDevices)
            for disk in blockDevices {
                for child in ((try? Sys.listDirectory(directory + "/" + (children.first { $0.hasPrefix("virtio") } ?? "") + "/block/" + disk)) ?? [])
                where child.hasPrefix(disk) { names.insert(child) }
            }
            for (device, mountPoint) in mounts() where names.contains(baseName(device)) {
                uses.append(.mountedFilesystem(disk: baseName(device), mountPoint: mountPoint))
            }
            for device in swaps() where names.contains(baseName(device)) {
                uses.append(.swap(disk: baseName(device)))
            }
        }
        for name in interfaces {
            let flags = (try? Sys.readText(sysfsRoot + "/class/net/" + name + "/flags")).map(trimmed) ?? ""
            let value = flags.hasPrefix("0x") ? Int(flags.dropFirst(2), radix: 16) : Int(flags)
            if let value, value & 0x1 != 0 { uses.append(.interfaceUp(name: name)) }  // IFF_UP
        }
        return uses
    }

    /// (device, mount point) pairs from PROC/mounts.
    func mounts() -> [(String, String)] {
        guard let text = try? Sys.readText(procRoot + "/mounts") else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            return fields.count >= 2 ? (String(fields[0]), unescapeMount(String(fields[1]))) : nil
        }
    }

    /// Devices from PROC/swaps (the first line is a header).
    func swaps() -> [String] {
        guard let text = try? Sys.readText(procRoot + "/swaps") else { return [] }
        return text.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    func unescapeMount(_ text: String) -> String { text.replacingOccurrencesOfOctal() }
}

extension String {
    /// /proc/mounts escapes space, tab, newline and backslash as \040 etc.
    func replacingOccurrencesOfOctal() -> String {
        var out = ""
        var iterator = Array(self).makeIterator()
        while let character = iterator.next() {
            guard character == "\\" else { out.append(character); continue }
            var digits = ""
            for _ in 0..<3 { if let next = iterator.next() { digits.append(next) } }
            if let value = UInt8(digits, radix: 8) { out.append(Character(UnicodeScalar(value))) } else { out += "\\" + digits }
        }
        return out
    }
}
