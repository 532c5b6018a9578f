import PCIConfig
import VirtioSpec

/// One admin command as the driver submits it.
public struct AdminCommand: Sendable, Hashable {
    /// The command's opcode (virtio 1.4 §2.12.1).
    public var opcode: AdminOpcode
    /// The group the command addresses (SR-IOV by default).
    public var groupType: AdminGroupType
    /// The member the command is about (``GroupMemberID/none`` for the owner).
    public var member: GroupMemberID
    /// Command-specific data (after the 24-byte header).
    public var data: [UInt8]
    /// Bytes of command-specific result the caller expects (after the 8-byte status).
    public var resultLength: Int
    /// Sent without the driver's command-set check (``AdminQueueDriver/submitUnchecked(_:timeout:)``).
    var unchecked = false

    /// A command: `data` is its command-specific data, `resultLength` the bytes of
    /// command-specific result it expects (virtio 1.4 §2.12.1).
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
    /// The status the device wrote.
    public var status: AdminStatus
    /// The status qualifier the device wrote.
    public var qualifier: AdminStatusQualifier
    /// The command-specific result, zero-filled to the length the command asked for when
    /// the device wrote less (the spec's truncation rule: missing fields read as zero).
    public var result: [UInt8]
    /// Result bytes the device actually wrote (the used length minus the status header).
    public var resultBytesWritten: Int
    /// A response with this status and result; `resultBytesWritten` is how much of the
    /// result the device wrote (`nil`: all of it).
    public init(status: AdminStatus, qualifier: AdminStatusQualifier, result: [UInt8], resultBytesWritten: Int? = nil) {
        self.status = status
        self.qualifier = qualifier
        self.result = result
        self.resultBytesWritten = resultBytesWritten ?? result.count
    }
}

/// A line of `--trace`: the bytes sent or received for one command.
public enum AdminTraceEvent: Sendable {
    case sent(AdminCommand, bytes: [UInt8])
    case received(AdminCommand, bytes: [UInt8])
}

/// Counters the driver keeps.
public struct AdminCounters: Sendable, Hashable {
    /// Commands put on the admin queue.
    public var submitted = 0
    /// Commands the device completed.
    public var completed = 0
    /// Commands that timed out.
    public var timeouts = 0
    /// Commands whose caller's task was cancelled.
    public var cancellations = 0
    /// Commands failed while in flight because the device failed (needs reset, removed, misbehaved).
    public var failedInFlight = 0
    /// Notifications written to the device (several commands may share one).
    public var notifies = 0
    /// The most commands the device held at once (on the ring, submitted and not yet completed).
    public var peakInFlight = 0
    /// Completed commands by device status (OK included).
    public var byStatus: [UInt16: Int] {
        get {
            var all = otherStatus
            if okCount > 0 { all[AdminStatus.ok.rawValue] = okCount }
            return all
        }
        set {
            okCount = newValue[AdminStatus.ok.rawValue] ?? 0
            otherStatus = newValue.filter { $0.key != AdminStatus.ok.rawValue }
        }
    }
    /// OK completions (counted apart: no hashing on the common path).
    var okCount = 0
    /// Completions with a status other than OK.
    var otherStatus: [UInt16: Int] = [:]
    /// Completions taken by a caller that polled the used ring while it waited for its
    /// batch (the rest were taken by the poller or at submission).
    package var completedWhileWaiting = 0
    /// Times the poller let command callers it resumed run without `Task.yield()` (no
    /// allocation): of these, times it suspended until one of them ran (the others had run
    /// already); and times it gave its executor away with `Task.yield()` after a round that
    /// completed something (an allocation each).
    package var pollerHandOffs = 0
    package var pollerParks = 0
    package var pollerYieldsAfterProgress = 0
    /// Latency histogram: bucket k counts commands that took [2^k, 2^(k+1)) µs (bucket 0 includes < 1 µs).
    public var latencyMicrosecondsLog2: [Int] = Array(repeating: 0, count: 24)
    /// All counters zero.
    public init() {}

    /// Equal when every public counter is (``byStatus`` compared as the public view shows it).
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.submitted == rhs.submitted && lhs.completed == rhs.completed && lhs.timeouts == rhs.timeouts
            && lhs.cancellations == rhs.cancellations && lhs.failedInFlight == rhs.failedInFlight && lhs.notifies == rhs.notifies
            && lhs.peakInFlight == rhs.peakInFlight && lhs.byStatus == rhs.byStatus && lhs.latencyMicrosecondsLog2 == rhs.latencyMicrosecondsLog2
    }

    /// Hashes what ``==`` compares.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(submitted)
        hasher.combine(completed)
        hasher.combine(timeouts)
        hasher.combine(cancellations)
        hasher.combine(failedInFlight)
        hasher.combine(notifies)
        hasher.combine(peakInFlight)
        hasher.combine(byStatus)
        hasher.combine(latencyMicrosecondsLog2)
    }

    mutating func record(status: AdminStatus) {
        if status == .ok { okCount += 1 } else { otherStatus[status.rawValue, default: 0] += 1 }
    }

    mutating func record(latencyNanoseconds: UInt64) {
        let micros = max(latencyNanoseconds / 1000, 1)
        let bucket = min(63 - micros.leadingZeroBitCount, latencyMicrosecondsLog2.count - 1)
        latencyMicrosecondsLog2[bucket] += 1
    }
}

/// What a plugin needs of an admin queue: send a command and learn the device's answer.
///
/// ``AdminQueueDriver`` is the host's; a run-time plugin built from a Swift
/// `AdminCommandHandler` (ABI v2) gets one that forwards every command to the host, which
/// checks it before sending.
public protocol AdminCommandRunner: Sendable {
    /// The group owner (the PF).
    var address: PCIAddress { get }
    /// Opcodes the device listed in LIST_QUERY.
    var supported: AdminOpcodeBitmap { get }
    /// Opcodes enabled with LIST_USE (over every group).
    var inUse: AdminOpcodeBitmap { get }
    /// Opcodes enabled with LIST_USE in group `group` (default: ``inUse``).
    func inUse(in group: AdminGroupType) -> AdminOpcodeBitmap
    /// What waits between EAGAIN retries run on (default: ``ContinuousAdminClock``; the
    /// driver's is ``AdminQueueDriver/Options/clock``).
    var clock: any AdminClock { get }
    /// The spec or plugin name of an opcode.
    func name(of opcode: AdminOpcode) -> String
    /// Sends a command and returns the device's answer, whatever its status.
    func submit(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse
    /// Why group `group` cannot be used now, if so (default: it can).
    func unavailability(of group: AdminGroupType) -> AdminError?
    /// Negotiates group `group`'s command set again (default: nothing to do).
    func refreshGroup(_ group: AdminGroupType) async throws(AdminError)
    /// What ``run(_:timeout:minimumResult:)`` does (the driver's retries EAGAIN).
    func runChecked(_ command: AdminCommand, timeout: Duration?, minimumResult: Int) async throws(AdminError) -> [UInt8]
}

extension AdminCommandRunner {
    /// The driver's ``inUse`` set, whatever the group.
    public func inUse(in group: AdminGroupType) -> AdminOpcodeBitmap { inUse }
    /// Every group can be used.
    public func unavailability(of group: AdminGroupType) -> AdminError? { nil }
    /// Nothing to negotiate again.
    public func refreshGroup(_ group: AdminGroupType) async throws(AdminError) {}
    /// The continuous clock.
    public var clock: any AdminClock { ContinuousAdminClock() }

    /// Sends `command`, and again while the device answers EAGAIN (it has no side effects,
    /// and the driver SHOULD retry [admin:607-609,642-643]): up to
    /// ``AdminQueueDriver/eagainRetries`` more times, 1, 4, 16 … ms apart on ``clock``.
    /// Returns the last answer, whatever its status.
    package func submitRetryingEAGAIN(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse {
        var response = try await submit(command, timeout: timeout)
        var delay = Duration.milliseconds(1)
        for _ in 0..<AdminQueueDriver.eagainRetries where response.status == .eagain {
            await clock.sleep(untilNanoseconds: clock.deadline(after: delay, from: clock.nowNanoseconds))
            delay *= 4
            response = try await submit(command, timeout: timeout)
        }
        return response
    }

    /// Runs a command and returns its result; a status other than OK throws
    /// ``AdminError/commandFailed(device:opcode:opcodeName:member:status:qualifier:)``.
    public func run(_ command: AdminCommand, timeout: Duration? = nil, minimumResult: Int = 0) async throws(AdminError) -> [UInt8] {
        try await runChecked(command, timeout: timeout, minimumResult: minimumResult)
    }

    /// One submission; a status other than OK throws.
    public func runChecked(_ command: AdminCommand, timeout: Duration?, minimumResult: Int) async throws(AdminError) -> [UInt8] {
        try checkedResult(of: command, response: try await submit(command, timeout: timeout), minimumResult: minimumResult)
    }

    /// The command-specific result of `response`; a status other than OK, or fewer than
    /// `minimumResult` result bytes, throws.
    public func checkedResult(of command: AdminCommand, response: AdminResponse, minimumResult: Int) throws(AdminError) -> [UInt8] {
        guard response.status == .ok else {
            throw .commandFailed(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode), member: command.member,
                                 status: response.status, qualifier: response.qualifier)
        }
        guard response.result.count >= minimumResult else {
            throw .resultTooShort(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode),
                                  expected: minimumResult, received: response.result.count)
        }
        return response.result
    }
}

extension AdminQueueDriver: AdminCommandRunner {
    /// The driver's own ``AdminQueueDriver/run(_:timeout:minimumResult:)``: EAGAIN is retried.
    public func runChecked(_ command: AdminCommand, timeout: Duration?, minimumResult: Int) async throws(AdminError) -> [UInt8] {
        try await run(command, timeout: timeout, minimumResult: minimumResult)
    }
}
