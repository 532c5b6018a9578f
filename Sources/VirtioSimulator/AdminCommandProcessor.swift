import VirtioProjectCommands
import VirtioSpec

/// The group owner's admin command set: LIST_QUERY/LIST_USE and the project-defined
/// MSI-X, feature-bit and MAC commands, with the device's own validation.
///
/// Two groups: the SR-IOV group (type 1; the VFs are its members, ids 1...NumVFs) and the
/// self group (type 0; the owner is its only member, id 0), each with its own command list
/// and its own LIST_USE state [admin:380-383]. MSIX_POOL_GET asks about the owner itself, so
/// it belongs to the self group; every other project command names a VF.
///
/// Checks up front, in the spec's order (ratified fact sheet §3, [admin:344-357,417-432]):
/// group type (INVALID_GROUP; the whole SR-IOV group while VF Enable is clear), then opcode
/// (INVALID_OPCODE: not listed, or not enabled by LIST_USE), then member (INVALID_MEMBER),
/// then the driver-side MUSTs the model enforces: LIST_USE with another command outstanding
/// [admin:446-449] and parts that are not multiples of 8 bytes [admin:622-624], both
/// EINVAL / INVALID_COMMAND. A refused command changes no state. A result longer than the
/// writable buffer is truncated, never failed [admin:589-591].
struct AdminCommandProcessor {
    /// One group type's command list and LIST_USE state.
    struct GroupCommands {
        var supported: AdminOpcodeBitmap
        var inUse: AdminOpcodeBitmap
    }

    var opcodes: ProjectOpcodeTable
    var groups: [UInt16: GroupCommands]
    var pool: Int
    var perMemberMaximum: Int
    var perMemberMinimum: Int
    var memberSupportedFeatures: FeatureSet
    var members: [MemberResources]
    var numVFs: Int
    var strictness: SimulatedStrictness
    /// The member the last command changed, if any.
    var changedMember: Int?
    /// The ratified commands' state (RatifiedCommands.swift and its Ratified*.swift siblings) and the VFs they act on.
    var ratified: RatifiedState
    var vfFunctions: [FunctionModel] = []
    /// Queues (VF, queue) the device processes after this command: legacy Queue Notify
    /// writes, and the queues a resumed VF was notified about while stopped.
    var pendingNotifications: [(FunctionModel, Int)] = []
    /// Queues a DEV_PARTS_SET took effect on: their ring indices are read from guest memory.
    var restoredQueues: [QueueModel] = []

    static let alwaysInUse: [AdminOpcode] = [.listQuery, .listUse]

    init(configuration: SimulatedDeviceConfiguration, members: [MemberResources]) {
        opcodes = configuration.opcodes
        let listed = configuration.supportedOpcodes.map(Set.init)
        func commands(_ implemented: [AdminOpcode]) -> GroupCommands {
            GroupCommands(supported: AdminOpcodeBitmap(opcodes: implemented.filter { listed?.contains($0) ?? true }).union(Self.alwaysInUse),
                          inUse: AdminOpcodeBitmap(opcodes: Self.alwaysInUse))
        }
        groups = [AdminGroupType.srIOV.rawValue: commands(configuration.srIOVGroupOpcodes)]
        if configuration.strictness.selfGroup {
            groups[AdminGroupType.selfGroup.rawValue] = commands(configuration.selfGroupOpcodes)
        }
        pool = configuration.vfMSIXPool
        perMemberMaximum = configuration.perVFMaximumVectors
        perMemberMinimum = configuration.perVFMinimumVectors
        memberSupportedFeatures = configuration.memberSupportedFeatures
        self.members = members
        numVFs = configuration.numVFs
        strictness = configuration.strictness
        ratified = RatifiedState(deviceGetLimit: configuration.devicePartsGetLimit, deviceSetLimit: configuration.devicePartsSetLimit)
    }

    /// Vectors of the pool not given to a VF.
    var availableVectors: Int { pool - members.prefix(numVFs).reduce(0) { $0 + $1.msixVectors } }

    /// Resets what a device reset resets: the negotiated command lists.
    mutating func deviceReset() {
        ratified.ownerReset()
        guard strictness.resetClearsListUse else { return }
        for key in groups.keys { groups[key]!.inUse = AdminOpcodeBitmap(opcodes: Self.alwaysInUse) }
    }

    /// The SR-IOV group's list as LIST_QUERY reports it (and the union over groups).
    var supported: AdminOpcodeBitmap { groups.values.reduce(AdminOpcodeBitmap()) { $0.union($1.supported.opcodes) } }

    struct Outcome {
        var status: AdminStatus
        var qualifier: AdminStatusQualifier
        var result: [UInt8]
        static func ok(_ result: [UInt8] = []) -> Outcome { Outcome(status: .ok, qualifier: .ok, result: result) }
        static func refuse(_ status: AdminStatus, _ qualifier: AdminStatusQualifier) -> Outcome { Outcome(status: status, qualifier: qualifier, result: []) }
    }

    /// Opcodes whose part lengths carry meaning (the legacy config accesses, fact sheet A5):
    /// the multiple-of-8 rule is not applied to them.
    /// Linux's lengths are accepted too (fact sheet §6.1 item 5, §6.2): DEVICE_CAP_GET with a
    /// 2-byte result, DRIVER_CAP_SET with 10 bytes of data, DEV_PARTS_GET into a buffer of
    /// the SIZE METADATA_GET gave, DEV_PARTS_SET with the parts as received, DEV_MODE_SET
    /// with 1 byte.
    static let lengthCarriesMeaning: Set<AdminOpcode> = [AdminOpcode(0x2), AdminOpcode(0x3), AdminOpcode(0x4), AdminOpcode(0x5),
                                                         AdminOpcode(0x8), AdminOpcode(0x9), AdminOpcode(0xf), AdminOpcode(0x10), AdminOpcode(0x11)]

    /// Executes one command (its device-readable bytes) and returns status and result.
    /// - Parameters:
    ///   - resultCapacity: bytes of the device-writable part (status header included).
    ///   - othersOutstanding: other commands of the same admin queue are in service.
    mutating func execute(_ command: [UInt8], resultCapacity: Int, othersOutstanding: Bool = false) -> Outcome {
        changedMember = nil
        guard let header = AdminCommandHeader(decoding: command) else { return .refuse(.einval, .invalidCommand) }
        let opcode = header.opcode
        if !strictness.groupCheckedFirst && !groups.values.contains(where: { $0.supported.contains(opcode) }) {
            // A non-conforming variant: the opcode is checked before the group.
            return .refuse(.einval, .invalidOpcode)
        }
        // 1. Group: a type the device does not have, or the SR-IOV group while VF Enable is clear.
        guard let group = groups[header.groupType.rawValue] else { return .refuse(.einval, .invalidGroup) }
        if header.groupType == .srIOV && numVFs == 0 {
            let listCommand = opcode == .listQuery || opcode == .listUse
            guard listCommand && strictness.listCommandsWithoutVFs else { return .refuse(.einval, .invalidGroup) }
        }
        // 2. Opcode: listed for this group and enabled by LIST_USE.
        // Linux-compatible variant: the self group's capability commands also count as enabled
        // when the SR-IOV group's LIST_USE enabled them (Linux never sends a self-group LIST_USE, A9).
        let enabledForLinux = strictness.capabilitiesWithoutSelfListUse && header.groupType == .selfGroup && Self.capabilityOpcodes.contains(opcode)
            && groups[AdminGroupType.srIOV.rawValue]?.inUse.contains(opcode) == true
        guard group.supported.contains(opcode), group.inUse.contains(opcode) || enabledForLinux || !strictness.enforceListUse else {
            return .refuse(.einval, .invalidOpcode)
        }
        // 3. Member: the self group's only member is 0; SR-IOV members are 1...NumVFs.
        //    LIST_QUERY and LIST_USE do not use the member (the driver sets 0).
        // (The capability commands, listed in the SR-IOV group for Linux, are refused there
        //  with INVALID_GROUP whatever the member.)
        let usesMember = !Self.alwaysInUse.contains(opcode) && !(header.groupType == .srIOV && Self.capabilityOpcodes.contains(opcode))
        if usesMember {
            if header.groupType == .selfGroup {
                guard header.memberID == .none else { return .refuse(.einval, .invalidMember) }
            } else if memberIndex(header.memberID) == nil {
                return .refuse(.einval, .invalidMember)
            }
        }
        // 4. Driver-side rules the model enforces.
        if opcode == .listUse && othersOutstanding && strictness.refuseListUseWhileOutstanding { return .refuse(.einval, .invalidCommand) }
        if strictness.requireMultipleOf8Parts && !Self.lengthCarriesMeaning.contains(opcode)
            && (command.count % 8 != 0 || resultCapacity % 8 != 0) {
            return .refuse(.einval, .invalidCommand)
        }
        let data = Array(command.dropFirst(AdminCommandLayout.headerSize))
        let room = resultCapacity - AdminCommandLayout.resultHeaderSize
        if let outcome = executeRatified(opcode, group: header.groupType, member: header.memberID, data: data, room: room) { return outcome }
        let outcome = dispatch(opcode, group: header.groupType, member: header.memberID, data: data)
        if outcome.result.count > room && !strictness.truncateShortResults {
            // A non-conforming variant: fails a command whose result does not fit.
            return .refuse(.einval, .invalidField)
        }
        // Truncation happens as the result is written: only what fits is written, and the
        // used length says how much [admin:540-546,573-582].
        return outcome
    }

    /// VF index of a member id, when the member exists.
    func memberIndex(_ member: GroupMemberID) -> Int? {
        guard let index = member.vfIndex, index < numVFs else { return nil }
        return index
    }

    mutating func dispatch(_ opcode: AdminOpcode, group: AdminGroupType, member: GroupMemberID, data: [UInt8]) -> Outcome {
        switch opcode {
        case .listQuery:
            var listed = groups[group.rawValue]!.supported
            if !strictness.listsListCommands {
                listed = AdminOpcodeBitmap(opcodes: listed.opcodes.filter { !Self.alwaysInUse.contains($0) })
            }
            return .ok(listed.encode())
        case .listUse:
            let requested = AdminOpcodeBitmap(decoding: data)
            guard data.count >= 8, requested.isSubset(of: groups[group.rawValue]!.supported) else { return .refuse(.einval, .invalidField) }
            if strictness.listUseAllOrNothing {
                let listed = groups[group.rawValue]!.supported
                let enabled = requested.union(Self.alwaysInUse)
                guard enabled == listed || enabled == AdminOpcodeBitmap(opcodes: Self.alwaysInUse) else { return .refuse(.einval, .invalidField) }
            }
            // Bits 0 and 1 may be cleared by the driver [admin:463-465]; the model keeps them
            // usable so that a driver can always renegotiate.
            groups[group.rawValue]!.inUse = requested.union(Self.alwaysInUse)
            return .ok()
        case opcodes.msixPoolGet:
            var result = [UInt8](repeating: 0, count: ProjectCommandLayout.msixPoolResultSize)
            result.writeLE(UInt32(pool), at: ProjectCommandLayout.msixPoolTotal)
            result.writeLE(UInt32(availableVectors), at: ProjectCommandLayout.msixPoolAvailable)
            result.writeLE(UInt16(perMemberMaximum), at: ProjectCommandLayout.msixPoolPerMemberMax)
            result.writeLE(UInt16(perMemberMinimum), at: ProjectCommandLayout.msixPoolPerMemberMin)
            return .ok(result)
        default:
            break
        }
        guard let index = memberIndex(member) else { return .refuse(.einval, .invalidMember) }
        switch opcode {
        case opcodes.msixGet:
            var result = [UInt8](repeating: 0, count: ProjectCommandLayout.msixGetResultSize)
            result.writeLE(UInt16(members[index].msixVectors), at: ProjectCommandLayout.msixGetVectors)
            result.writeLE(UInt16(perMemberMaximum), at: ProjectCommandLayout.msixGetMaximum)
            return .ok(result)
        case opcodes.msixSet:
            guard data.count >= ProjectCommandLayout.msixSetDataSize else { return .refuse(.einval, .invalidCommand) }
            let vectors = Int(data.readLE(UInt16.self, at: ProjectCommandLayout.msixSetVectors))
            guard vectors >= perMemberMinimum, vectors <= perMemberMaximum, vectors <= SimulatedBARLayout.maximumMSIXVectors else {
                return .refuse(.einval, .invalidField)
            }
            guard !members[index].inUse else { return .refuse(.ebusy, .ok) }
            guard vectors - members[index].msixVectors <= availableVectors else { return .refuse(.einval, .noResource) }
            members[index].msixVectors = vectors
            changedMember = index
            return .ok()
        case opcodes.featuresGet, opcodes.featuresCapsGet:
            let features = opcode == opcodes.featuresGet ? members[index].features : memberSupportedFeatures
            var result: [UInt8] = []
            result.appendLE(features.low64)
            result.appendLE(features.high64)
            return .ok(result)
        case opcodes.featuresSet:
            guard data.count >= ProjectCommandLayout.featuresDataSize else { return .refuse(.einval, .invalidCommand) }
            let features = FeatureSet(low64: data.readLE(UInt64.self, at: 0), high64: data.readLE(UInt64.self, at: 8))
            guard features.isSubset(of: memberSupportedFeatures), features.contains(.version1) else { return .refuse(.einval, .invalidField) }
            guard !members[index].inUse else { return .refuse(.ebusy, .ok) }
            members[index].features = features
            changedMember = index
            return .ok()
        case opcodes.macGet:
            return .ok(members[index].mac + [0, 0])
        case opcodes.macSet:
            guard data.count >= ProjectCommandLayout.macSize else { return .refuse(.einval, .invalidCommand) }
            let mac = Array(data[0..<6])
            // A multicast or all-zero address cannot be a VF's station address.
            guard mac[0] & 1 == 0, mac.contains(where: { $0 != 0 }) else { return .refuse(.einval, .invalidField) }
            guard !members[index].inUse else { return .refuse(.ebusy, .ok) }
            members[index].mac = mac
            changedMember = index
            return .ok()
        default:
            return .refuse(.einval, .invalidOpcode)
        }
    }
}
