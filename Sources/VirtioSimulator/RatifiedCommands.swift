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

/// Device-part types [parts:109-230] (device side).
enum ModelPartType {
    static let devFeatures: UInt16 = 0x100
    static let drvFeatures: UInt16 = 0x101
    static let pciCommonCfg: UInt16 = 0x102
    static let deviceStatus: UInt16 = 0x103
    static let vqCfg: UInt16 = 0x104
    static let vqNotifyCfg: UInt16 = 0x105
    static let optionalFlag: UInt8 = 0x01
    static let headerSize = 16
}

/// One device part: header fields and value.
struct ModelPart: Equatable {
    var type: UInt16
    var flags: UInt8 = 0
    var selector: UInt64 = 0  // the 8 selector bytes at +4, little-endian
    var value: [UInt8]

    func encode(into bytes: inout [UInt8]) {
        bytes.appendLE(type)
        bytes.append(flags)
        bytes.append(0)
        bytes.appendLE(selector)
        bytes.appendLE(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    var header: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return Array(bytes.prefix(ModelPartType.headerSize))
    }

    /// Parses parts laid one after another; `nil` when a header or value is cut short.
    static func decode(_ bytes: [UInt8]) -> [ModelPart]? {
        var parts: [ModelPart] = []
        var offset = 0
        while offset < bytes.count {
            // Up to 7 zero bytes after the last part pad the data to a multiple of 8 bytes [admin:622-624].
            if bytes.count - offset < 8 && bytes[offset...].allSatisfy({ $0 == 0 }) { break }
            guard offset + ModelPartType.headerSize <= bytes.count else { return nil }
            let length = Int(bytes.readLE(UInt32.self, at: offset + 12))
            let start = offset + ModelPartType.headerSize
            guard length <= bytes.count - start else { return nil }
            parts.append(ModelPart(type: bytes.readLE(UInt16.self, at: offset), flags: bytes[offset + 2],
                                   selector: bytes.readLE(UInt64.self, at: offset + 4), value: Array(bytes[start..<(start + length)])))
            offset = start + length
        }
        return parts
    }
}

/// A DEV_PARTS resource object [dpcmds:25-29,66-77].
struct DevicePartsObject: Equatable {
    var member: Int
    /// 0 = GET, 1 = SET.
    var kind: UInt8
}

/// What DEV_PARTS_SET stored for a stopped member; applied on resume [dpcmds:239-240].
struct PendingParts {
    var driverFeatures: FeatureSet?
    var status: UInt8?
    var queues: [Int: [UInt8]] = [:]  // VQ_CFG values by index
}

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

    // MARK: Self group: capabilities

    /// CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET (group, opcode and member already checked).
    mutating func executeCapability(_ opcode: AdminOpcode, data: [UInt8]) -> Outcome {
        switch opcode {
        case .capIDListQuery:
            // Bit 0: VIRTIO_DEV_PARTS_CAP [caps:90-99].
            var result: [UInt8] = []
            result.appendLE(UInt64(1))
            return .ok(result)
        case .deviceCapGet:
            let padded = data + [UInt8](repeating: 0, count: max(0, 8 - data.count))
            guard padded.readLE(UInt16.self, at: 0) == 0 else { return .refuse(.enxio, .ok) }  // unknown id SHOULD be ENXIO [caps:222-225]
            return .ok([ratified.deviceGetLimit, ratified.deviceSetLimit])
        default:
            // DRIVER_CAP_SET. Missing readable bytes read as zero [admin:540-546].
            let padded = data + [UInt8](repeating: 0, count: max(0, 10 - data.count))
            guard padded.readLE(UInt16.self, at: 0) == 0 else { return .refuse(.enxio, .ok) }
            let get = padded[8], set = padded[9]
            // A limit above the device's is refused [caps:201-205].
            guard get <= ratified.deviceGetLimit, set <= ratified.deviceSetLimit else { return .refuse(.einval, .invalidField) }
            // Lowering a limit under an existing object disables what it uses [caps:217-220].
            let stranded = ratified.objects.contains { id, object in id >= UInt32(object.kind == 0 ? get : set) }
            guard !stranded else { return .refuse(.ebusy, .ok) }
            ratified.driverGetLimit = get
            ratified.driverSetLimit = set
            return .ok()
        }
    }

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

    // MARK: Resource objects

    /// The DEV_PARTS object named by the 8-byte header at the start of `bytes`, if it is the
    /// member's and of `kind` (nil: either).
    func partsObject(_ bytes: [UInt8], member: Int, kind: UInt8?) -> DevicePartsObject? {
        guard bytes.readLE(UInt16.self, at: 0) == 0, let object = ratified.objects[bytes.readLE(UInt32.self, at: 4)],
              object.member == member, kind == nil || object.kind == kind else { return nil }
        return object
    }

    mutating func createObject(_ member: Int, data: [UInt8]) -> Outcome {
        let bytes = data + [UInt8](repeating: 0, count: max(0, 24 - data.count))
        let type = bytes.readLE(UInt16.self, at: 0)
        let id = bytes.readLE(UInt32.self, at: 4)
        let flags = bytes.readLE(UInt64.self, at: 8)
        let kind = bytes[16]
        // Only DEV_PARTS (0x000) objects; flags are reserved (0) [resobj:128-130]; type 0 GET / 1 SET.
        guard type == 0, flags == 0, kind <= 1 else { return .refuse(.einval, .invalidField) }
        let limit = kind == 0 ? ratified.driverGetLimit : ratified.driverSetLimit
        guard id < UInt32(limit) else { return .refuse(.einval, .invalidField) }  // ids 0..limit-1 [resobj:18-39]
        guard ratified.objects[id] == nil else { return .refuse(.eexist, .ok) }  // [resobj:220-222]
        guard ratified.objects.values.filter({ $0.kind == kind }).count < Int(limit) else { return .refuse(.enospc, .ok) }
        ratified.objects[id] = DevicePartsObject(member: member, kind: kind)
        return .ok()
    }

    // MARK: Device parts

    /// The member's parts in table order [dpcmds:297-321,337-340].
    func currentParts(_ vf: FunctionModel) -> [ModelPart] {
        var parts: [ModelPart] = []
        func features(_ set: FeatureSet) -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.appendLE(set.low64)
            bytes.appendLE(set.high64)
            return bytes
        }
        parts.append(ModelPart(type: ModelPartType.devFeatures, flags: ModelPartType.optionalFlag, value: features(vf.offeredFeatures)))
        parts.append(ModelPart(type: ModelPartType.drvFeatures, value: features(vf.driverFeatures)))
        var numQueues: [UInt8] = []
        numQueues.appendLE(UInt16(vf.queues.count))
        parts.append(ModelPart(type: ModelPartType.pciCommonCfg, selector: UInt64(CommonConfigRegister.numQueues.offset), value: numQueues))
        parts.append(ModelPart(type: ModelPartType.deviceStatus, value: [vf.status.rawValue]))
        for queue in vf.queues {
            var value = [UInt8](repeating: 0, count: 32)
            value.writeLE(UInt16(truncatingIfNeeded: queue.size), at: 0)
            value.writeLE(queue.msixVector, at: 2)
            value.writeLE(UInt16(queue.enabled ? 1 : 0), at: 4)
            value.writeLE(queue.descriptorArea, at: 8)
            value.writeLE(queue.driverArea, at: 16)
            value.writeLE(queue.deviceArea, at: 24)
            parts.append(ModelPart(type: ModelPartType.vqCfg, selector: UInt64(queue.index), value: value))
        }
        for queue in vf.queues {
            var value = [UInt8](repeating: 0, count: 8)
            value.writeLE(UInt16(queue.index), at: 0)
            value.writeLE(UInt16(queue.index), at: 2)
            parts.append(ModelPart(type: ModelPartType.vqNotifyCfg, selector: UInt64(queue.index), value: value))
        }
        return parts
    }

    /// Checks every part, then stores them for the resume; a refused SET changes nothing [dpcmds:242-243].
    mutating func setParts(_ parts: [ModelPart], vf: FunctionModel, index: Int) -> Outcome {
        var pending = ratified.pending[index] ?? PendingParts()
        let own = currentParts(vf)
        for part in parts {
            let expected = own.first { $0.type == part.type && $0.selector == part.selector }
            switch part.type {
            case ModelPartType.devFeatures, ModelPartType.pciCommonCfg, ModelPartType.vqNotifyCfg:
                // Checked against the device's own, never applied [dpcmds:353-356,441-447].
                guard let expected, expected.value == part.value else { return .refuse(.einval, .invalidField) }
            case ModelPartType.drvFeatures:
                guard part.value.count == 16 else { return .refuse(.einval, .invalidField) }  // length must match [dpcmds:348-351]
                let features = FeatureSet(low64: part.value.readLE(UInt64.self, at: 0), high64: part.value.readLE(UInt64.self, at: 8))
                guard features.isSubset(of: vf.offeredFeatures) else { return .refuse(.einval, .invalidField) }
                pending.driverFeatures = features
            case ModelPartType.deviceStatus:
                guard part.value.count == 1 else { return .refuse(.einval, .invalidField) }
                pending.status = part.value[0]
            case ModelPartType.vqCfg:
                guard part.value.count == 32, part.selector < UInt64(vf.queues.count) else { return .refuse(.einval, .invalidField) }
                let queue = vf.queues[Int(part.selector)]
                let size = Int(part.value.readLE(UInt16.self, at: 0))
                let enabled = part.value.readLE(UInt16.self, at: 4)
                guard enabled <= 1, size <= queue.maximumSize, size == 0 || size & (size - 1) == 0 else { return .refuse(.einval, .invalidField) }
                pending.queues[queue.index] = part.value
            default:
                // Unknown parts may be ignored only when flagged OPTIONAL [dpcmds:358-359].
                guard part.flags & ModelPartType.optionalFlag != 0 else { return .refuse(.einval, .invalidField) }
            }
        }
        ratified.pending[index] = pending
        return .ok()
    }

    mutating func apply(_ pending: PendingParts, to vf: FunctionModel) {
        if let features = pending.driverFeatures { vf.driverFeatures = features }
        if let status = pending.status { vf.status = DeviceStatus(rawValue: status) }
        for (index, value) in pending.queues {
            let queue = vf.queues[index]
            queue.size = Int(value.readLE(UInt16.self, at: 0))
            queue.msixVector = value.readLE(UInt16.self, at: 2)
            queue.enabled = value.readLE(UInt16.self, at: 4) == 1
            queue.descriptorArea = value.readLE(UInt64.self, at: 8)
            queue.driverArea = value.readLE(UInt64.self, at: 16)
            queue.deviceArea = value.readLE(UInt64.self, at: 24)
            queue.lastAvail = 0
            queue.usedIndex = 0
            queue.inService.removeAll()
            restoredQueues.append(queue)
        }
    }

    // MARK: Legacy interface

    /// Legacy common-config fields with MSI-X: offset → (width, writable) [pci:827-858].
    static let legacyCommonFields: [Int: (width: Int, writable: Bool)] = [
        0: (4, false), 4: (4, true), 8: (4, true), 12: (2, false), 14: (2, true), 16: (2, true),
        18: (1, true), 19: (1, false), 20: (2, true), 22: (2, true),
    ]

    /// 0x2–0x5: one access covers exactly one field [legacy:55-58,254-266]; little-endian data.
    mutating func legacyAccess(_ opcode: AdminOpcode, vf: FunctionModel, data: [UInt8], room: Int) -> Outcome {
        let isWrite = opcode == .legacyCommonCfgWrite || opcode == .legacyDevCfgWrite
        let isCommon = opcode == .legacyCommonCfgWrite || opcode == .legacyCommonCfgRead
        guard let first = data.first else { return .refuse(.einval, .invalidField) }
        let offset = Int(first)
        // Write: offset, reserved[7], data[] at d+8; read: offset, result length = buffer room.
        let value = isWrite ? Array(data.dropFirst(8)) : []
        let width = isWrite ? value.count : room
        guard width > 0 else { return .refuse(.einval, .invalidField) }
        if isCommon {
            guard let field = Self.legacyCommonFields[offset], field.width == width else { return .refuse(.einval, .invalidField) }
            if isWrite {
                if field.writable { legacyWriteCommon(vf, offset: offset, value: value) }
                return .ok()
            }
            return .ok(legacyReadCommon(vf, offset: offset, width: width))
        }
        guard legacyDeviceFieldFits(vf, offset: offset, width: width) else { return .refuse(.einval, .invalidField) }
        if isWrite {
            // Only the MAC of a net device is writable through the legacy interface.
            if vf.type == .net && offset < 6 {
                vf.deviceConfig[offset] = value[0]
                vf.configGeneration &+= 1
            }
            return .ok()
        }
        return .ok(Array(vf.deviceConfig[offset..<(offset + width)]))
    }

    /// Device-config fields: net has mac[6] (bytes), status, max_virtqueue_pairs, mtu (le16);
    /// other types: any naturally aligned 1/2/4-byte access inside the region.
    func legacyDeviceFieldFits(_ vf: FunctionModel, offset: Int, width: Int) -> Bool {
        guard offset + width <= vf.deviceConfig.count else { return false }
        if vf.type == .net {
            return (offset < 6 && width == 1) || ([6, 8, 10].contains(offset) && width == 2)
        }
        return [1, 2, 4].contains(width) && offset % width == 0
    }

    func legacyReadCommon(_ vf: FunctionModel, offset: Int, width: Int) -> [UInt8] {
        let queue = vf.selectedQueue
        let value: UInt32
        switch offset {
        case 0: value = vf.offeredFeatures.window(0)
        case 4: value = vf.driverFeatures.window(0)
        case 8: value = UInt32(truncatingIfNeeded: (queue?.descriptorArea ?? 0) >> 12)
        case 12: value = UInt32(queue?.maximumSize ?? 0)
        case 14: value = UInt32(vf.queueSelect)
        case 16: value = 0
        case 18: value = UInt32(vf.status.rawValue)
        case 19:
            value = UInt32(vf.isr)
            vf.isr = 0  // reading the ISR clears it
        case 20: value = UInt32(vf.configVector)
        default: value = UInt32(queue?.msixVector ?? CommonConfigLayout.noVector)
        }
        return (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    mutating func legacyWriteCommon(_ vf: FunctionModel, offset: Int, value bytes: [UInt8]) {
        var value: UInt32 = 0
        for (index, byte) in bytes.enumerated() { value |= UInt32(byte) << (8 * index) }
        let queue = vf.selectedQueue
        switch offset {
        case 4: vf.driverFeatures.setWindow(0, to: value)
        case 8:
            // Queue PFN: the legacy ring lives at PFN × 4096 (descriptors, avail, then used at
            // the next 4096 boundary); PFN 0 disables the queue.
            guard let queue else { return }
            if value == 0 {
                queue.reset()
            } else {
                queue.size = queue.maximumSize
                queue.descriptorArea = UInt64(value) << 12
                queue.driverArea = queue.descriptorArea + UInt64(16 * queue.size)
                let availEnd = queue.driverArea + UInt64(6 + 2 * queue.size)
                queue.deviceArea = (availEnd + 4095) & ~4095
                queue.enabled = true
                queue.lastAvail = 0
                queue.usedIndex = 0
            }
        case 14: vf.queueSelect = UInt16(truncatingIfNeeded: value)
        case 16: pendingNotifications.append((vf, Int(value & 0xffff)))
        case 18:
            if value == 0 {
                vf.reset()
            } else {
                // A legacy driver has no FEATURES_OK step; DEVICE_NEEDS_RESET is device-owned.
                var status = DeviceStatus(rawValue: UInt8(truncatingIfNeeded: value))
                status.remove(.deviceNeedsReset)
                vf.status = status
            }
        case 20: vf.configVector = vf.acceptsVector(UInt16(truncatingIfNeeded: value)) ? UInt16(truncatingIfNeeded: value) : CommonConfigLayout.noVector
        case 22:
            if let queue {
                let vector = UInt16(truncatingIfNeeded: value)
                queue.msixVector = vf.acceptsVector(vector) ? vector : CommonConfigLayout.noVector
            }
        default: break
        }
    }
}

extension SimulatedSRIOVDevice {
    /// A restored queue goes on where the ring in guest memory stands: every buffer the
    /// device had seen was written back when it stopped [dpcmds:377-383], so the next
    /// available entry is the used index (lock held).
    func syncRestoredQueues() {
        for queue in admin.restoredQueues where queue.enabled {
            guard let ring = ringView(queue) else { continue }
            queue.usedIndex = ring.loadUsedIndex()
            queue.lastAvail = queue.usedIndex
        }
        admin.restoredQueues = []
    }

    /// Whether VF `index` is stopped (DEV_MODE_SET).
    public func vfStopped(_ index: Int) -> Bool { lock.withLock { vfs[index].stopped } }

    /// The driver-visible state of VF `index`: driver features, device status, and each
    /// queue's size, vector, enable and ring addresses.
    package func vfDriverState(_ index: Int) -> SimulatedDriverState {
        lock.withLock {
            let vf = vfs[index]
            return SimulatedDriverState(driverFeatures: vf.driverFeatures, status: vf.status, configVector: vf.configVector,
                                        queues: vf.queues.map { .init(size: $0.size, vector: $0.msixVector, enabled: $0.enabled,
                                                                       descriptorArea: $0.descriptorArea, driverArea: $0.driverArea,
                                                                       deviceArea: $0.deviceArea) })
        }
    }

    /// The parts of VF `index` as DEV_PARTS_GET ALL would return them, and the stopped flag:
    /// what the state file keeps so that a VF's state persists across invocations.
    func vfPersistentState(_ index: Int) -> (stopped: Bool, parts: [UInt8])? {
        lock.withLock {
            let vf = vfs[index]
            guard vf.stopped || !vf.status.isEmpty || !vf.driverFeatures.isEmpty || vf.queues.contains(where: { $0.enabled || $0.descriptorArea != 0 })
            else { return nil }
            var bytes: [UInt8] = []
            for part in admin.currentParts(vf) { part.encode(into: &bytes) }
            return (vf.stopped, bytes)
        }
    }

    /// Restores what ``vfPersistentState(_:)`` returned; `false` when the parts do not decode.
    func restoreVFState(_ index: Int, stopped: Bool, parts: [UInt8]) -> Bool {
        lock.withLock {
            // The model's own record, applied as kept (not a driver's DEV_PARTS_SET: nothing to verify).
            guard let decoded = ModelPart.decode(parts) else { return false }
            let vf = vfs[index]
            var pending = PendingParts()
            for part in decoded {
                switch part.type {
                case ModelPartType.drvFeatures where part.value.count == 16:
                    pending.driverFeatures = FeatureSet(low64: part.value.readLE(UInt64.self, at: 0), high64: part.value.readLE(UInt64.self, at: 8))
                case ModelPartType.deviceStatus where part.value.count == 1:
                    pending.status = part.value[0]
                case ModelPartType.vqCfg where part.value.count == 32 && part.selector < UInt64(vf.queues.count):
                    pending.queues[Int(part.selector)] = part.value
                default:
                    break
                }
            }
            admin.apply(pending, to: vf)
            syncRestoredQueues()
            admin.members[index].inUse = admin.members[index].inUse || vf.status.contains(.driverOK)
            vf.stopped = stopped
            return true
        }
    }
}

/// A VF's driver-visible state (for tests: save → restore must reproduce it).
package struct SimulatedDriverState: Sendable, Hashable {
    package struct Queue: Sendable, Hashable {
        package var size: Int
        package var vector: UInt16
        package var enabled: Bool
        package var descriptorArea: UInt64
        package var driverArea: UInt64
        package var deviceArea: UInt64
    }
    package var driverFeatures: FeatureSet
    package var status: DeviceStatus
    package var configVector: UInt16
    package var queues: [Queue]
}

extension SimulatedSRIOVDevice {
    /// The DEV_PARTS_CAP limits the driver set with DRIVER_CAP_SET (0 when never set).
    public var driverDevicePartsLimits: (get: Int, set: Int) {
        lock.withLock { (Int(admin.ratified.driverGetLimit), Int(admin.ratified.driverSetLimit)) }
    }
    /// DEV_PARTS resource objects that exist now.
    public var devicePartsObjectCount: Int { lock.withLock { admin.ratified.objects.count } }
}
