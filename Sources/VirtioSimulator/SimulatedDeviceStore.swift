import PCIConfig
import VirtioSpec
import VirtioSystem

/// Why a simulated device's state file could not be used.
public enum SimulatedStateError: Error, Hashable, Sendable, CustomStringConvertible {
    case file(SystemCallError)
    case malformed(path: String, line: Int, message: String)
    case locked(SystemCallError)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case .file(let error): "\(error)."
        case let .malformed(path, line, message): "\(path):\(line): \(message)."
        case let .locked(error): "cannot lock \(error.path): \(error.errno)."
        }
    }
}

/// Saves and loads a simulated device's state (configuration and per-VF resources) as
/// text, so that `virtio-admin --simulate PATH` behaves across invocations as hardware
/// does: `set` in one run, `get` in the next. Writes are atomic (temporary file + rename).
package enum SimulatedDeviceStore {
    static let magic = "virtio-admin-simulated-device 1"

    /// The text form of the device's persistent state.
    package static func encode(_ device: SimulatedSRIOVDevice) -> String { String(decoding: encodeBytes(device), as: UTF8.self) }

    /// The text form of the device's persistent state, as the bytes written to the file.
    /// The per-VF lines (1024 on a large PF) are formatted on the bytes, not interpolated.
    /// The state is taken in one hold of the model's lock (a snapshot of one instant).
    package static func encodeBytes(_ device: SimulatedSRIOVDevice) -> [UInt8] {
        let configuration = device.configuration
        let snapshot = device.persistentSnapshot()
        var lines = [magic,
                     "pf \(configuration.pfAddress)",
                     "pf-type \(configuration.pfType.name)",
                     "vf-type \(configuration.vfType.name)",
                     "total-vfs \(configuration.totalVFs)",
                     "num-vfs \(snapshot.numVFs)",
                     "sriov-negotiated \(snapshot.sriovNegotiated ? 1 : 0)",
                     "first-vf-offset \(configuration.firstVFOffset)",
                     "vf-stride \(configuration.vfStride)",
                     "pool \(configuration.vfMSIXPool)",
                     "per-vf-max \(configuration.perVFMaximumVectors)",
                     "per-vf-min \(configuration.perVFMinimumVectors)",
                     "member-supported \(configuration.memberSupportedFeatures.hexMask)",
                     "pf-features \(configuration.pfFeatures.hexMask)"]
        let timing = snapshot.timing
        if timing.latency != .zero || timing.parallelism != 1 {
            lines.append("timing latency-ns=\(timing.latency.nanoseconds) parallelism=\(timing.parallelism)")
        }
        let counters = snapshot.counters
        let byOpcode = counters.adminCommandsByOpcode.sorted { $0.key < $1.key }.map { "\(hex($0.key, width: 1)):\($0.value)" }
        lines.append("counters resets=\(counters.resets) notifies=\(counters.notifies) admin-commands=\(counters.adminCommands)"
                     + " admin-errors=\(counters.adminErrors)" + (byOpcode.isEmpty ? "" : " by-opcode=" + byOpcode.joined(separator: ",")))
        let members = snapshot.members
        var bytes: [UInt8] = []
        bytes.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 1 } + members.count * 80)
        for line in lines {
            bytes.append(contentsOf: line.utf8)
            bytes.append(newline)
        }
        // vf INDEX vectors=N features=0xHEX mac=XX:XX:XX:XX:XX:XX in-use=0|1
        for (index, member) in members.enumerated() {
            bytes.append(contentsOf: "vf ".utf8)
            appendDecimal(index, to: &bytes)
            bytes.append(contentsOf: " vectors=".utf8)
            appendDecimal(member.msixVectors, to: &bytes)
            bytes.append(contentsOf: " features=0x".utf8)
            appendHex(member.features.rawValue, to: &bytes)
            bytes.append(contentsOf: " mac=".utf8)
            for (position, byte) in member.mac.enumerated() {
                if position > 0 { bytes.append(UInt8(ascii: ":")) }
                bytes.append(hexDigit(byte >> 4))
                bytes.append(hexDigit(byte & 0xf))
            }
            bytes.append(contentsOf: " in-use=".utf8)
            bytes.append(member.inUse ? UInt8(ascii: "1") : UInt8(ascii: "0"))
            bytes.append(newline)
        }
        // A VF's driver-visible state and DEV_MODE_SET mode, as its device parts (hex).
        for state in snapshot.vfStates {
            bytes.append(contentsOf: "vf-state ".utf8)
            appendDecimal(state.index, to: &bytes)
            bytes.append(contentsOf: (state.stopped ? " stopped=1 parts=" : " stopped=0 parts=").utf8)
            for byte in state.parts {
                bytes.append(hexDigit(byte >> 4))
                bytes.append(hexDigit(byte & 0xf))
            }
            bytes.append(newline)
        }
        return bytes
    }

    static let newline = UInt8(ascii: "\n")

    static func hexDigit(_ value: UInt8) -> UInt8 { value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10 }

    /// `value` in decimal (as `String(value)` writes it).
    static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        if value < 0 {
            bytes.append(contentsOf: String(value).utf8)
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = UInt(value)
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            for position in stride(from: count - 1, through: 0, by: -1) { bytes.append(buffer[position]) }
        }
    }

    /// `value` in lowercase hex without leading zeros (as `String(value, radix: 16)` writes it).
    static func appendHex(_ value: UInt128, to bytes: inout [UInt8]) {
        var started = false
        for shift in stride(from: 124, through: 0, by: -4) {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt128(shift)) & 0xf
            if nibble != 0 || started || shift == 0 {
                started = true
                bytes.append(hexDigit(nibble))
            }
        }
    }

    /// Rebuilds a device from its text form.
    package static func decode(_ text: String, path: String = "<state>") throws(SimulatedStateError) -> SimulatedSRIOVDevice {
        try decode(bytes: Array(text.utf8), path: path)
    }

    /// Rebuilds a device from its text form, as the file's bytes. A `vf` line in the form
    /// ``encodeBytes(_:)`` writes is read on the bytes; any other line (and a `vf` line in
    /// another form) is read word by word, with the same result and the same errors.
    package static func decode(bytes: [UInt8], path: String = "<state>") throws(SimulatedStateError) -> SimulatedSRIOVDevice {
        var configuration = SimulatedDeviceConfiguration()
        var numVFs: Int?
        var sriovNegotiated: Bool?
        // By index: below 4096 in an array (a file has at most 4096 VFs), any other in a dictionary.
        var memberSlots: [MemberResources?] = []
        var otherMembers: [Int: MemberResources] = [:]
        var vfStates: [(line: Int, index: Int, stopped: Bool, parts: [UInt8])] = []
        var counters = SimulatedCounters()
        func fail(_ line: Int, _ message: String) -> SimulatedStateError { .malformed(path: path, line: line, message: message) }
        func setMember(_ index: Int, _ member: MemberResources) {
            if index < 4096 {
                if index >= memberSlots.count { memberSlots.append(contentsOf: repeatElement(nil, count: index + 1 - memberSlots.count)) }
                memberSlots[index] = member
            } else {
                otherMembers[index] = member
            }
        }
        var lineStart = 0
        var number = 0
        var lineCount = 0
        while lineStart <= bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: newline) ?? bytes.count
            number += 1
            lineCount = number
            defer { lineStart = lineEnd + 1 }
            if number == 1 {
                guard bytes[lineStart..<lineEnd].elementsEqual(magic.utf8) else {
                    throw .malformed(path: path, line: 1, message: "not a simulated device state file (expected '\(magic)')")
                }
                continue
            }
            if lineEnd == lineStart { continue }
            if let (index, member) = fastMemberLine(bytes, lineStart, lineEnd) {
                setMember(index, member)
                continue
            }
            let raw = String(decoding: bytes[lineStart..<lineEnd], as: UTF8.self)
            let words = raw.split(separator: " ").map(String.init)
            guard words.count >= 2 else { throw fail(number, "'\(raw)' has no value") }
            func int(_ text: String) throws(SimulatedStateError) -> Int {
                guard let value = Int(text), value >= 0 else { throw fail(number, "'\(text)' is not a count") }
                return value
            }
            func features(_ text: String) throws(SimulatedStateError) -> FeatureSet {
                guard let value = FeatureSet(mask: text) else { throw fail(number, "'\(text)' is not a feature mask") }
                return value
            }
            switch words[0] {
            case "pf":
                guard let address = PCIAddress(words[1]) else { throw fail(number, "'\(words[1])' is not a PCI address") }
                configuration.pfAddress = address
            case "pf-type", "vf-type":
                guard let type = VirtioDeviceType(name: words[1]) else { throw fail(number, "'\(words[1])' is not a virtio device type") }
                if words[0] == "pf-type" { configuration.pfType = type } else { configuration.vfType = type }
            case "total-vfs": configuration.totalVFs = try int(words[1])
            case "num-vfs": numVFs = try int(words[1])
            case "sriov-negotiated": sriovNegotiated = try int(words[1]) != 0
            case "first-vf-offset": configuration.firstVFOffset = try int(words[1])
            case "vf-stride": configuration.vfStride = try int(words[1])
            case "pool": configuration.vfMSIXPool = try int(words[1])
            case "per-vf-max": configuration.perVFMaximumVectors = try int(words[1])
            case "per-vf-min": configuration.perVFMinimumVectors = try int(words[1])
            case "member-supported": configuration.memberSupportedFeatures = try features(words[1])
            case "pf-features": configuration.pfFeatures = try features(words[1])
            case "timing", "counters":
                var fields: [String: String] = [:]
                for word in words.dropFirst() {
                    let pair = word.split(separator: "=", maxSplits: 1).map(String.init)
                    guard pair.count == 2 else { throw fail(number, "'\(word)' is not key=value") }
                    fields[pair[0]] = pair[1]
                }
                if words[0] == "timing" {
                    let latency = try int(fields["latency-ns"] ?? "0"), parallelism = try int(fields["parallelism"] ?? "1")
                    guard parallelism >= 1 else { throw fail(number, "parallelism must be at least 1") }
                    configuration.timing = DeviceTiming(latency: .nanoseconds(latency), parallelism: parallelism)
                    continue
                }
                counters.resets = try int(fields["resets"] ?? "0")
                counters.notifies = try int(fields["notifies"] ?? "0")
                counters.adminCommands = try int(fields["admin-commands"] ?? "0")
                counters.adminErrors = try int(fields["admin-errors"] ?? "0")
                for entry in (fields["by-opcode"] ?? "").split(separator: ",") {
                    let pair = entry.split(separator: ":").map(String.init)
                    guard pair.count == 2, pair[0].hasPrefix("0x"), let opcode = UInt16(pair[0].dropFirst(2), radix: 16) else {
                        throw fail(number, "'\(entry)' is not OPCODE:COUNT")
                    }
                    counters.adminCommandsByOpcode[opcode] = try int(pair[1])
                }
            case "vf":
                let index = try int(words[1])
                var fields: [String: String] = [:]
                for word in words.dropFirst(2) {
                    let pair = word.split(separator: "=", maxSplits: 1).map(String.init)
                    guard pair.count == 2 else { throw fail(number, "'\(word)' is not key=value") }
                    fields[pair[0]] = pair[1]
                }
                guard let vectors = fields["vectors"], let mask = fields["features"], let mac = fields["mac"] else {
                    throw fail(number, "a vf line needs vectors=, features= and mac=")
                }
                let macBytes = mac.split(separator: ":").compactMap { UInt8($0, radix: 16) }
                guard macBytes.count == 6 else { throw fail(number, "'\(mac)' is not a MAC address") }
                setMember(index, MemberResources(msixVectors: try int(vectors), features: try features(mask), mac: macBytes,
                                                 inUse: fields["in-use"] == "1"))
            case "vf-state":
                let index = try int(words[1])
                let fields = Dictionary(words.dropFirst(2).map { word in
                    let pair = word.split(separator: "=", maxSplits: 1).map(String.init)
                    return (pair[0], pair.count == 2 ? pair[1] : "")
                }, uniquingKeysWith: { _, last in last })
                let hex = Array((fields["parts"] ?? "").utf8)
                var parts: [UInt8] = []
                for start in stride(from: 0, to: hex.count - hex.count % 2, by: 2) {
                    guard let byte = UInt8(String(decoding: hex[start..<(start + 2)], as: UTF8.self), radix: 16) else {
                        throw fail(number, "vf-state parts must be hex bytes")
                    }
                    parts.append(byte)
                }
                guard hex.count % 2 == 0, !parts.isEmpty else { throw fail(number, "vf-state needs parts=HEX") }
                vfStates.append((number, index, fields["stopped"] == "1", parts))
            default:
                throw fail(number, "unknown key '\(words[0])'")
            }
        }
        guard configuration.totalVFs >= 1, configuration.totalVFs <= 4096 else { throw fail(1, "total-vfs must be 1 to 4096") }
        configuration.numVFs = numVFs ?? configuration.totalVFs
        guard configuration.numVFs <= configuration.totalVFs else { throw fail(1, "num-vfs exceeds total-vfs") }
        let members = memberSlots.compactMap { $0 }
        guard otherMembers.isEmpty, members.count == configuration.totalVFs, memberSlots.count == configuration.totalVFs else {
            throw fail(lineCount, "expected one vf line for each of the \(configuration.totalVFs) VFs")
        }
        let device = SimulatedSRIOVDevice(configuration: configuration, members: members)
        // Files written before the line existed: VFs that are enabled were enabled by a driver.
        if let sriovNegotiated { device.lock.withLock { device.srIOVNegotiated = sriovNegotiated } }
        for state in vfStates {
            guard state.index < configuration.totalVFs, device.restoreVFState(state.index, stopped: state.stopped, parts: state.parts) else {
                device.stop()
                throw fail(state.line, "vf-state \(state.index) does not restore (no such VF, or parts the VF refuses)")
            }
        }
        device.restoreCounters(counters)
        return device
    }

    /// Writes the device's state to `path` atomically.
    package static func save(_ device: SimulatedSRIOVDevice, to path: String) throws(SimulatedStateError) {
        do { try Sys.writeAtomically(encodeBytes(device), to: path) } catch { throw .file(error) }
    }

    /// Loads a device from `path`.
    package static func load(_ path: String) throws(SimulatedStateError) -> SimulatedSRIOVDevice {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(path, limit: .max) } catch { throw .file(error) }
        return try decode(bytes: bytes, path: path)
    }

    /// The PF address a state file simulates, read without rebuilding the device (its last
    /// `pf` line; the default address when the file names none, as ``decode(_:path:)`` does).
    /// The rest of the file is not checked here: a malformed line is found when the PF is opened.
    package static func pfAddress(inState path: String) throws(SimulatedStateError) -> PCIAddress {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(path, limit: .max) } catch { throw .file(error) }
        let firstEnd = bytes.firstIndex(of: newline) ?? bytes.count
        guard bytes[0..<firstEnd].elementsEqual(magic.utf8) else {
            throw .malformed(path: path, line: 1, message: "not a simulated device state file (expected '\(magic)')")
        }
        // The last `pf` line counts, as in decode.
        var number = 1
        var address = SimulatedDeviceConfiguration().pfAddress
        var lineStart = firstEnd + 1
        let prefix = Array("pf ".utf8)
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: newline) ?? bytes.count
            number += 1
            defer { lineStart = lineEnd + 1 }
            guard bytes[lineStart..<lineEnd].starts(with: prefix) else { continue }
            let text = String(decoding: bytes[(lineStart + 3)..<lineEnd], as: UTF8.self)
            guard let named = PCIAddress(text) else {
                throw .malformed(path: path, line: number, message: "'\(text)' is not a PCI address")
            }
            address = named
        }
        return address
    }

    /// A `vf` line exactly as ``encodeBytes(_:)`` writes it
    /// (`vf INDEX vectors=N features=0xHEX mac=XX:XX:XX:XX:XX:XX in-use=0|1`), read on the
    /// bytes; `nil` for anything else, which the word-by-word reader then reads (or refuses).
    static func fastMemberLine(_ bytes: [UInt8], _ start: Int, _ end: Int) -> (Int, MemberResources)? {
        bytes.withUnsafeBufferPointer { buffer -> (Int, MemberResources)? in
            var position = start
            func literal(_ text: StaticString) -> Bool {
                let count = text.utf8CodeUnitCount
                guard end - position >= count else { return false }
                for offset in 0..<count where buffer[position + offset] != text.utf8Start[offset] { return false }
                position += count
                return true
            }
            func decimal() -> Int? {
                var value = 0
                let first = position
                while position < end, position - first < 18, buffer[position] >= UInt8(ascii: "0"), buffer[position] <= UInt8(ascii: "9") {
                    value = value * 10 + Int(buffer[position] - UInt8(ascii: "0"))
                    position += 1
                }
                return position > first ? value : nil
            }
            func nibble(_ byte: UInt8) -> UInt8? {
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
                default: nil
                }
            }
            guard literal("vf "), let index = decimal(), literal(" vectors="), let vectors = decimal(), literal(" features=0x") else { return nil }
            var mask: UInt128 = 0
            let first = position
            while position < end, position - first < 32, let digit = nibble(buffer[position]) {
                mask = mask << 4 | UInt128(digit)
                position += 1
            }
            guard position > first, literal(" mac=") else { return nil }
            var mac: [UInt8] = []
            mac.reserveCapacity(6)
            for octet in 0..<6 {
                if octet > 0 { guard literal(":") else { return nil } }
                guard end - position >= 2, let high = nibble(buffer[position]), let low = nibble(buffer[position + 1]) else { return nil }
                mac.append(high << 4 | low)
                position += 2
            }
            guard literal(" in-use="), end - position == 1, buffer[position] == UInt8(ascii: "0") || buffer[position] == UInt8(ascii: "1") else { return nil }
            return (index, MemberResources(msixVectors: vectors, features: FeatureSet(rawValue: mask), mac: mac, inUse: buffer[position] == UInt8(ascii: "1")))
        }
    }

    /// Runs `body` holding an exclusive lock on `path` + ".lock" (one process at a time
    /// owns the simulated PF, as one driver owns a real PF's admin queue).
    package static func withLock<T>(_ path: String, _ body: () async throws -> T) async throws -> T {
        let lock = FileLock(path: path + ".lock")
        do { try lock.lock() } catch { throw SimulatedStateError.locked(error) }
        defer { lock.unlock() }
        return try await body()
    }
}
