/// A virtio device type (the "Device ID" of the virtio spec, not the PCI device id).
///
/// Spec: §5 "Device Types", table of virtio device IDs. The PCI device id of a modern
/// function is `0x1040 + type` (§4.1.2); transitional functions use the legacy ids
/// `0x1000...0x103f` listed in ``transitionalPCIDeviceIDs``.
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The virtio device ID (virtio 1.4 §5).
    public let rawValue: UInt16
    /// The device type with this device ID.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The device type with this device ID.
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    /// Network device, ID 1 (virtio 1.4 §5).
    public static let net = Self(1)
    /// Block device, ID 2.
    public static let block = Self(2)
    /// Console, ID 3.
    public static let console = Self(3)
    /// Entropy source, ID 4.
    public static let entropy = Self(4)
    /// Traditional memory balloon, ID 5.
    public static let balloon = Self(5)
    /// ioMemory, ID 6.
    public static let ioMemory = Self(6)
    /// rpmsg, ID 7.
    public static let rpmsg = Self(7)
    /// SCSI host, ID 8.
    public static let scsi = Self(8)
    /// 9P transport, ID 9.
    public static let ninep = Self(9)
    /// mac80211 wlan, ID 10.
    public static let mac80211 = Self(10)
    /// rproc serial, ID 11.
    public static let rprocSerial = Self(11)
    /// virtio CAIF, ID 12.
    public static let caif = Self(12)
    /// Memory balloon, ID 13.
    public static let memoryBalloon = Self(13)
    /// GPU device, ID 16.
    public static let gpu = Self(16)
    /// Timer/clock device, ID 17.
    public static let clock = Self(17)
    /// Input device, ID 18.
    public static let input = Self(18)
    /// Socket device, ID 19.
    public static let vsock = Self(19)
    /// Crypto device, ID 20.
    public static let crypto = Self(20)
    /// Signal distribution module, ID 21.
    public static let signalDistribution = Self(21)
    /// pstore device, ID 22.
    public static let pstore = Self(22)
    /// IOMMU device, ID 23.
    public static let iommu = Self(23)
    /// Memory device, ID 24.
    public static let mem = Self(24)
    /// Audio device, ID 25.
    public static let sound = Self(25)
    /// File system device, ID 26.
    public static let fs = Self(26)
    /// PMEM device, ID 27.
    public static let pmem = Self(27)
    /// RPMB device, ID 28.
    public static let rpmb = Self(28)
    /// Video encoder/decoder, ID 30.
    public static let video = Self(30)
    /// SCMI device, ID 32.
    public static let scmi = Self(32)
    /// I2C adapter, ID 34.
    public static let i2c = Self(34)
    /// CAN device, ID 36.
    public static let can = Self(36)
    /// GPIO device, ID 41.
    public static let gpio = Self(41)

    /// Lower-case names as `virtio-admin list --json` prints them.
    public static let names: [VirtioDeviceType: String] = [
        .net: "net", .block: "block", .console: "console", .entropy: "entropy",
        .balloon: "balloon", .ioMemory: "iomem", .rpmsg: "rpmsg", .scsi: "scsi", .ninep: "9p",
        .mac80211: "mac80211", .rprocSerial: "rproc-serial", .caif: "caif",
        .memoryBalloon: "memory-balloon", .gpu: "gpu", .clock: "clock", .input: "input",
        .vsock: "vsock", .crypto: "crypto", .signalDistribution: "signal-dist",
        .pstore: "pstore", .iommu: "iommu", .mem: "mem", .sound: "sound", .fs: "fs",
        .pmem: "pmem", .rpmb: "rpmb", .video: "video", .scmi: "scmi", .i2c: "i2c",
        .can: "can", .gpio: "gpio",
    ]

    /// The device type's name (`net`, `block`, …), or `type-N` for an unnamed type.
    public var name: String { Self.names[self] ?? "type-\(rawValue)" }
    /// The lower-case name, as ``name``.
    public var description: String { name }

    /// Looks a type up by its lower-case name.
    public init?(name: String) {
        guard let match = Self.names.first(where: { $0.value == name }) else { return nil }
        self = match.key
    }

    /// Orders device types by ID.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// PCI device id of a modern (virtio 1.0+) function of this type: `0x1040 + type`.
    public var modernPCIDeviceID: UInt16 { PCIIdentity.modernDeviceIDBase + rawValue }

    /// Transitional PCI device ids. Spec: §4.1.2.1 "Transitional PCI Device ID".
    public static let transitionalPCIDeviceIDs: [UInt16: VirtioDeviceType] = [
        0x1000: .net, 0x1001: .block, 0x1002: .balloon, 0x1003: .console,
        0x1004: .scsi, 0x1005: .entropy, 0x1009: .ninep,
    ]

    /// The virtio device type a virtio PCI device id stands for, or `nil` when the id is not
    /// a virtio id (or a transitional id with no assigned type).
    public init?(pciDeviceID: UInt16) {
        if pciDeviceID >= PCIIdentity.modernDeviceIDBase && pciDeviceID <= PCIIdentity.modernDeviceIDLast {
            self.init(pciDeviceID - PCIIdentity.modernDeviceIDBase)
        } else if let type = Self.transitionalPCIDeviceIDs[pciDeviceID] {
            self = type
        } else {
            return nil
        }
    }
}

/// PCI identity of virtio functions. Spec: §4.1.2 "PCI Device Discovery".
package enum PCIIdentity {
    /// PCI vendor id of every virtio function (Red Hat, Inc.).
    package static let virtioVendorID: UInt16 = 0x1af4
    /// First transitional device id.
    package static let transitionalDeviceIDFirst: UInt16 = 0x1000
    /// Last transitional device id.
    package static let transitionalDeviceIDLast: UInt16 = 0x103f
    /// Modern device ids are this base plus the virtio device type.
    package static let modernDeviceIDBase: UInt16 = 0x1040
    /// Last modern device id the spec reserves for virtio.
    package static let modernDeviceIDLast: UInt16 = 0x107f

    /// Whether a (vendor, device) pair is a virtio PCI function.
    package static func isVirtio(vendorID: UInt16, deviceID: UInt16) -> Bool {
        vendorID == virtioVendorID && deviceID >= transitionalDeviceIDFirst && deviceID <= modernDeviceIDLast
    }

    /// Whether a virtio device id is a transitional (legacy-capable) one.
    package static func isTransitional(deviceID: UInt16) -> Bool {
        deviceID >= transitionalDeviceIDFirst && deviceID <= transitionalDeviceIDLast
    }
}
