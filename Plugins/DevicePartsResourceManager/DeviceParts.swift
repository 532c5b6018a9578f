import VirtioSpec

/// Layouts of the device-parts commands and of a device part (virtio 1.4, fact sheet §2.5).
package enum DevicePartsLayout {
    package static let metadataGet = AdminOpcode(0xe)
    package static let partsGet = AdminOpcode(0xf)
    package static let partsSet = AdminOpcode(0x10)
    package static let modeSet = AdminOpcode(0x11)

    /// DEV_PARTS object-specific data of CREATE: `type` u8 @0 (0 GET, 1 SET), reserved[7] [dpcmds:66-77].
    package static let objectKindGet: UInt8 = 0
    package static let objectKindSet: UInt8 = 1
    /// METADATA_GET data: object header (8), `type` u8 @8 (0 SIZE, 1 COUNT, 2 LIST), reserved[7] [dpcmds:114-122].
    package static let metadataType = 8
    package static let metadataDataSize = 16
    package static let metadataSize: UInt8 = 0
    package static let metadataCount: UInt8 = 1
    package static let metadataList: UInt8 = 2
    /// METADATA_GET result: size or count le32 @0, reserved le32 @4, headers @8 (LIST) [dpcmds:124-140].
    package static let metadataResultSize = 8
    /// DEV_PARTS_GET data: object header (8), `type` u8 @8 (0 SELECTED, 1 ALL), reserved[7], headers @16 [dpcmds:181-189].
    package static let getType = 8
    package static let getDataSize = 16
    package static let getSelected: UInt8 = 0
    package static let getAll: UInt8 = 1
    /// DEV_PARTS_SET data: object header (8), parts @8 [dpcmds:223-226].
    package static let setParts = 8
    /// DEV_MODE_SET data: `flags` u8 @0; bit 0 STOPPED (the constant `..._F_STOPPED` is the bit number 0) [dpcmds:256-266].
    package static let modeStopped: UInt8 = 0x01
    package static let modeRunning: UInt8 = 0x00

    /// `virtio_dev_part_hdr` (16 bytes) [parts:11-34]: part_type le16 @0, flags u8 @2,
    /// reserved u8 @3, selector 8 bytes @4, length le32 @12, value @16.
    package static let partHeaderSize = 16
    package static let partType = 0
    package static let partFlags = 2
    package static let partSelector = 4
    package static let partLength = 12
    package static let partOptional: UInt8 = 0x01
}

/// Device-part types [parts:109-230].
package enum DevicePartType {
    package static let devFeatures: UInt16 = 0x100
    package static let drvFeatures: UInt16 = 0x101
    package static let pciCommonCfg: UInt16 = 0x102
    package static let deviceStatus: UInt16 = 0x103
    package static let vqCfg: UInt16 = 0x104
    package static let vqNotifyCfg: UInt16 = 0x105

    package static func name(_ type: UInt16) -> String {
        switch type {
        case devFeatures: "DEV_FEATURES"
        case drvFeatures: "DRV_FEATURES"
        case pciCommonCfg: "PCI_COMMON_CFG"
        case deviceStatus: "DEVICE_STATUS"
        case vqCfg: "VQ_CFG"
        case vqNotifyCfg: "VQ_NOTIFY_CFG"
        default: "PART_\(hex(type, width: 4))"
        }
    }
}

/// One device part: its header and value.
package struct DevicePart: Sendable, Hashable {
    package var type: UInt16
    package var flags: UInt8
    /// The 8 selector bytes (PCI_COMMON_CFG offset le32, or vq_index le16, or device_type_raw).
    package var selector: [UInt8]
    package var value: [UInt8]

    package init(type: UInt16, flags: UInt8 = 0, selector: [UInt8] = [UInt8](repeating: 0, count: 8), value: [UInt8]) {
        self.type = type
        self.flags = flags
        self.selector = selector
        self.value = value
    }

    /// `selector.vq_index` (VQ_CFG, VQ_NOTIFY_CFG) or `selector.pci_common_cfg.offset` (low 16 bits).
    package var selectorIndex: Int { Int(selector.readLE(UInt16.self, at: 0)) }

    package func encode(into bytes: inout [UInt8]) {
        bytes.appendLE(type)
        bytes.append(flags)
        bytes.append(0)
        bytes.append(contentsOf: selector.prefix(8) + [UInt8](repeating: 0, count: max(0, 8 - selector.count)))
        bytes.appendLE(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    package static func encode(_ parts: [DevicePart]) -> [UInt8] {
        var bytes: [UInt8] = []
        for part in parts { part.encode(into: &bytes) }
        return bytes
    }

    /// Parts laid one after another (no padding between them is stated; none is assumed).
    package static func decode(_ bytes: [UInt8]) -> Result<[DevicePart], DevicePartsError> {
        var parts: [DevicePart] = []
        var offset = 0
        while offset < bytes.count {
            // Up to 7 zero bytes after the last part pad a buffer to a multiple of 8 bytes.
            if bytes.count - offset < 8 && bytes[offset...].allSatisfy({ $0 == 0 }) { break }
            guard bytes.count - offset >= DevicePartsLayout.partHeaderSize else {
                return .failure(.malformed("a part header at byte \(offset) is cut short (\(bytes.count - offset) of 16 bytes)"))
            }
            let length = Int(bytes.readLE(UInt32.self, at: offset + DevicePartsLayout.partLength))
            let start = offset + DevicePartsLayout.partHeaderSize
            guard length <= bytes.count - start else {
                return .failure(.malformed("the part at byte \(offset) says \(length) value bytes but \(bytes.count - start) remain"))
            }
            parts.append(DevicePart(type: bytes.readLE(UInt16.self, at: offset), flags: bytes[offset + DevicePartsLayout.partFlags],
                                    selector: Array(bytes[(offset + 4)..<(offset + 12)]), value: Array(bytes[start..<(start + length)])))
            offset = start + length
        }
        return .success(parts)
    }

    /// Feature bits of a DEV_FEATURES / DRV_FEATURES value (le64 words).
    package var features: FeatureSet? {
        guard value.count % 8 == 0, value.count >= 8 else { return nil }
        return FeatureSet(low64: value.readLE(UInt64.self, at: 0), high64: value.count >= 16 ? value.readLE(UInt64.self, at: 8) : 0)
    }

    /// One line for people.
    package func describe(deviceType: VirtioDeviceType?) -> String {
        let name = DevicePartType.name(type) + (flags & DevicePartsLayout.partOptional != 0 ? " (optional)" : "")
        switch type {
        case DevicePartType.devFeatures, DevicePartType.drvFeatures:
            guard let features else { break }
            return "\(name): \(features.hexMask) \(features.names(for: deviceType).joined(separator: " "))"
        case DevicePartType.pciCommonCfg:
            let offset = Int(selector.readLE(UInt32.self, at: 0))
            let field = CommonConfigRegister(offset: offset).map { "\($0)" } ?? "offset \(offset)"
            var number: UInt64 = 0
            for (index, byte) in value.prefix(8).enumerated() { number |= UInt64(byte) << (8 * index) }
            return "\(name) \(field) (offset \(offset)): \(number)"
        case DevicePartType.deviceStatus where value.count == 1:
            return "\(name): \(DeviceStatus(rawValue: value[0]))"
        case DevicePartType.vqCfg where value.count == 32:
            let size = value.readLE(UInt16.self, at: 0)
            let vector = value.readLE(UInt16.self, at: 2)
            let enabled = value.readLE(UInt16.self, at: 4)
            return "\(name) queue \(selectorIndex): size \(size), vector \(vector == 0xffff ? "none" : String(vector)), enabled \(enabled), "
                + "desc \(hex(value.readLE(UInt64.self, at: 8))), driver \(hex(value.readLE(UInt64.self, at: 16))), device \(hex(value.readLE(UInt64.self, at: 24)))"
        case DevicePartType.vqNotifyCfg where value.count == 8:
            return "\(name) queue \(selectorIndex): notify_off \(value.readLE(UInt16.self, at: 0)), notif_config_data \(value.readLE(UInt16.self, at: 2))"
        default:
            break
        }
        return "\(name): \(value.count) bytes \(hexBytes(value))"
    }
}

/// Why a parts file cannot be used.
package enum DevicePartsError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed(String)
    case file(path: String, message: String)
    package var description: String {
        switch self {
        case .malformed(let message): "the device parts do not decode: \(message)."
        case let .file(path, message): "\(path): \(message)."
        }
    }
}

/// A parts file: a versioned text header naming PF, VF and device type, then the parts as
/// DEV_PARTS_GET returned them.
///
/// ```
/// virtio-admin device parts 1
/// pf 0000:3b:00.0
/// vf 0
/// type net
/// bytes 243
///
/// <243 bytes of parts>
/// ```
package struct DevicePartsFile: Sendable, Hashable {
    package static let magic = "virtio-admin device parts 1"
    package var pf: PCIAddressText
    package var vf: Int
    package var deviceType: VirtioDeviceType
    package var parts: [UInt8]

    package init(pf: PCIAddressText, vf: Int, deviceType: VirtioDeviceType, parts: [UInt8]) {
        self.pf = pf
        self.vf = vf
        self.deviceType = deviceType
        self.parts = parts
    }

    package var encoded: [UInt8] {
        Array("\(Self.magic)\npf \(pf)\nvf \(vf)\ntype \(deviceType.name)\nbytes \(parts.count)\n\n".utf8) + parts
    }

    package init(decoding bytes: [UInt8], path: String) throws(DevicePartsError) {
        func fail(_ message: String) -> DevicePartsError { .file(path: path, message: message) }
        var headerEnd: Int?
        for index in 1..<max(bytes.count, 1) where bytes[index] == 0x0a && bytes[index - 1] == 0x0a {
            headerEnd = index
            break
        }
        guard let headerEnd else { throw fail("not a device parts file (no header)") }
        let lines = String(decoding: bytes[0..<(headerEnd - 1)], as: UTF8.self).split(separator: "\n").map(String.init)
        guard lines.first == Self.magic else { throw fail("not a device parts file (expected '\(Self.magic)' on line 1)") }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            let pair = line.split(separator: " ", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { throw fail("header line '\(line)' is not 'key value'") }
            fields[pair[0]] = pair[1]
        }
        guard let pf = fields["pf"] else { throw fail("the header names no PF") }
        guard let vfText = fields["vf"], let vf = Int(vfText), vf >= 0 else { throw fail("the header names no VF") }
        guard let typeText = fields["type"], let type = VirtioDeviceType(name: typeText) else { throw fail("the header names no known device type") }
        guard let countText = fields["bytes"], let count = Int(countText) else { throw fail("the header gives no byte count") }
        let body = Array(bytes[(headerEnd + 1)...])
        guard body.count == count else { throw fail("the header says \(count) bytes of parts but \(body.count) follow") }
        if case .failure(let error) = DevicePart.decode(body) { throw fail(error.description) }
        self.init(pf: pf, vf: vf, deviceType: type, parts: body)
    }

    /// The decoded parts (the file's are checked when it is read).
    package var decodedParts: [DevicePart] { (try? DevicePart.decode(parts).get()) ?? [] }

    /// `parts show`: one line per part.
    package var description: String {
        (["device parts of PF \(pf) VF \(vf), a virtio \(deviceType.name) device (\(parts.count) bytes)"]
            + decodedParts.map { "  " + $0.describe(deviceType: deviceType) }).joined(separator: "\n")
    }
}

/// A PCI address as the file spells it.
package typealias PCIAddressText = String
