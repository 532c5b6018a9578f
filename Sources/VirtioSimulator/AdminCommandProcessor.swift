import VirtioSpec

/// The group owner's admin command set: LIST_QUERY/LIST_USE and the project-defined
/// MSI-X, feature-bit and MAC commands, with the device's own validation.
///
/// Checks follow the spec's order (digest §7): group type (INVALID_GROUP), then opcode
/// (INVALID_OPCODE), then member (INVALID_MEMBER), then fields. A refused command changes
/// no state.
struct AdminCommandProcessor {
    var opcodes: ProjectOpcodeTable
    var supported: AdminOpcodeBitmap
    var inUse: AdminOpcodeBitmap
    var pool: Int
    var perMemberMaximum: Int
    var perMemberMinimum: Int
    var memberSupportedFeatures: FeatureSet
    var members: [MemberResources]
    var numVFs: Int
    /// The member the last command changed, if any.
    var changedMember: Int?
    /// The ratified commands' state (RatifiedCommands.swift) and the VFs they act on.
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
        supported = AdminOpcodeBitmap(opcodes: configuration.supportedOpcodes ?? configuration.implementedOpcodes)
        inUse = AdminOpcodeBitmap(opcodes: Self.alwaysInUse)
        pool = configuration.vfMSIXPool
        perMemberMaximum = configuration.perVFMaximumVectors
        perMemberMinimum = configuration.perVFMinimumVectors
        memberSupportedFeatures = configuration.memberSupportedFeatures
        self.members = members
        numVFs = configuration.numVFs
        ratified = RatifiedState(deviceGetLimit: configuration.devicePartsGetLimit, deviceSetLimit: configuration.devicePartsSetLimit)
    }

    /// Vectors of the pool not given to a VF.
    var availableVectors: Int { pool - members.prefix(numVFs).reduce(0) { $0 + $1.msixVectors } }

    /// Resets what a device reset resets: the negotiated command list.
    mutating func deviceReset() {
        inUse = AdminOpcodeBitmap(opcodes: Self.alwaysInUse)
        ratified.ownerReset()
    }

    struct Outcome {
        var status: AdminStatus
        var qualifier: AdminStatusQualifier
        var result: [UInt8]
        static func ok(_ result: [UInt8] = []) -> Outcome { Outcome(status: .ok, qualifier: .ok, result: result) }
        static func refuse(_ status: AdminStatus, _ qualifier: AdminStatusQualifier) -> Outcome { Outcome(status: status, qualifier: qualifier, result: []) }
        /// Writes past the writable buffer are dropped [admin:564-571].
        func truncated(to room: Int) -> Outcome { Outcome(status: status, qualifier: qualifier, result: Array(result.prefix(max(room, 0)))) }
    }

    /// Executes one command (its device-readable bytes) and returns status and result.
    mutating func execute(_ command: [UInt8], resultCapacity: Int) -> Outcome {
        changedMember = nil
        guard let header = AdminCommandHeader(decoding: command) else { return .refuse(.einval, .invalidCommand) }
        let room = resultCapacity - AdminCommandLayout.resultHeaderSize
        if header.groupType == .selfGroup { return executeSelf(header, data: Array(command.dropFirst(AdminCommandLayout.headerSize)), room: room).truncated(to: room) }
        guard header.groupType == .srIOV else { return .refuse(.einval, .invalidGroup) }
        let opcode = header.opcode
        guard supported.contains(opcode) || Self.alwaysInUse.contains(opcode) else { return .refuse(.einval, .invalidOpcode) }
        guard inUse.contains(opcode) else { return .refuse(.einval, .invalidOpcode) }
        let data = Array(command.dropFirst(AdminCommandLayout.headerSize))
        if let outcome = executeRatified(opcode, member: header.memberID, data: data, room: room) { return outcome.truncated(to: room) }
        var outcome = dispatch(opcode, member: header.memberID, data: data)
        if opcode == .listQuery && outcome.result.count > room {
            // A LIST_QUERY bitmap may be cut to the words that fit: the driver learns the
            // opcodes its buffer can describe (Linux reads one word).
            outcome.result = Array(outcome.result.prefix(room - room % 8))
        }
        if outcome.status == .ok && outcome.result.count > room {
            return .refuse(.einval, .invalidField)
        }
        return outcome
    }

    /// VF index of a member id, when the member exists.
    func memberIndex(_ member: GroupMemberID) -> Int? {
        guard let index = member.vfIndex, index < numVFs else { return nil }
        return index
    }

    mutating func dispatch(_ opcode: AdminOpcode, member: GroupMemberID, data: [UInt8]) -> Outcome {
        switch opcode {
        case .listQuery:
            return .ok(supported.encode())
        case .listUse:
            let requested = AdminOpcodeBitmap(decoding: data)
            guard data.count >= 8, requested.isSubset(of: supported.union(Self.alwaysInUse)) else { return .refuse(.einval, .invalidField) }
            inUse = requested.union(Self.alwaysInUse)
            return .ok()
        case opcodes.msixPoolGet:
            guard member == .none else { return .refuse(.einval, .invalidMember) }
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

extension AdminOpcodeBitmap {
    func union<S: Sequence>(_ opcodes: S) -> AdminOpcodeBitmap where S.Element == AdminOpcode {
        var copy = self
        for opcode in opcodes { copy.insert(opcode) }
        return copy
    }
}
