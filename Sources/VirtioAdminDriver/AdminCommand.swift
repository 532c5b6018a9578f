import VirtioSpec

/// One admin command as the driver submits it.
public struct AdminCommand: Sendable, Hashable {
    public var opcode: AdminOpcode
    public var groupType: AdminGroupType
    public var member: GroupMemberID
    /// Command-specific data (after the 24-byte header).
    public var data: [UInt8]
    /// Bytes of command-specific result the caller expects (after the 8-byte status).
    public var resultLength: Int

    public init(opcode: AdminOpcode, groupType: AdminGroupType = .srIOV, member: GroupMemberID = .none, data: [UInt8] = [], resultLength: Int = 0) {
        self.opcode = opcode
        self.groupType = groupType
        self.member = member
        self.data = data
        self.resultLength = resultLength
    }

    /// The device-readable bytes: header and data.
    public var bytes: [UInt8] { AdminCommandHeader(opcode: opcode, groupType: groupType, memberID: member).encode(data: data) }
}

/// What the device answered: status, qualifier and the command-specific result.
public struct AdminResponse: Sendable, Hashable {
    public var status: AdminStatus
    public var qualifier: AdminStatusQualifier
    public var result: [UInt8]
}

/// A line of `--trace`: the bytes sent or received for one command.
public enum AdminTraceEvent: Sendable {
    case sent(AdminCommand, bytes: [UInt8])
    case received(AdminCommand, bytes: [UInt8])
}

/// Counters the driver keeps.
public struct AdminCounters: Sendable, Hashable {
    public var submitted = 0
    public var completed = 0
    public var timeouts = 0
    public var cancellations = 0
    public var failedInFlight = 0
    public var notifies = 0
    /// The most commands the device held at once (on the ring, submitted and not yet completed).
    public var peakInFlight = 0
    /// Completed commands by device status (OK included).
    public var byStatus: [UInt16: Int] = [:]
    /// Latency histogram: bucket k counts commands that took [2^k, 2^(k+1)) µs (bucket 0 includes < 1 µs).
    public var latencyMicrosecondsLog2: [Int] = Array(repeating: 0, count: 24)
    public init() {}

    mutating func record(status: AdminStatus) { byStatus[status.rawValue, default: 0] += 1 }

    mutating func record(latencyNanoseconds: UInt64) {
        let micros = max(latencyNanoseconds / 1000, 1)
        let bucket = min(63 - micros.leadingZeroBitCount, latencyMicrosecondsLog2.count - 1)
        latencyMicrosecondsLog2[bucket] += 1
    }
}
