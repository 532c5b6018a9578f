import VirtioSpec

// The ratified virtio 1.4 admin commands, device side: legacy access (0x2–0x5),
// capabilities (0x7–0x9, self group), resource objects (0xa, 0xd) for DEV_PARTS objects and
// device parts (0xe–0x11). Layouts and rules: shared/spec/ratified-admin-commands.md (the
// fact sheet, "FS §n" below), which cites the spec lines.
//
// Choices where the spec is silent or inconsistent (flagged as in FS §7):
// - A1: RESOURCE_OBJ_MODIFY/QUERY (0xb/0xc) are neither listed nor implemented: the opcode
//   table and the command text disagree on their numbers.
// - LEGACY_NOTIFY_INFO (0x6) is not listed: a device that supports it MUST hardwire VF
//   BAR0 to zero [legacy:199-200] and `bar` 0 is not valid [legacy:221], but the model's
//   functions have only BAR0. 0x2–0x5 are supported together [legacy:241-245].
// - A9: self-group 0x7–0x9 are accepted when enabled by LIST_USE of either group (Linux
//   never sends a self-group LIST_USE and lists them in the SR-IOV list).
// - A12: DEV_PARTS objects are created in the SR-IOV group for a member (as Linux does);
//   ids are per owner; an id must be below the driver's limit of its kind (get or set).
// - DEV_PARTS_SET on a running member is refused with EBUSY (the spec says only "SHOULD
//   return an error" [dpcmds:342-343]).
// - A3: METADATA_GET and DEV_PARTS_GET answer ENOMEM when the result does not fit
//   [dpcmds:164-166]; other commands follow the framework's truncation rule.
// - PCI_COMMON_CFG parts: the model reports num_queues (offset 18) and verifies it on SET
//   (the device SHOULD verify and not apply PCI_COMMON_CFG [dpcmds:441-447]).

/// State of the ratified command set, held by the admin processor (lock held).
struct RatifiedState {
    /// The device's DEV_PARTS_CAP limits [dpcmds:46-55].
    var deviceGetLimit: UInt8
    var deviceSetLimit: UInt8
    /// What DRIVER_CAP_SET set; a limit never set counts as 0 [caps:229-230].
    var driverGetLimit: UInt8 = 0
    var driverSetLimit: UInt8 = 0
    var objects: [UInt32: DevicePartsObject] = [:]
    var pending: [Int: PendingParts] = [:]

    /// What an owner reset clears: driver capabilities [caps:227] and objects [resobj:79-82].
    mutating func ownerReset() {
        driverGetLimit = 0
        driverSetLimit = 0
        objects = [:]
    }
}

extension AdminCommandProcessor {
    /// Ratified opcodes the model implements in the SR-IOV group (0x7–0x9 listed there for
    /// Linux, fact sheet A9, and refused there with INVALID_GROUP).
    static let ratifiedSRIOVOpcodes: [AdminOpcode] = [
        .legacyCommonCfgWrite, .legacyCommonCfgRead, .legacyDevCfgWrite, .legacyDevCfgRead,
        .capIDListQuery, .deviceCapGet, .driverCapSet, .resourceObjCreate, .resourceObjDestroy,
        .devPartsMetadataGet, .devPartsGet, .devPartsSet, .devModeSet,
    ]
    /// The capability commands: self group only [caps:73-74,87-88].
    static let capabilityOpcodes: [AdminOpcode] = [.capIDListQuery, .deviceCapGet, .driverCapSet]
    /// Every opcode ``executeRatified(_:group:member:data:room:)`` may answer.
    static let ratifiedOpcodes = AdminOpcodeBitmap(opcodes: ratifiedSRIOVOpcodes + capabilityOpcodes)

    // MARK: SR-IOV group

    /// A ratified command (group, opcode and member checked by `execute`), or `nil` when
    /// `opcode` is not one.
    mutating func executeRatified(_ opcode: AdminOpcode, group: AdminGroupType, member: GroupMemberID, data: [UInt8], room: Int) -> Outcome? {
        if Self.capabilityOpcodes.contains(opcode) {
            // Self group only: MUST fail elsewhere [caps:207-210].
            return group == .selfGroup ? executeCapability(opcode, data: data) : .refuse(.einval, .invalidGroup)
        }
        guard Self.ratifiedSRIOVOpcodes.contains(opcode), group == .srIOV else { return nil }
        guard let index = memberIndex(member), index < vfFunctions.count else { return .refuse(.einval, .invalidMember) }
        let vf = vfFunctions[index]
        switch opcode {
        case .legacyCommonCfgWrite, .legacyCommonCfgRead, .legacyDevCfgWrite, .legacyDevCfgRead:
            let outcome = legacyAccess(opcode, vf: vf, data: data, room: room)
            members[index].inUse = vf.status.contains(.driverOK)  // as for a modern status write
            return outcome
        case .resourceObjCreate:
            return createObject(index, data: data)
        case .resourceObjDestroy:
            let hdr = data + [UInt8](repeating: 0, count: max(0, 8 - data.count))
            let id = hdr.readLE(UInt32.self, at: 4)
            guard hdr.readLE(UInt16.self, at: 0) == 0 else { return .refuse(.einval, .invalidField) }
            guard let object = ratified.objects[id], object.member == index else { return .refuse(.enxio, .ok) }  // [resobj:224-227]
            ratified.objects[id] = nil
            return .ok()
        case .devPartsMetadataGet:
            let bytes = data + [UInt8](repeating: 0, count: max(0, 16 - data.count))
            guard partsObject(bytes, member: index, kind: nil) != nil else { return .refuse(.enxio, .ok) }
            let parts = currentParts(vf)
            var result = [UInt8](repeating: 0, count: 8)
            switch bytes[8] {
            case 0: result.writeLE(UInt32(parts.reduce(0) { $0 + ModelPartType.headerSize + $1.value.count }), at: 0)
            case 1: result.writeLE(UInt32(parts.count), at: 0)
            case 2:
                result.writeLE(UInt32(parts.count), at: 0)
                for part in parts { result += part.header }
            default: return .refuse(.einval, .invalidField)
            }
            guard result.count <= room else { return .refuse(.enomem, .ok) }
            return .ok(result)
        case .devPartsGet:
            let bytes = data + [UInt8](repeating: 0, count: max(0, 16 - data.count))
            guard partsObject(bytes, member: index, kind: 0) != nil else { return .refuse(.enxio, .ok) }
            var parts = currentParts(vf)
            switch bytes[8] {
            case 1: break
            case 0:
                // SELECTED: the headers after d+16 name the parts; a missing one is skipped [dpcmds:210-211].
                let list = Array(bytes.dropFirst(16))
                guard list.count % ModelPartType.headerSize == 0 else { return .refuse(.einval, .invalidField) }
                let wanted = stride(from: 0, to: list.count, by: ModelPartType.headerSize).map {
                    (list.readLE(UInt16.self, at: $0), list.readLE(UInt64.self, at: $0 + 4))
                }
                parts = parts.filter { part in wanted.contains { $0.0 == part.type && $0.1 == part.selector } }
            default: return .refuse(.einval, .invalidField)
            }
            var result: [UInt8] = []
            for part in parts { part.encode(into: &result) }
            guard result.count <= room else { return .refuse(.enomem, .ok) }
            return .ok(result)
        case .devPartsSet:
            let bytes = data + [UInt8](repeating: 0, count: max(0, 8 - data.count))
            guard partsObject(bytes, member: index, kind: 1) != nil else { return .refuse(.enxio, .ok) }
            guard vf.stopped else { return .refuse(.ebusy, .ok) }
            guard let parts = ModelPart.decode(Array(bytes.dropFirst(8))) else { return .refuse(.einval, .invalidField) }
            return setParts(parts, vf: vf, index: index)
        case .devModeSet:
            let flags = data.first ?? 0
            guard flags & ~1 == 0 else { return .refuse(.einval, .invalidField) }
            if flags & 1 == 1 {
                vf.stopped = true  // stopping a stopped device succeeds [dpcmds:404-410]
            } else {
                if vf.stopped, let pending = ratified.pending.removeValue(forKey: index) {
                    apply(pending, to: vf)
                    members[index].inUse = vf.status.contains(.driverOK)  // a VF restored to DRIVER_OK is in use
                }
                if vf.stopped {
                    // Notifications the driver sent while the VF was stopped are served now.
                    for queue in vf.notifiedWhileStopped.sorted() { pendingNotifications.append((vf, queue)) }
                    vf.notifiedWhileStopped = []
                }
                vf.stopped = false
            }
            return .ok()
        default:
            return .refuse(.einval, .invalidOpcode)
        }
    }

}
