/// An admin command opcode. Spec: §2.12.1 "Group administration commands"; digest §7.
///
/// Known opcodes carry names; any 16-bit value is representable, because the command set a
/// device lists in LIST_QUERY and the opcodes plugins define (project-defined, remappable)
/// are data, not a closed enum.
public struct AdminOpcode: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The opcode as it is on the wire (le16 at offset 0 of the command).
    public let rawValue: UInt16
    /// The opcode with this wire value (any 16-bit value).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The opcode with this wire value (any 16-bit value).
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    /// LIST_QUERY (0x0): the opcodes a group type supports (virtio 1.3 §2.12.1).
    public static let listQuery = Self(0x0)
    /// LIST_USE (0x1): the opcodes the driver will use (virtio 1.3 §2.12.1).
    public static let listUse = Self(0x1)
    /// LEGACY_COMMON_CFG_WRITE (0x2): a VF's legacy common configuration, written (virtio 1.3 §2.12.1).
    public static let legacyCommonCfgWrite = Self(0x2)
    /// LEGACY_COMMON_CFG_READ (0x3): a VF's legacy common configuration, read (virtio 1.3 §2.12.1).
    public static let legacyCommonCfgRead = Self(0x3)
    /// LEGACY_DEV_CFG_WRITE (0x4): a VF's legacy device configuration, written (virtio 1.3 §2.12.1).
    public static let legacyDevCfgWrite = Self(0x4)
    /// LEGACY_DEV_CFG_READ (0x5): a VF's legacy device configuration, read (virtio 1.3 §2.12.1).
    public static let legacyDevCfgRead = Self(0x5)
    /// LEGACY_NOTIFY_INFO (0x6): where a VF's legacy notifications go (virtio 1.3 §2.12.1).
    public static let legacyNotifyInfo = Self(0x6)
    /// CAP_ID_LIST_QUERY (0x7): the device capability ids the device supports (virtio 1.4, self group).
    public static let capIDListQuery = Self(0x7)
    /// DEVICE_CAP_GET (0x8): one device capability's value (virtio 1.4, self group).
    public static let deviceCapGet = Self(0x8)
    /// DRIVER_CAP_SET (0x9): the driver's capability value (virtio 1.4, self group).
    public static let driverCapSet = Self(0x9)
    /// RESOURCE_OBJ_CREATE (0xa): creates a resource object (virtio 1.4).
    public static let resourceObjCreate = Self(0xa)
    /// RESOURCE_OBJ_MODIFY (0xb): modifies a resource object (virtio 1.4; the text swaps 0xb and 0xc in one place, see the fact sheet §2.4).
    public static let resourceObjModify = Self(0xb)
    /// RESOURCE_OBJ_QUERY (0xc): reads a resource object (virtio 1.4).
    public static let resourceObjQuery = Self(0xc)
    /// RESOURCE_OBJ_DESTROY (0xd): destroys a resource object (virtio 1.4).
    public static let resourceObjDestroy = Self(0xd)
    /// DEV_PARTS_METADATA_GET (0xe): the size and count of a member's device parts (virtio 1.4).
    public static let devPartsMetadataGet = Self(0xe)
    /// DEV_PARTS_GET (0xf): a member's device parts, for migration (virtio 1.4).
    public static let devPartsGet = Self(0xf)
    /// DEV_PARTS_SET (0x10): restores a member's device parts (virtio 1.4).
    public static let devPartsSet = Self(0x10)
    /// DEV_MODE_SET (0x11): a member's mode, active / stopped / freezed (virtio 1.4).
    public static let devModeSet = Self(0x11)

    /// Spec names of the ratified opcodes (1.3: 0x0–0x6; 1.4: 0x7–0x11).
    public static let specNames: [UInt16: String] = [
        0x0: "LIST_QUERY", 0x1: "LIST_USE", 0x2: "LEGACY_COMMON_CFG_WRITE",
        0x3: "LEGACY_COMMON_CFG_READ", 0x4: "LEGACY_DEV_CFG_WRITE", 0x5: "LEGACY_DEV_CFG_READ",
        0x6: "LEGACY_NOTIFY_INFO", 0x7: "CAP_ID_LIST_QUERY", 0x8: "DEVICE_CAP_GET",
        0x9: "DRIVER_CAP_SET", 0xa: "RESOURCE_OBJ_CREATE", 0xb: "RESOURCE_OBJ_MODIFY",
        0xc: "RESOURCE_OBJ_QUERY", 0xd: "RESOURCE_OBJ_DESTROY", 0xe: "DEV_PARTS_METADATA_GET",
        0xf: "DEV_PARTS_GET", 0x10: "DEV_PARTS_SET", 0x11: "DEV_MODE_SET",
    ]

    /// Opcodes at or above this are reserved by the spec (0x8000–0xffff).
    public static let firstReserved: UInt16 = 0x8000

    /// The spec name, or `OPCODE_0xNNNN` for an opcode the spec does not name.
    public var specName: String { Self.specNames[rawValue] ?? "OPCODE_\(hex(rawValue, width: 4))" }
    /// The spec name, as ``specName``.
    public var description: String { specName }
    /// Orders opcodes by their wire value.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An admin group type. Spec: §2.12 "Device groups".
public struct AdminGroupType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The group type as it is on the wire (le16 at offset 2 of the command).
    public let rawValue: UInt16
    /// The group type with this wire value.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The device itself (virtio 1.4).
    public static let selfGroup = Self(rawValue: 0)
    /// SR-IOV: the PF owns the group, its VFs are members numbered from 1.
    public static let srIOV = Self(rawValue: 1)
    /// `self`, `sriov`, or `group-type-N` for a type the spec does not define.
    public var description: String {
        switch rawValue {
        case 0: "self"
        case 1: "sriov"
        default: "group-type-\(rawValue)"
        }
    }
}

/// An SR-IOV group member id on the wire: the VF number starting at 1.
///
/// Spec: §2.12.1.1 — member id = VF number; Linux sends `pci_iov_vf_id(vf) + 1`. The
/// 0-based sysfs `virtfnN` index N is member N + 1.
public struct GroupMemberID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The member id as it is on the wire (le64 at offset 16 of the command).
    public let rawValue: UInt64
    /// The member id with this wire value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The member id of the 0-based VF index (sysfs `virtfnN`).
    public init(vfIndex: Int) {
        precondition(vfIndex >= 0, "VF index must not be negative")
        rawValue = UInt64(vfIndex) + 1
    }
    /// The 0-based VF index, or `nil` for member id 0 (which names no VF).
    public var vfIndex: Int? { rawValue == 0 || rawValue > UInt64(Int.max) ? nil : Int(rawValue - 1) }
    /// No member (commands addressed to the group owner itself).
    public static let none = Self(rawValue: 0)
    /// `member N`, the wire value.
    public var description: String { "member \(rawValue)" }
}

/// An admin command status. Spec: §2.12.1 status values; digest §7.
public struct AdminStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The status as it is on the wire (le16 at offset 0 of the result).
    public let rawValue: UInt16
    /// The status with this wire value (any value; see ``isKnown``).
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// VIRTIO_ADMIN_STATUS_OK (0): the command succeeded.
    public static let ok = Self(rawValue: 0)
    /// VIRTIO_ADMIN_STATUS_ENXIO (6): no such capability or resource (virtio 1.4).
    public static let enxio = Self(rawValue: 6)
    /// VIRTIO_ADMIN_STATUS_EAGAIN (11): try again.
    public static let eagain = Self(rawValue: 11)
    /// VIRTIO_ADMIN_STATUS_ENOMEM (12): out of memory.
    public static let enomem = Self(rawValue: 12)
    /// VIRTIO_ADMIN_STATUS_EBUSY (16): busy (virtio 1.4).
    public static let ebusy = Self(rawValue: 16)
    /// EEXIST (17): already exists; the 1.4 text uses it without listing it.
    public static let eexist = Self(rawValue: 17)
    /// VIRTIO_ADMIN_STATUS_EINVAL (22): invalid argument; the device state did not change.
    public static let einval = Self(rawValue: 22)
    /// VIRTIO_ADMIN_STATUS_ENOSPC (28): resources exhausted (virtio 1.4).
    public static let enospc = Self(rawValue: 28)

    static let names: [UInt16: String] = [
        0: "OK", 6: "ENXIO", 11: "EAGAIN", 12: "ENOMEM", 16: "EBUSY", 17: "EEXIST", 22: "EINVAL", 28: "ENOSPC",
    ]
    static let meanings: [UInt16: String] = [
        0: "success", 6: "no such capability or resource", 11: "try again", 12: "out of memory",
        16: "busy", 17: "already exists", 22: "invalid argument", 28: "resources exhausted",
    ]
    /// The spec name (`EINVAL`), or `status N` for a value the spec does not define.
    public var name: String { Self.names[rawValue] ?? "status \(rawValue)" }
    /// A short meaning for messages.
    public var meaning: String { Self.meanings[rawValue] ?? "unknown status" }
    /// Whether the spec defines this status.
    public var isKnown: Bool { Self.names[rawValue] != nil }
    /// The spec name, as ``name``.
    public var description: String { name }
}

/// An admin command status qualifier. Spec: VIRTIO_ADMIN_STATUS_Q_*; digest §7.
public struct AdminStatusQualifier: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The qualifier as it is on the wire (le16 at offset 2 of the result).
    public let rawValue: UInt16
    /// The qualifier with this wire value.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// VIRTIO_ADMIN_STATUS_Q_OK (0).
    public static let ok = Self(rawValue: 0)
    /// VIRTIO_ADMIN_STATUS_Q_INVALID_COMMAND (1).
    public static let invalidCommand = Self(rawValue: 1)
    /// VIRTIO_ADMIN_STATUS_Q_INVALID_OPCODE (2): the opcode is not in use for the group type.
    public static let invalidOpcode = Self(rawValue: 2)
    /// VIRTIO_ADMIN_STATUS_Q_INVALID_FIELD (3): a field of the command-specific data is invalid.
    public static let invalidField = Self(rawValue: 3)
    /// VIRTIO_ADMIN_STATUS_Q_INVALID_GROUP (4): the device has no such group type (checked first).
    public static let invalidGroup = Self(rawValue: 4)
    /// VIRTIO_ADMIN_STATUS_Q_INVALID_MEMBER (5): no such member in the group (checked after the opcode).
    public static let invalidMember = Self(rawValue: 5)
    /// VIRTIO_ADMIN_STATUS_Q_NORESOURCE (6).
    public static let noResource = Self(rawValue: 6)
    /// VIRTIO_ADMIN_STATUS_Q_TRYAGAIN (7).
    public static let tryAgain = Self(rawValue: 7)

    static let names: [UInt16: String] = [
        0: "OK", 1: "INVALID_COMMAND", 2: "INVALID_OPCODE", 3: "INVALID_FIELD",
        4: "INVALID_GROUP", 5: "INVALID_MEMBER", 6: "NORESOURCE", 7: "TRYAGAIN",
    ]
    /// The spec name without prefix (`INVALID_MEMBER`), or `qualifier N`.
    public var name: String { Self.names[rawValue] ?? "qualifier \(rawValue)" }
    /// The spec name, as ``name``.
    public var description: String { name }
}

/// Byte layout of an admin command. Spec: §2.12.1 `struct virtio_admin_cmd`; digest §7.
public enum AdminCommandLayout {
    // Device-readable part.
    /// Offset of `opcode` (le16).
    public static let opcode = 0
    /// Offset of `group_type` (le16).
    public static let groupType = 2
    /// Offset of `reserved[12]` (zero).
    public static let reserved = 4
    /// Length of `reserved`.
    public static let reservedLength = 12
    /// Offset of `group_member_id` (le64).
    public static let groupMemberID = 16
    /// Command-specific data starts here.
    public static let commandSpecificData = 24
    /// Size of the device-readable header.
    public static let headerSize = 24

    // Device-writable part.
    /// Offset of `status` (le16) in the device-writable part.
    public static let status = 0
    /// Offset of `status_qualifier` (le16).
    public static let statusQualifier = 2
    /// Offset of the result's `reserved[4]`.
    public static let resultReserved = 4
    /// Length of the result's `reserved`.
    public static let resultReservedLength = 4
    /// Command-specific result starts here.
    public static let commandSpecificResult = 8
    /// Size of the device-writable header.
    public static let resultHeaderSize = 8
}

/// The device-readable header of an admin command.
public struct AdminCommandHeader: Hashable, Sendable {
    /// The command's opcode.
    public var opcode: AdminOpcode
    /// The group the command addresses.
    public var groupType: AdminGroupType
    /// The member the command is about (``GroupMemberID/none`` for the owner).
    public var memberID: GroupMemberID

    /// A header with these fields; the reserved bytes are zero.
    public init(opcode: AdminOpcode, groupType: AdminGroupType, memberID: GroupMemberID) {
        self.opcode = opcode
        self.groupType = groupType
        self.memberID = memberID
    }

    /// Encodes the header followed by `data`: the whole device-readable part.
    public func encode(data: [UInt8] = []) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: AdminCommandLayout.headerSize)
        bytes.withUnsafeMutableBytes { encode(into: $0) }
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Writes the header into the first ``AdminCommandLayout/headerSize`` bytes of `buffer`
    /// (reserved bytes zero): a driver encodes straight into its DMA buffer.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= AdminCommandLayout.headerSize, "an admin command header needs \(AdminCommandLayout.headerSize) bytes")
        let header = UnsafeMutableRawBufferPointer(rebasing: buffer[..<AdminCommandLayout.headerSize])
        header.initializeMemory(as: UInt8.self, repeating: 0)
        header.writeLE(opcode.rawValue, at: AdminCommandLayout.opcode)
        header.writeLE(groupType.rawValue, at: AdminCommandLayout.groupType)
        header.writeLE(memberID.rawValue, at: AdminCommandLayout.groupMemberID)
    }

    /// Decodes the header of a device-readable part (the device model's side). Returns
    /// `nil` when fewer than ``AdminCommandLayout/headerSize`` bytes are given.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= AdminCommandLayout.headerSize else { return nil }
        opcode = AdminOpcode(bytes.readLE(UInt16.self, at: AdminCommandLayout.opcode))
        groupType = AdminGroupType(rawValue: bytes.readLE(UInt16.self, at: AdminCommandLayout.groupType))
        memberID = GroupMemberID(rawValue: bytes.readLE(UInt64.self, at: AdminCommandLayout.groupMemberID))
    }
}

/// The device-writable header of an admin command: status and qualifier.
public struct AdminResultHeader: Hashable, Sendable {
    /// The command's status.
    public var status: AdminStatus
    /// The status qualifier (OK when the status is OK).
    public var qualifier: AdminStatusQualifier
    /// A result header with these fields.
    public init(status: AdminStatus, qualifier: AdminStatusQualifier) {
        self.status = status
        self.qualifier = qualifier
    }
    /// Decodes the first ``AdminCommandLayout/resultHeaderSize`` bytes; `nil` when shorter.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= AdminCommandLayout.resultHeaderSize else { return nil }
        status = AdminStatus(rawValue: bytes.readLE(UInt16.self, at: AdminCommandLayout.status))
        qualifier = AdminStatusQualifier(rawValue: bytes.readLE(UInt16.self, at: AdminCommandLayout.statusQualifier))
    }
    /// Encodes status, qualifier and the reserved bytes (the device model's side).
    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: AdminCommandLayout.resultHeaderSize)
        bytes.writeLE(status.rawValue, at: AdminCommandLayout.status)
        bytes.writeLE(qualifier.rawValue, at: AdminCommandLayout.statusQualifier)
        return bytes
    }
}

/// The opcode bitmap of LIST_QUERY / LIST_USE: an array of le64, bit N of the array = opcode N.
public struct AdminOpcodeBitmap: Hashable, Sendable {
    /// The bitmap's le64 words: bit N of the array is opcode N.
    public private(set) var words: [UInt64]

    /// A bitmap of these words.
    public init(words: [UInt64] = []) { self.words = words }
    /// The bitmap with exactly these opcodes set.
    public init<S: Sequence>(opcodes: S) where S.Element == AdminOpcode {
        words = []
        for opcode in opcodes { insert(opcode) }
    }

    /// Whether `opcode`'s bit is set.
    public func contains(_ opcode: AdminOpcode) -> Bool {
        let word = Int(opcode.rawValue) / 64
        return word < words.count && words[word] & (1 << UInt64(opcode.rawValue % 64)) != 0
    }

    /// Sets `opcode`'s bit, growing the bitmap as needed.
    public mutating func insert(_ opcode: AdminOpcode) {
        let word = Int(opcode.rawValue) / 64
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word - words.count + 1)) }
        words[word] |= 1 << UInt64(opcode.rawValue % 64)
    }

    /// The opcodes set, ascending.
    public var opcodes: [AdminOpcode] {
        var out: [AdminOpcode] = []
        for (index, word) in words.enumerated() where word != 0 {
            for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 {
                out.append(AdminOpcode(UInt16(index * 64 + bit)))
            }
        }
        return out
    }

    /// Whether every opcode set here is set in `other` (LIST_USE must be a subset of LIST_QUERY).
    public func isSubset(of other: Self) -> Bool { opcodes.allSatisfy(other.contains) }

    /// Encodes as le64 words (trailing zero words trimmed, at least one word).
    public func encode() -> [UInt8] {
        var trimmed = words
        while trimmed.count > 1, trimmed.last == 0 { trimmed.removeLast() }
        if trimmed.isEmpty { trimmed = [0] }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(trimmed.count * 8)
        for word in trimmed { bytes.appendLE(word) }
        return bytes
    }

    /// Decodes le64 words; a trailing partial word is ignored.
    public init(decoding bytes: [UInt8]) {
        words = stride(from: 0, to: bytes.count - bytes.count % 8, by: 8).map { bytes.readLE(UInt64.self, at: $0) }
    }
}

extension AdminOpcodeBitmap {
    /// This set with `opcodes` added.
    public func union<S: Sequence>(_ opcodes: S) -> AdminOpcodeBitmap where S.Element == AdminOpcode {
        var copy = self
        for opcode in opcodes { copy.insert(opcode) }
        return copy
    }
}
