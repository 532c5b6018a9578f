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
    package static func encode(_ device: SimulatedSRIOVDevice) -> String {
        let configuration = device.configuration
        var lines = [magic,
                     "pf \(configuration.pfAddress)",
                     "pf-type \(configuration.pfType.name)",
                     "vf-type \(configuration.vfType.name)",
                     "total-vfs \(configuration.totalVFs)",
                     "num-vfs \(device.numVFs)",
                     "sriov-negotiated \(device.sriovNegotiated ? 1 : 0)",
                     "first-vf-offset \(configuration.firstVFOffset)",
                     "vf-stride \(configuration.vfStride)",
                     "pool \(configuration.vfMSIXPool)",
                     "per-vf-max \(configuration.perVFMaximumVectors)",
                     "per-vf-min \(configuration.perVFMinimumVectors)",
                     "member-supported \(configuration.memberSupportedFeatures.hexMask)",
                     "pf-features \(configuration.pfFeatures.hexMask)"]
        let timing = device.currentTiming
        if timing.latency != .zero || timing.parallelism != 1 {
            lines.append("timing latency-ns=\(timing.latency.nanoseconds) parallelism=\(timing.parallelism)")
        }
        let counters = device.counters
        let byOpcode = counters.adminCommandsByOpcode.sorted { $0.key < $1.key }.map { "\(hex($0.key, width: 1)):\($0.value)" }
        lines.append("counters resets=\(counters.resets) notifies=\(counters.notifies) admin-commands=\(counters.adminCommands)"
                     + " admin-errors=\(counters.adminErrors)" + (byOpcode.isEmpty ? "" : " by-opcode=" + byOpcode.joined(separator: ",")))
        for (index, member) in device.members.enumerated() {
            let mac = member.mac.map { byte -> String in
                let text = String(byte, radix: 16)
                return text.count == 1 ? "0" + text : text
            }.joined(separator: ":")
            lines.append("vf \(index) vectors=\(member.msixVectors) features=\(member.features.hexMask) mac=\(mac) in-use=\(member.inUse ? 1 : 0)")
        }
        // A VF's driver-visible state and DEV_MODE_SET mode, as its device parts (hex).
        for index in 0..<configuration.totalVFs {
            guard let state = device.vfPersistentState(index) else { continue }
            lines.append("vf-state \(index) stopped=\(state.stopped ? 1 : 0) parts=\(state.parts.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Rebuilds a device from its text form.
    package static func decode(_ text: String, path: String = "<state>") throws(SimulatedStateError) -> SimulatedSRIOVDevice {
        var configuration = SimulatedDeviceConfiguration()
        var numVFs: Int?
        var sriovNegotiated: Bool?
        var members: [Int: MemberResources] = [:]
        var vfStates: [(line: Int, index: Int, stopped: Bool, parts: [UInt8])] = []
        var counters = SimulatedCounters()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first.map(String.init) == magic else {
            throw .malformed(path: path, line: 1, message: "not a simulated device state file (expected '\(magic)')")
        }
        func fail(_ line: Int, _ message: String) -> SimulatedStateError { .malformed(path: path, line: line, message: message) }
        for (offset, raw) in lines.enumerated().dropFirst() where !raw.isEmpty {
            let number = offset + 1
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
                members[index] = MemberResources(msixVectors: try int(vectors), features: try features(mask), mac: macBytes,
                                                 inUse: fields["in-use"] == "1")
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
        guard members.count == configuration.totalVFs, members.keys.allSatisfy({ $0 < configuration.totalVFs }) else {
            throw fail(lines.count, "expected one vf line for each of the \(configuration.totalVFs) VFs")
        }
        let device = SimulatedSRIOVDevice(configuration: configuration, members: (0..<configuration.totalVFs).map { members[$0]! })
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
        do { try Sys.writeAtomically(Array(encode(device).utf8), to: path) } catch { throw .file(error) }
    }

    /// Loads a device from `path`.
    package static func load(_ path: String) throws(SimulatedStateError) -> SimulatedSRIOVDevice {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(path, limit: .max) } catch { throw .file(error) }
        return try decode(String(decoding: bytes, as: UTF8.self), path: path)
    }

    /// The PF address a state file simulates, read without rebuilding the device (its last
    /// `pf` line; the default address when the file names none, as ``decode(_:path:)`` does).
    /// The rest of the file is not checked here: a malformed line is found when the PF is opened.
    package static func pfAddress(inState path: String) throws(SimulatedStateError) -> PCIAddress {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(path, limit: .max) } catch { throw .file(error) }
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).makeIterator()
        guard lines.next().map(String.init) == magic else {
            throw .malformed(path: path, line: 1, message: "not a simulated device state file (expected '\(magic)')")
        }
        // The last `pf` line counts, as in decode.
        var number = 1
        var address = SimulatedDeviceConfiguration().pfAddress
        while let line = lines.next() {
            number += 1
            guard line.hasPrefix("pf ") else { continue }
            guard let named = PCIAddress(String(line.dropFirst(3))) else {
                throw .malformed(path: path, line: number, message: "'\(line.dropFirst(3))' is not a PCI address")
            }
            address = named
        }
        return address
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
