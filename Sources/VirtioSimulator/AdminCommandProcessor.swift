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

    /// The groups the device has, by group type: the self group (0) and the SR-IOV group (1).
    struct GroupTable {
        private var selfGroup: GroupCommands?
        private var srIOV: GroupCommands?

        subscript(type: UInt16) -> GroupCommands? {
            get {
                switch type {
                case AdminGroupType.selfGroup.rawValue: selfGroup
                case AdminGroupType.srIOV.rawValue: srIOV
                default: nil
                }
            }
            set {
                switch type {
                case AdminGroupType.selfGroup.rawValue: selfGroup = newValue
                case AdminGroupType.srIOV.rawValue: srIOV = newValue
                default: preconditionFailure("the model has no group type \(type)")
                }
            }
        }

        /// Whether group `type` lists `opcode` and whether LIST_USE enabled it; `nil` when the
        /// device has no such group. Reads the bitmaps in place (no copy on the command path).
        func state(of opcode: AdminOpcode, in type: UInt16) -> (supported: Bool, inUse: Bool)? {
            switch type {
            case AdminGroupType.selfGroup.rawValue: selfGroup.map { ($0.supported.contains(opcode), $0.inUse.contains(opcode)) }
            case AdminGroupType.srIOV.rawValue: srIOV.map { ($0.supported.contains(opcode), $0.inUse.contains(opcode)) }
            default: nil
            }
        }

        /// The group types present.
        var keys: [UInt16] { [AdminGroupType.selfGroup.rawValue, AdminGroupType.srIOV.rawValue].filter { self[$0] != nil } }
        /// The groups present.
        var values: [GroupCommands] { [selfGroup, srIOV].compactMap { $0 } }
    }

    var opcodes: ProjectOpcodeTable
    var groups = GroupTable()
    var pool: Int { didSet { cachedAvailableVectors = nil } }
    var perMemberMaximum: Int
    var perMemberMinimum: Int
    var memberSupportedFeatures: FeatureSet
    /// A VF's `msixVectors` changes only through MSIX_SET, which keeps
    /// ``cachedAvailableVectors`` current (debug builds check the cache on every read).
    var members: [MemberResources]
    var numVFs: Int { didSet { cachedAvailableVectors = nil } }
    /// ``availableVectors`` while nothing it is computed from changed: a sum over every VF
    /// per MSIX_SET cost 1024 VFs a microsecond each.
    var cachedAvailableVectors: Int?
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
        groups[AdminGroupType.srIOV.rawValue] = commands(configuration.srIOVGroupOpcodes)
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
    var summedAvailableVectors: Int { pool - members.prefix(numVFs).reduce(0) { $0 + $1.msixVectors } }

    var availableVectors: Int {
        mutating get {
            if let cachedAvailableVectors {
                assert(cachedAvailableVectors == summedAvailableVectors, "the model's count of available MSI-X vectors went stale")
                return cachedAvailableVectors
            }
            let available = summedAvailableVectors
            cachedAvailableVectors = available
            return available
        }
    }

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
        var result: ResultBytes
        static func ok(_ result: [UInt8] = []) -> Outcome { Outcome(status: .ok, qualifier: .ok, result: ResultBytes(result)) }
        static func ok(_ result: ResultBytes) -> Outcome { Outcome(status: .ok, qualifier: .ok, result: result) }
        static func refuse(_ status: AdminStatus, _ qualifier: AdminStatusQualifier) -> Outcome { Outcome(status: status, qualifier: qualifier, result: ResultBytes()) }
    }

    /// A command-specific result: up to 16 bytes held inline (the project's commands, so
    /// that answering one allocates nothing), or an array.
    struct ResultBytes {
        private var inline: (UInt64, UInt64) = (0, 0)
        private var array: [UInt8] = []
        private var isInline = false
        /// Number of bytes.
        private(set) var count = 0

        /// No bytes.
        init() {}
        /// These bytes.
        init(_ bytes: [UInt8]) {
            array = bytes
            count = bytes.count
        }
        /// `count` zero bytes (at most 16) held inline, to be filled with ``writeLE(_:at:)``.
        init(zeros count: Int) {
            precondition(count <= MemoryLayout<(UInt64, UInt64)>.size)
            isInline = true
            self.count = count
        }

        /// Writes `value` little-endian at `offset` of an inline result.
        mutating func writeLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at offset: Int) {
            precondition(isInline && offset + MemoryLayout<T>.size <= count)
            withUnsafeMutableBytes(of: &inline) { $0.writeLE(value, at: offset) }
        }

        /// Calls `body` with the bytes.
        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
            if isInline {
                return Swift.withUnsafeBytes(of: inline) { body(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            }
            return array.withUnsafeBytes(body)
        }

        /// The bytes as an array.
        var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
    }

    /// Opcodes whose part lengths carry meaning (the legacy config accesses, fact sheet A5):
    /// the multiple-of-8 rule is not applied to them.
    /// Linux's lengths are accepted too (fact sheet §6.1 item 5, §6.2): DEVICE_CAP_GET with a
    /// 2-byte result, DRIVER_CAP_SET with 10 bytes of data, DEV_PARTS_GET into a buffer of
    /// the SIZE METADATA_GET gave, DEV_PARTS_SET with the parts as received, DEV_MODE_SET
    /// with 1 byte.
    static func lengthCarriesMeaning(_ opcode: AdminOpcode) -> Bool {
        switch opcode.rawValue {
        case 0x2, 0x3, 0x4, 0x5, 0x8, 0x9, 0xf, 0x10, 0x11: true
        default: false
        }
    }

    /// Executes one command (its device-readable bytes) and returns status and result.
    /// - Parameters:
    ///   - resultCapacity: bytes of the device-writable part (status header included).
    ///   - othersOutstanding: other commands of the same admin queue are in service.
    mutating func execute(_ command: [UInt8], resultCapacity: Int, othersOutstanding: Bool = false) -> Outcome {
        command.withUnsafeBytes { execute($0, resultCapacity: resultCapacity, othersOutstanding: othersOutstanding) }
    }

    /// As ``execute(_:resultCapacity:othersOutstanding:)``, reading the command where it is
    /// (the device's copy of the chain's readable part).
    mutating func execute(_ command: UnsafeRawBufferPointer, resultCapacity: Int, othersOutstanding: Bool = false) -> Outcome {
        changedMember = nil
        guard command.count >= AdminCommandLayout.headerSize else { return .refuse(.einval, .invalidCommand) }
        let header = (opcode: AdminOpcode(command.readLE(UInt16.self, at: AdminCommandLayout.opcode)),
                      groupType: AdminGroupType(rawValue: command.readLE(UInt16.self, at: AdminCommandLayout.groupType)),
                      memberID: GroupMemberID(rawValue: command.readLE(UInt64.self, at: AdminCommandLayout.groupMemberID)))
        let opcode = header.opcode
        if !strictness.groupCheckedFirst && !groups.values.contains(where: { $0.supported.contains(opcode) }) {
            // A non-conforming variant: the opcode is checked before the group.
            return .refuse(.einval, .invalidOpcode)
        }
        // 1. Group: a type the device does not have, or the SR-IOV group while VF Enable is clear.
        guard let group = groups.state(of: opcode, in: header.groupType.rawValue) else { return .refuse(.einval, .invalidGroup) }
        if header.groupType == .srIOV && numVFs == 0 {
            let listCommand = opcode == .listQuery || opcode == .listUse
            guard listCommand && strictness.listCommandsWithoutVFs else { return .refuse(.einval, .invalidGroup) }
        }
        // 2. Opcode: listed for this group and enabled by LIST_USE.
        // Linux-compatible variant: the self group's capability commands also count as enabled
        // when the SR-IOV group's LIST_USE enabled them (Linux never sends a self-group LIST_USE, A9).
        let enabledForLinux = strictness.capabilitiesWithoutSelfListUse && header.groupType == .selfGroup && Self.capabilityOpcodes.contains(opcode)
            && groups.state(of: opcode, in: AdminGroupType.srIOV.rawValue)?.inUse == true
        guard group.supported, group.inUse || enabledForLinux || !strictness.enforceListUse else {
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
        if strictness.requireMultipleOf8Parts && !Self.lengthCarriesMeaning(opcode)
            && (command.count % 8 != 0 || resultCapacity % 8 != 0) {
            return .refuse(.einval, .invalidCommand)
        }
        let data = UnsafeRawBufferPointer(rebasing: command[AdminCommandLayout.headerSize...])
        let room = resultCapacity - AdminCommandLayout.resultHeaderSize
        if Self.ratifiedOpcodes.contains(opcode),
           let outcome = executeRatified(opcode, group: header.groupType, member: header.memberID, data: Array(data), room: room) {
            return outcome
        }
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

    mutating func dispatch(_ opcode: AdminOpcode, group: AdminGroupType, member: GroupMemberID, data: UnsafeRawBufferPointer) -> Outcome {
        switch opcode {
        case .listQuery:
            var listed = groups[group.rawValue]!.supported
            if !strictness.listsListCommands {
                listed = AdminOpcodeBitmap(opcodes: listed.opcodes.filter { !Self.alwaysInUse.contains($0) })
            }
            return .ok(listed.encode())
        case .listUse:
            let requested = AdminOpcodeBitmap(decoding: Array(data))
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
            var result = ResultBytes(zeros: ProjectCommandLayout.msixPoolResultSize)
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
            var result = ResultBytes(zeros: ProjectCommandLayout.msixGetResultSize)
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
            let available = availableVectors, old = members[index].msixVectors
            guard vectors - old <= available else { return .refuse(.einval, .noResource) }
            members[index].msixVectors = vectors
            cachedAvailableVectors = index < numVFs ? available - (vectors - old) : available
            changedMember = index
            return .ok()
        case opcodes.featuresGet, opcodes.featuresCapsGet:
            let features = opcode == opcodes.featuresGet ? members[index].features : memberSupportedFeatures
            var result = ResultBytes(zeros: 16)
            result.writeLE(features.low64, at: 0)
            result.writeLE(features.high64, at: 8)
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
            var result = ResultBytes(zeros: ProjectCommandLayout.macSize)
            for (offset, byte) in members[index].mac.prefix(ProjectCommandLayout.macSize).enumerated() { result.writeLE(byte, at: offset) }
            return .ok(result)
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
