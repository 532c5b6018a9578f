/// A set of virtio feature bits (up to 128, the windows `device_feature_select` 0...3 reach).
///
/// Spec: §2.2 "Feature Bits", §6 "Reserved Feature Bits". Device-type-specific bits are
/// 0–23 and 50–127; the transport/ring bits are 24–49. Named bits are listed in
/// ``FeatureSet/reservedNames`` and, per device type, in ``FeatureSet/names(for:)``.
public struct FeatureSet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The bits: bit N is feature bit N.
    public var rawValue: UInt128
    /// The set with these bits.
    public init(rawValue: UInt128) { self.rawValue = rawValue }

    /// The set with only bit `bit` (0...127).
    public init(bit: Int) {
        precondition((0..<128).contains(bit), "feature bit out of range")
        rawValue = UInt128(1) << bit
    }

    /// Number of 32-bit windows the transport exposes for 128 feature bits.
    public static let windowCount = 4

    /// VIRTIO_F_NOTIFY_ON_EMPTY (24), legacy (virtio 1.4 §6).
    public static let notifyOnEmpty = Self(bit: 24)
    /// VIRTIO_F_ANY_LAYOUT (27), legacy (§6).
    public static let anyLayout = Self(bit: 27)
    /// VIRTIO_F_INDIRECT_DESC (28): indirect descriptors (§6).
    public static let indirectDescriptors = Self(bit: 28)
    /// VIRTIO_F_EVENT_IDX (29): used_event and avail_event (§6).
    public static let eventIndex = Self(bit: 29)
    /// VIRTIO_F_VERSION_1 (32): compliance with this specification, not legacy (§6).
    public static let version1 = Self(bit: 32)
    /// VIRTIO_F_ACCESS_PLATFORM (33): the device reaches memory through the platform's IOMMU (§6).
    public static let accessPlatform = Self(bit: 33)
    /// VIRTIO_F_RING_PACKED (34): the packed virtqueue layout (§6).
    public static let ringPacked = Self(bit: 34)
    /// VIRTIO_F_IN_ORDER (35): buffers are used in the order they were made available (§6).
    public static let inOrder = Self(bit: 35)
    /// VIRTIO_F_ORDER_PLATFORM (36): memory accesses ordered as the platform orders them (§6).
    public static let orderPlatform = Self(bit: 36)
    /// VIRTIO_F_SR_IOV (37): the device supports single root I/O virtualization (§6).
    public static let srIOV = Self(bit: 37)
    /// VIRTIO_F_NOTIFICATION_DATA (38): the driver passes extra data in notifications (§6).
    public static let notificationData = Self(bit: 38)
    /// VIRTIO_F_NOTIF_CONFIG_DATA (39): the notification value comes from the device (§6).
    public static let notifConfigData = Self(bit: 39)
    /// VIRTIO_F_RING_RESET (40): single queues can be reset (§6).
    public static let ringReset = Self(bit: 40)
    /// VIRTIO_F_ADMIN_VQ (41): the device has an admin virtqueue (§2.12, §6).
    public static let adminVQ = Self(bit: 41)

    /// Spec names (without the `VIRTIO_F_` prefix) of the reserved, device-independent bits.
    public static let reservedNames: [Int: String] = [
        24: "NOTIFY_ON_EMPTY", 27: "ANY_LAYOUT", 28: "INDIRECT_DESC", 29: "EVENT_IDX",
        32: "VERSION_1", 33: "ACCESS_PLATFORM", 34: "RING_PACKED", 35: "IN_ORDER",
        36: "ORDER_PLATFORM", 37: "SR_IOV", 38: "NOTIFICATION_DATA", 39: "NOTIF_CONFIG_DATA",
        40: "RING_RESET", 41: "ADMIN_VQ",
    ]

    /// Names of network device bits (`VIRTIO_NET_F_…`). Spec: §5.1.3.
    public static let netNames: [Int: String] = [
        0: "CSUM", 1: "GUEST_CSUM", 2: "CTRL_GUEST_OFFLOADS", 3: "MTU", 5: "MAC",
        7: "GUEST_TSO4", 8: "GUEST_TSO6", 9: "GUEST_ECN", 10: "GUEST_UFO", 11: "HOST_TSO4",
        12: "HOST_TSO6", 13: "HOST_ECN", 14: "HOST_UFO", 15: "MRG_RXBUF", 16: "STATUS",
        17: "CTRL_VQ", 18: "CTRL_RX", 19: "CTRL_VLAN", 20: "CTRL_RX_EXTRA",
        21: "GUEST_ANNOUNCE", 22: "MQ", 23: "CTRL_MAC_ADDR", 57: "HASH_REPORT", 60: "RSS",
        61: "RSC_EXT", 62: "STANDBY", 63: "SPEED_DUPLEX",
    ]

    /// Names of block device bits (`VIRTIO_BLK_F_…`). Spec: §5.2.3.
    public static let blockNames: [Int: String] = [
        1: "SIZE_MAX", 2: "SEG_MAX", 4: "GEOMETRY", 5: "RO", 6: "BLK_SIZE", 9: "FLUSH",
        10: "TOPOLOGY", 11: "CONFIG_WCE", 12: "MQ", 13: "DISCARD", 14: "WRITE_ZEROES",
        15: "LIFETIME", 16: "SECURE_ERASE",
    ]

    /// Bit → name for a device type: the reserved names plus the type's own.
    public static func names(for type: VirtioDeviceType?) -> [Int: String] {
        switch type {
        case .net?: netTable
        case .block?: blockTable
        default: reservedNames
        }
    }

    // The tables, built once (a policy resolves names for every VF it provisions).
    private static let netTable = reservedNames.merging(netNames) { reserved, _ in reserved }
    private static let blockTable = reservedNames.merging(blockNames) { reserved, _ in reserved }
    private static func reversed(_ table: [Int: String]) -> [String: Int] {
        Dictionary(table.map { ($0.value, $0.key) }, uniquingKeysWith: min)
    }
    private static let reservedBits = reversed(reservedNames)
    private static let netBits = reversed(netTable)
    private static let blockBits = reversed(blockTable)

    /// Name → bit for a device type (the inverse of ``names(for:)``; the lowest bit if two share a name).
    static func bits(for type: VirtioDeviceType?) -> [String: Int] {
        switch type {
        case .net?: netBits
        case .block?: blockBits
        default: reservedBits
        }
    }

    /// The bit numbers set, ascending.
    public var bits: [Int] { (0..<128).filter { rawValue & (UInt128(1) << $0) != 0 } }

    /// The 32-bit window `index` (0...3), as `device_feature` shows it for `device_feature_select = index`.
    public func window(_ index: Int) -> UInt32 {
        precondition((0..<Self.windowCount).contains(index), "feature window out of range")
        return UInt32(truncatingIfNeeded: rawValue >> (32 * index))
    }

    /// Sets window `index` (0...3) to `value`.
    public mutating func setWindow(_ index: Int, to value: UInt32) {
        precondition((0..<Self.windowCount).contains(index), "feature window out of range")
        let shift = 32 * index
        rawValue = (rawValue & ~(UInt128(UInt32.max) << shift)) | (UInt128(value) << shift)
    }

    /// Low 64 bits (the admin feature commands carry 64-bit masks per word).
    public var low64: UInt64 { UInt64(truncatingIfNeeded: rawValue) }
    /// High 64 bits.
    public var high64: UInt64 { UInt64(truncatingIfNeeded: rawValue >> 64) }
    /// The set of two 64-bit words (the admin feature commands' le64 masks).
    public init(low64: UInt64, high64: UInt64 = 0) { rawValue = UInt128(low64) | (UInt128(high64) << 64) }

    /// Names of the set bits for `type`; unnamed bits print as `BIT_N`.
    public func names(for type: VirtioDeviceType? = nil) -> [String] {
        let table = Self.names(for: type)
        return bits.map { table[$0] ?? "BIT_\($0)" }
    }

    /// Parses a feature name (`VERSION_1`, `VIRTIO_F_VERSION_1`, `MAC`, `VIRTIO_NET_F_MAC`,
    /// `BIT_5`; case-insensitive) for `type`. Returns `nil` for an unknown name.
    public static func bit(named name: String, for type: VirtioDeviceType? = nil) -> Int? {
        let upper = name.uppercased()
        let table = bits(for: type)
        // Try the name as given, then without each spelling's prefix (VIRTIO_F_RING_PACKED is RING_PACKED,
        // VIRTIO_RING_F_EVENT_IDX is EVENT_IDX).
        var candidates = [upper]
        for prefix in ["VIRTIO_NET_F_", "VIRTIO_BLK_F_", "VIRTIO_RING_F_", "VIRTIO_F_"] where upper.hasPrefix(prefix) {
            candidates.append(String(upper.dropFirst(prefix.count)))
        }
        for key in candidates {
            if key.hasPrefix("BIT_"), let number = Int(key.dropFirst(4)), (0..<128).contains(number) { return number }
            if let bit = table[key] { return bit }
        }
        return nil
    }

    /// Hex string of the mask: `0x…` with no leading zeros beyond one digit.
    public var hexMask: String { "0x" + String(rawValue, radix: 16) }

    /// Parses a mask written as hex (`0x…`) or decimal.
    public init?(mask text: String) {
        let trimmed = text.lowercased()
        let value: UInt128?
        if trimmed.hasPrefix("0x") { value = UInt128(trimmed.dropFirst(2), radix: 16) } else { value = UInt128(trimmed, radix: 10) }
        guard let value else { return nil }
        rawValue = value
    }

    /// The set bits' reserved names joined with `|` (``names()``).
    public var description: String { names().joined(separator: "|") }
}
