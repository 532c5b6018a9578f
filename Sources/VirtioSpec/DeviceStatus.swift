/// The `device_status` register. Spec: §2.1 "Device Status Field".
public struct DeviceStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The register's value.
    public let rawValue: UInt8
    /// The status with these bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The guest OS has found the device. Spec: ACKNOWLEDGE (1).
    public static let acknowledge = Self(rawValue: 0x01)
    /// The guest OS knows how to drive the device. Spec: DRIVER (2).
    public static let driver = Self(rawValue: 0x02)
    /// The driver is set up and ready to drive the device. Spec: DRIVER_OK (4).
    public static let driverOK = Self(rawValue: 0x04)
    /// The driver has acknowledged the features it understands. Spec: FEATURES_OK (8).
    public static let featuresOK = Self(rawValue: 0x08)
    /// The device hit an error it cannot recover from. Spec: DEVICE_NEEDS_RESET (64).
    public static let deviceNeedsReset = Self(rawValue: 0x40)
    /// Something went wrong in the guest; the driver gave up. Spec: FAILED (128).
    public static let failed = Self(rawValue: 0x80)

    static let named: [(DeviceStatus, String)] = [
        (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.driverOK, "DRIVER_OK"),
        (.featuresOK, "FEATURES_OK"), (.deviceNeedsReset, "DEVICE_NEEDS_RESET"), (.failed, "FAILED"),
    ]

    /// Spec names of the set bits, `|`-separated; `0` for reset.
    public var description: String {
        if rawValue == 0 { return "0 (reset)" }
        var parts = Self.named.filter { contains($0.0) }.map(\.1)
        let known = Self.named.reduce(UInt8(0)) { $0 | $1.0.rawValue }
        if rawValue & ~known != 0 { parts.append(hex(rawValue & ~known)) }
        return hex(rawValue, width: 2) + " (" + parts.joined(separator: "|") + ")"
    }
}
