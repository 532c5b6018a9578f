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
    /// (Scans the bytes once: enumeration parses every sysfs device name and link with it.)
    public init?(_ text: String) {
        var text = text
        guard let address = text.withUTF8({ Self.parse($0) }) else { return nil }
        self = address
    }

    private static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> PCIAddress? {
        // Fields: up to three separated by ':'; the last is DD.F.
        var colons = (first: -1, second: -1)
        for index in bytes.indices where bytes[index] == 0x3a {
            if colons.first < 0 { colons.first = index } else if colons.second < 0 { colons.second = index } else { return nil }
        }
        guard colons.first >= 0 else { return nil }
        let domainRange: Range<Int>?
        let busRange: Range<Int>
        let slotStart: Int
        if colons.second >= 0 {
            domainRange = 0..<colons.first
            busRange = colons.first + 1..<colons.second
            slotStart = colons.second + 1
        } else {
            domainRange = nil
            busRange = 0..<colons.first
            slotStart = colons.first + 1
        }
        var dot = -1
        for index in slotStart..<bytes.count where bytes[index] == 0x2e {
            guard dot < 0 else { return nil }
            dot = index
        }
        guard dot >= 0 else { return nil }
        let deviceRange = slotStart..<dot
        let functionRange = dot + 1..<bytes.count
        guard (1...2).contains(busRange.count), (1...2).contains(deviceRange.count), functionRange.count == 1 else { return nil }
        var domain: UInt32 = 0
        if let domainRange {
            guard (1...8).contains(domainRange.count), let value = hexValue(bytes, domainRange) else { return nil }
            domain = UInt32(value)
        }
        guard let bus = hexValue(bytes, busRange), let device = hexValue(bytes, deviceRange), let function = hexValue(bytes, functionRange),
              device < 32, function < 8
        else { return nil }
        return PCIAddress(domain: domain, bus: UInt8(bus), device: UInt8(device), function: UInt8(function))
    }

    /// The value of up to 8 hex digits, or nil when one is not a hex digit.
    private static func hexValue(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> UInt64? {
        var value: UInt64 = 0
        for index in range {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case 0x30...0x39: digit = byte - 0x30
            case 0x41...0x46: digit = byte - 0x41 + 10
            case 0x61...0x66: digit = byte - 0x61 + 10
            default: return nil
            }
            value = value << 4 | UInt64(digit)
        }
        return value
    }

    /// The 16-bit routing id (bus << 8 | device << 3 | function).
    public var routingID: UInt16 { UInt16(bus) << 8 | UInt16(device) << 3 | UInt16(function) }

    /// The address with the same domain and the given routing id.
    public init(domain: UInt32, routingID: UInt16) {
        self.init(domain: domain, bus: UInt8(routingID >> 8), device: UInt8((routingID >> 3) & 0x1f), function: UInt8(routingID & 0x7))
    }

    /// `dddd:bb:dd.f`, lower-case, as in sysfs (the domain has at least 4 digits).
    public var description: String {
        let domainDigits = max(4, (32 - domain.leadingZeroBitCount + 3) / 4)
        return String(unsafeUninitializedCapacity: domainDigits + 8) { buffer in
            func digit(_ value: some BinaryInteger) -> UInt8 {
                let nibble = UInt8(truncatingIfNeeded: value) & 0xf
                return nibble < 10 ? 0x30 + nibble : 0x57 + nibble
            }
            for index in 0..<domainDigits { buffer[index] = digit(domain >> (4 * (domainDigits - 1 - index))) }
            let at = domainDigits
            (buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]) = (0x3a, digit(bus >> 4), digit(bus), 0x3a)
            (buffer[at + 4], buffer[at + 5], buffer[at + 6], buffer[at + 7]) = (digit(device >> 4), digit(device), 0x2e, digit(function))
            return at + 8
        }
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
