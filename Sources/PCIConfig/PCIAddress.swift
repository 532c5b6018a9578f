import VirtioSpec

/// A PCI function address (`DDDD:BB:DD.F`, sysfs's spelling).
public struct PCIAddress: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// PCI segment (domain), 0 on most hosts.
    public var domain: UInt32
    /// Bus number.
    public var bus: UInt8
    /// Device number (0–31).
    public var device: UInt8
    /// Function number (0–7).
    public var function: UInt8

    /// The address `DDDD:BB:DD.F` of these parts.
    public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        precondition(device < 32 && function < 8, "PCI device must be < 32 and function < 8")
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (domain 0), hex, case-insensitive. Returns `nil`
    /// for anything else: wrong separators, non-hex digits, device ≥ 32, function ≥ 8.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let domainText: Substring
        let busText: Substring
        let slotText: Substring
        switch parts.count {
        case 3: (domainText, busText, slotText) = (parts[0], parts[1], parts[2])
        case 2: (domainText, busText, slotText) = ("0", parts[0], parts[1])
        default: return nil
        }
        let slot = slotText.split(separator: ".", omittingEmptySubsequences: false)
        guard slot.count == 2,
              (1...8).contains(domainText.count), (1...2).contains(busText.count),
              (1...2).contains(slot[0].count), slot[1].count == 1,
              Self.isHex(domainText), Self.isHex(busText), Self.isHex(slot[0]), Self.isHex(slot[1]),
              let domain = UInt32(domainText, radix: 16), let bus = UInt8(busText, radix: 16),
              let device = UInt8(slot[0], radix: 16), let function = UInt8(slot[1], radix: 16),
              device < 32, function < 8
        else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    private static func isHex(_ text: Substring) -> Bool {
        text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x46).contains($0) || (0x61...0x66).contains($0) }
    }

    /// The 16-bit routing id (bus << 8 | device << 3 | function).
    public var routingID: UInt16 { UInt16(bus) << 8 | UInt16(device) << 3 | UInt16(function) }

    /// The address with the same domain and the given routing id.
    public init(domain: UInt32, routingID: UInt16) {
        self.init(domain: domain, bus: UInt8(routingID >> 8), device: UInt8((routingID >> 3) & 0x1f), function: UInt8(routingID & 0x7))
    }

    /// `dddd:bb:dd.f`, lower-case, as in sysfs.
    public var description: String {
        func pad(_ value: some BinaryInteger, _ width: Int) -> String {
            let text = String(value, radix: 16)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(domain, 4)):\(pad(bus, 2)):\(pad(device, 2)).\(function)"
    }

    /// Orders addresses as lspci lists them: domain, bus, device, function.
    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }

    /// Decodes the address from its string form (`"0000:3b:00.1"`).
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = PCIAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not a PCI address"))
        }
        self = address
    }

    /// Encodes the address as its string form (`"0000:3b:00.1"`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
