import PCIConfig
import VirtioSystem
import VirtioSpec
import VirtioTransport
import Virtqueue

/// The generic admin-queue driver: it binds a transport, negotiates VIRTIO_F_ADMIN_VQ,
/// sets up the admin virtqueue, negotiates the command set (LIST_QUERY then LIST_USE), and
/// runs admin commands with Swift concurrency — many in flight, each with its own timeout
/// and cancellation, completed out of order by descriptor id.
///
/// Spec: §2.12 "Device groups", §4.1.4.3 (admin_queue_index/num), digest §7. On
/// DEVICE_NEEDS_RESET, surprise removal or a virtqueue protocol violation every command in
/// flight fails with a typed error and the driver stops until ``reinitialize()``.
public final class AdminQueueDriver: @unchecked Sendable {
    // All mutable state below is guarded by `lock`.
    public struct Options: Sendable {
        /// Admin queue size (each command uses two descriptors, so size/2 are on the ring at once).
        public var queueSize = 256
        /// Bytes of a command slot for header + data, and for status + result.
        public var slotBytes = 512
        /// Timeout of a command that names none.
        public var defaultTimeout: Duration = .seconds(5)
        /// Opcodes to enable with LIST_USE, in every group that lists them (`nil`: everything
        /// the device lists). The CLI passes what its registered plugins know; when the
        /// device refuses that combination (EINVAL), LIST_USE is sent again with every listed
        /// opcode. LIST_QUERY and LIST_USE are always kept.
        public var wantedOpcodes: [AdminOpcode]?
        /// Group types whose command sets are negotiated at open: SR-IOV (commands about a
        /// VF) and self (commands about the owner, such as MSIX_POOL_GET). A group the
        /// device refuses with INVALID_GROUP (the SR-IOV group while VF Enable is clear) does
        /// not fail `open`; it is negotiated again when a command for it is sent.
        public var groupTypes: [AdminGroupType] = [.srIOV, .selfGroup]
        /// How long a reset may take before the driver stops trusting the device with its
        /// memory (then it clears Bus Master Enable or quarantines the memory).
        public var resetTimeout: Duration = .seconds(1)
        /// Clears Bus Master Enable in the function's command register; returns whether it
        /// did. Used only when a reset is not confirmed.
        public var disableBusMaster: (@Sendable () -> Bool)?
        /// How long a command waits for a free command slot (all slots can stay taken by
        /// commands a device never completes).
        public var slotWaitTimeout: Duration = .seconds(60)
        /// DMA addresses are IOVAs (VFIO): the device must translate them, so
        /// VIRTIO_F_ACCESS_PLATFORM is required, not just wanted.
        public var requireAccessPlatform = false
        public init() {}
    }

    /// A group type's command set as negotiated with LIST_QUERY/LIST_USE.
    struct GroupCommands {
        var supported = AdminOpcodeBitmap()
        var inUse = AdminOpcodeBitmap()
        /// Why the group cannot be used now (LIST_QUERY or LIST_USE failed), if so.
        var unavailable: AdminError?
    }

    enum State { case starting, running, failed(AdminError), closed }

    struct Slot {
        var continuation: CheckedContinuation<Result<AdminResponse, AdminError>, Never>?
        var command: AdminCommand?
        var opcode = AdminOpcode(0)
        var member = GroupMemberID.none
        var started: UInt64 = 0
        var deadline: UInt64 = 0
        var timeout: Duration = .zero
        var token: UInt64 = 0
        /// Result bytes the caller asked for (a shorter result is zero-filled to this).
        var resultLength = 0
        /// On the ring (the device owns its buffers).
        var busy = false
    }

    /// A slot handed to a command, stamped with the epoch it was granted in: a grant from
    /// before a fail-all (and reinitialisation) is stale and never used.
    struct SlotGrant {
        var index: Int
        var epoch: UInt64
    }

    struct Waiter {
        var token: UInt64
        var continuation: CheckedContinuation<SlotGrant?, Never>
        var exclusive: Bool
    }

    public let address: PCIAddress
    public let transport: ModernPCITransport
    let allocator: any DMAAllocator
    public let options: Options
    let lock = Lock()
    var state: State = .starting
    var queue: SplitVirtqueue?
    var notifier: QueueNotifier?
    var slab: DMARegion?
    var slots: [Slot] = []
    var freeSlots: [Int] = []
    var headToSlot: [Int32] = []
    var waiters: [Waiter] = []
    /// Waiters whose wait for a slot outlasted their timeout.
    var expiredWaiters = Set<UInt64>()
    var nextToken: UInt64 = 1
    var pollerRunning = false
    /// Chains were published without a notify; the poller sends one.
    var kickPending = false
    /// ``submitTogether(_:timeout:)`` is placing a batch: no doorbell until all are on the ring.
    var holdNotify = false
    var counters = AdminCounters()
    var groups: [UInt16: GroupCommands] = [:]
    /// Bumped by every fail-all: slot grants of an older epoch are stale.
    var slotEpoch: UInt64 = 0
    /// A LIST_USE holds the queue alone: no other command is outstanding while it is.
    var exclusive = false
    var exclusiveWaiters: [CheckedContinuation<Void, Never>] = []
    /// The rings and command slots could not be released safely (the device did not
    /// confirm its reset and bus mastering could not be cleared): kept for good.
    public private(set) var quarantinedBytes = 0
    var adminQueueIndex = 0
    var opcodeNames: [AdminOpcode: String] = [:]
    var traceHandler: (@Sendable (AdminTraceEvent) -> Void)?

    /// Opens the admin queue of the group owner behind `transport`.
    ///
    /// - Throws: ``AdminError/adminVQNotOffered(device:)`` and
    ///   ``AdminError/noAdminQueue(device:reason:)`` (the device is left reset), transport,
    ///   DMA and command errors of the LIST_QUERY/LIST_USE exchange.
    public static func open(transport: ModernPCITransport, allocator: any DMAAllocator, options: Options = Options(),
                            opcodeNames: [AdminOpcode: String] = [:],
                            trace: (@Sendable (AdminTraceEvent) -> Void)? = nil) async throws(AdminError) -> AdminQueueDriver {
        let driver = AdminQueueDriver(transport: transport, allocator: allocator, options: options)
        driver.opcodeNames = opcodeNames
        driver.traceHandler = trace
        try await driver.start()
        return driver
    }

    init(transport: ModernPCITransport, allocator: any DMAAllocator, options: Options) {
        self.address = transport.address
        self.transport = transport
        self.allocator = allocator
        self.options = options
        OpenDrivers.add(self)
    }

    /// Closes every admin-queue driver of this process that is still alive (each PF reset,
    /// or its memory quarantined): what an interrupted program does before it exits, so
    /// that no device keeps writing into memory the process is about to give back.
    /// - Returns: each driver's PF with the quarantine error, if it came to that, and the
    ///   device status read after the close (0 once the reset is confirmed).
    public static func closeAllOpen() -> [(device: PCIAddress, quarantine: AdminError?, status: DeviceStatus)] {
        OpenDrivers.all().map { driver in
            let quarantine = driver.close()
            return (driver.address, quarantine, driver.transport.status)
        }
    }

    deinit {
        OpenDrivers.remove(self)
        // Only memory of a device known to be quiet is here (quarantined memory was moved
        // to the quarantine list and is never released).
        if let slab { allocator.release(slab) }
    }

    /// Prints or records every command's bytes (the CLI's `--trace`).
    public func setTrace(_ handler: (@Sendable (AdminTraceEvent) -> Void)?) { lock.withLock { traceHandler = handler } }

    /// The spec or plugin name of an opcode.
    public func name(of opcode: AdminOpcode) -> String { lock.withLock { opcodeNames[opcode] } ?? opcode.specName }

    /// Opcodes the device listed in LIST_QUERY, over all negotiated groups.
    public var supported: AdminOpcodeBitmap {
        lock.withLock { groups.values.reduce(AdminOpcodeBitmap()) { $0.union($1.supported.opcodes) } }
    }
    /// Opcodes enabled with LIST_USE, over all negotiated groups.
    public var inUse: AdminOpcodeBitmap {
        lock.withLock { groups.values.reduce(AdminOpcodeBitmap()) { $0.union($1.inUse.opcodes) } }
    }
    /// Opcodes group `group` lists (empty while it is unavailable).
    public func supported(in group: AdminGroupType) -> AdminOpcodeBitmap { lock.withLock { groups[group.rawValue]?.supported ?? AdminOpcodeBitmap() } }
    /// Opcodes enabled in group `group`.
    public func inUse(in group: AdminGroupType) -> AdminOpcodeBitmap { lock.withLock { groups[group.rawValue]?.inUse ?? AdminOpcodeBitmap() } }
    /// Why group `group` cannot be used now (its LIST_QUERY/LIST_USE failed), if so.
    public func unavailability(of group: AdminGroupType) -> AdminError? { lock.withLock { groups[group.rawValue]?.unavailable } }
    public var statistics: AdminCounters { lock.withLock { counters } }
    /// The driver stopped after DEVICE_NEEDS_RESET, surprise removal or a protocol
    /// violation, and waits for ``reinitialize()``.
    public var isFailed: Bool {
        lock.withLock {
            if case .failed = state { return true }
            return false
        }
    }
    /// Commands the device can hold at once (queue size / 2).
    public var slotCount: Int { lock.withLock { slots.count } }

    // MARK: Bring-up

    func start() async throws(AdminError) {
        try bringUp()
        // Command-set negotiation, group by group: LIST_QUERY, then LIST_USE of what we will use.
        do {
            for group in options.groupTypes {
                do {
                    try await negotiate(group)
                } catch let error where error.isInvalidGroup {
                    // Not fatal: the SR-IOV group does not exist while VF Enable is clear
                    // [admin:417-423]; it is negotiated again when a command needs it.
                    lock.withLock { groups[group.rawValue, default: GroupCommands()].unavailable = unavailableError(group, error) }
                }
            }
            lock.withLock { if case .starting = state { state = .running } }
        } catch {
            close()
            throw error
        }
    }

    /// LIST_QUERY then LIST_USE for one group type. LIST_USE enables the wanted opcodes the
    /// group lists; if the device refuses that combination with EINVAL, every listed opcode.
    func negotiate(_ group: AdminGroupType) async throws(AdminError) {
        // 64 bytes of bitmap describe opcodes 0x000–0x1ff.
        let listed = try await run(AdminCommand(opcode: .listQuery, groupType: group, resultLength: 64), minimumResult: 8)
        let supported = AdminOpcodeBitmap(decoding: listed)
        var wanted = AdminOpcodeBitmap(opcodes: (options.wantedOpcodes ?? supported.opcodes).filter(supported.contains))
        wanted.insert(.listQuery)
        wanted.insert(.listUse)
        lock.withLock { groups[group.rawValue] = GroupCommands(supported: supported, inUse: AdminOpcodeBitmap(opcodes: [.listQuery, .listUse])) }
        do {
            _ = try await run(AdminCommand(opcode: .listUse, groupType: group, data: wanted.encode()))
        } catch let error where error.deviceStatus?.0 == .einval && !error.isInvalidGroup && wanted != supported {
            // The device refused the combination (it MAY, for internal dependencies
            // [admin:374-378]): fall back to everything it listed.
            wanted = supported
            wanted.insert(.listQuery)
            wanted.insert(.listUse)
            _ = try await run(AdminCommand(opcode: .listUse, groupType: group, data: wanted.encode()))
        }
        lock.withLock {
            groups[group.rawValue]?.inUse = wanted
            groups[group.rawValue]?.unavailable = nil
        }
    }

    /// The error commands for `group` get while its LIST_QUERY/LIST_USE are refused.
    func unavailableError(_ group: AdminGroupType, _ error: AdminError) -> AdminError {
        let reason = error.deviceStatus.map { "\($0.0.name) / \($0.1.name)" } ?? error.description
        return .groupUnavailable(device: address, group: group, reason: "the device refused its LIST_QUERY/LIST_USE with \(reason)")
    }

    /// Negotiates `group` again if it was unavailable (a command for it is about to be sent).
    public func refreshGroup(_ group: AdminGroupType) async throws(AdminError) {
        do {
            try await negotiate(group)
        } catch let error where error.isInvalidGroup {
            let reason = unavailableError(group, error)
            lock.withLock { groups[group.rawValue, default: GroupCommands()].unavailable = reason }
            throw reason
        }
    }

    func bringUp() throws(AdminError) {
        // This driver is the PF's driver: it negotiates SR_IOV (required before VFs are
        // enabled [content:966-979]) when the function has the capability, and accepts
        // ORDER_PLATFORM (SHOULD [content:962-964]; it makes the ring barriers DMA-strength).
        var wanted: FeatureSet = [.eventIndex, .orderPlatform]
        if transport.hasSRIOVCapability { wanted.insert(.srIOV) }
        var required: FeatureSet = [.adminVQ]
        if options.requireAccessPlatform { required.insert(.accessPlatform) } else { wanted.insert(.accessPlatform) }
        do {
            try transport.negotiate(required: required, wanted: wanted)
        } catch .missingFeatures(let device, let missing, _) where missing.contains(.adminVQ) {
            try? transport.reset()
            throw .adminVQNotOffered(device: device)
        } catch .missingFeatures(let device, let missing, _) where missing.contains(.accessPlatform) {
            try? transport.reset()
            throw .accessPlatformNotOffered(device: device)
        } catch {
            try? transport.reset()
            throw .transport(error)
        }
        // Nothing is mapped for the device yet: a failure up to here leaves nothing to guard.
        do throws(AdminError) {
            try setUpAdminQueue()
        } catch {
            quiesceAfterFailure()
            throw error
        }
    }

    func setUpAdminQueue() throws(AdminError) {
        guard let admin = transport.adminQueues else {
            throw .noAdminQueue(device: address, reason: "the common configuration structure is too short to carry admin_queue_index/admin_queue_num")
        }
        guard admin.count > 0 else { throw .noAdminQueue(device: address, reason: "admin_queue_num is 0") }
        let maximum = transport.queueMaximumSize(admin.index)
        guard maximum > 0 else { throw .transport(.queueUnavailable(device: address, queue: admin.index)) }
        var size = 1
        while size * 2 <= min(options.queueSize, maximum) { size *= 2 }
        guard size >= 2 else { throw .transport(.invalidQueueSize(device: address, queue: admin.index, size: size, maximum: maximum)) }
        let eventIndex = transport.negotiatedFeatures.contains(.eventIndex)
        let queue: SplitVirtqueue
        let slab: DMARegion
        do {
            queue = try SplitVirtqueue(size: size, allocator: allocator, eventIndex: eventIndex,
                                       platformOrdering: transport.negotiatedFeatures.contains(.orderPlatform))
            slab = try allocator.allocate(length: size / 2 * options.slotBytes * 2, alignment: 4096)
        } catch {
            throw .dma(error)
        }
        let notifier: QueueNotifier
        lock.withLock {
            // Whatever an earlier bring-up left was released or quarantined by its close().
            if let old = self.slab { allocator.release(old) }
            self.queue = queue
            self.slab = slab
        }
        do {
            notifier = try transport.setUpQueue(admin.index, size: size, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea,
                                                deviceArea: queue.deviceArea, checkIndex: false)
            try transport.driverOK()
        } catch {
            // The caller quiesces the device before anything is released.
            throw .transport(error)
        }
        lock.withLock {
            self.queue = queue
            self.notifier = notifier
            self.slab = slab
            adminQueueIndex = admin.index
            slots = Array(repeating: Slot(), count: size / 2)
            freeSlots = Array((0..<(size / 2)).reversed())
            headToSlot = Array(repeating: -1, count: size)
            state = .starting
        }
    }

    /// Resets the device and sets the admin queue up again (after a failure).
    public func reinitialize() async throws(AdminError) {
        close()
        try await start()
    }

    /// Resets the device (so it lets go of the rings), then fails every command in flight.
    ///
    /// DMA memory is released or reused only once the device is known to be quiet: its
    /// reset confirmed (device_status reads 0); otherwise Bus Master Enable cleared through
    /// ``Options/disableBusMaster``; otherwise the rings and command slots are quarantined
    /// (kept for the life of the process) and the returned error says so.
    /// - Returns: `nil`, or ``AdminError/memoryQuarantined(device:bytes:reason:)``.
    @discardableResult
    public func close() -> AdminError? {
        lock.withLock {
            let quarantine = quiesceLocked()
            failAllLocked(.notRunning(device: address), newState: .closed)
            return quarantine
        }
    }

    /// Quiesces the device after a failed bring-up (no command can be in flight).
    func quiesceAfterFailure() {
        lock.withLock {
            _ = quiesceLocked()
            failAllLocked(.notRunning(device: address), newState: .closed)
        }
    }

    /// Makes sure the device can no longer touch the driver's DMA memory (lock held):
    /// reset, confirmed; else Bus Master Enable cleared; else the memory is moved to the
    /// quarantine and never released. Returns the quarantine error, if it came to that.
    func quiesceLocked() -> AdminError? {
        let resetError: TransportError
        do {
            try transport.reset(timeout: options.resetTimeout)
            return nil
        } catch {
            resetError = error
        }
        if let disableBusMaster = options.disableBusMaster, disableBusMaster() { return nil }
        guard queue != nil || slab != nil else { return nil }
        var bytes = 0
        if let queue { bytes += queue.memory.length }
        if let slab { bytes += slab.length }
        DMAQuarantine.keep(queue: queue, slab: slab)
        queue = nil
        slab = nil
        notifier = nil
        quarantinedBytes += bytes
        return .memoryQuarantined(device: address, bytes: bytes, reason: resetError.description)
    }

    // MARK: Submission

    /// Runs a command and returns its command-specific result; a status other than OK
    /// throws ``AdminError/commandFailed(device:opcode:opcodeName:member:status:qualifier:)``.
    /// - Parameter minimumResult: result bytes the caller needs (fewer → `resultTooShort`).
    ///
    /// EAGAIN has no side effects, so the command is sent again (the driver SHOULD retry
    /// [admin:607-609,642-643]): up to ``eagainRetries`` more times, 1, 4, 16 … ms apart.
    public func run(_ command: AdminCommand, timeout: Duration? = nil, minimumResult: Int = 0) async throws(AdminError) -> [UInt8] {
        var response = try await submit(command, timeout: timeout)
        var delay = Duration.milliseconds(1)
        for _ in 0..<Self.eagainRetries where response.status == .eagain {
            try? await Task.sleep(for: delay)
            delay *= 4
            response = try await submit(command, timeout: timeout)
        }
        return try checkedResult(of: command, response: response, minimumResult: minimumResult)
    }

    /// How many times ``run(_:timeout:minimumResult:)`` sends a command again after EAGAIN.
    public static let eagainRetries = 5

    /// Submits a command and returns the device's response, whatever its status.
    ///
    /// Continuations are resumed while the lock is held: resuming only enqueues the waiting
    /// task, so nothing runs re-entrantly, and the completion path needs no buffers.
    public func submit(_ command: AdminCommand, timeout: Duration? = nil) async throws(AdminError) -> AdminResponse {
        let limit = options.slotBytes
        guard Self.readableLength(command) <= limit, Self.writableLength(command) <= limit else {
            throw .commandTooLarge(opcode: command.opcode, dataBytes: command.data.count, resultBytes: command.resultLength,
                                   limit: limit - AdminCommandLayout.headerSize)
        }
        // A command for a group whose LIST_QUERY/LIST_USE failed (the SR-IOV group before
        // VFs were enabled) negotiates that group first.
        let renegotiate = lock.withLock { () -> Bool in
            guard case .running = state, command.opcode != .listQuery, command.opcode != .listUse else { return false }
            return groups[command.groupType.rawValue]?.unavailable != nil
        }
        if renegotiate { try await refreshGroup(command.groupType) }
        guard command.opcode == .listUse else { return try await submitAdmitted(command, timeout: timeout, exclusive: false) }
        // LIST_USE holds the queue alone: the driver MUST NOT issue it while any other
        // command is outstanding [admin:446-449]. New commands wait; those in flight drain.
        await acquireExclusive()
        defer { releaseExclusive() }
        try await drain(opcode: command.opcode, timeout: timeout ?? options.defaultTimeout)
        return try await submitAdmitted(command, timeout: timeout, exclusive: true)
    }

    /// Submits a command without checking it against the negotiated command sets (the
    /// conformance checks send what a device must refuse). Everything else — padding,
    /// LIST_USE exclusivity, timeouts — is as ``submit(_:timeout:)``.
    public func submitUnchecked(_ command: AdminCommand, timeout: Duration? = nil) async throws(AdminError) -> AdminResponse {
        var command = command
        command.unchecked = true
        return try await submit(command, timeout: timeout)
    }

    /// Places all `commands` on the ring before ringing the doorbell once, so that the
    /// device sees them as one batch (in this order), and returns their outcomes in order.
    /// LIST_USE is not allowed here (it must be alone on the queue).
    public func submitTogether(_ commands: [AdminCommand], unchecked: Bool = false, timeout: Duration? = nil) async -> [Result<AdminResponse, AdminError>] {
        precondition(!commands.contains { $0.opcode == .listUse }, "LIST_USE must be alone on the queue")
        lock.withLock { holdNotify = true }
        let placedBefore = statistics.submitted
        let results = await withTaskGroup(of: (Int, Result<AdminResponse, AdminError>).self) { tasks in
            for (index, command) in commands.enumerated() {
                var command = command
                command.unchecked = unchecked
                let placed = command
                tasks.addTask { [self] in
                    do throws(AdminError) { return (index, .success(try await submit(placed, timeout: timeout))) } catch { return (index, .failure(error)) }
                }
                // Wait until it is on the ring (bounded: a command refused before placing never is).
                let deadline = monotonicNanoseconds().addingSaturated(2_000_000_000)
                while statistics.submitted < placedBefore + index + 1 && monotonicNanoseconds() < deadline
                        && lock.withLock({ holdNotify && stateErrorLocked(for: placed) == nil }) {
                    await Task.yield()
                }
            }
            // All placed (or the driver failed): one doorbell for the batch.
            lock.withLock {
                holdNotify = false
                if kickPending, let notifier {
                    kickPending = false
                    counters.notifies += 1
                    notifier.notify()
                    _ = pollLocked(now: monotonicNanoseconds())
                }
            }
            return await tasks.reduce(into: [(Int, Result<AdminResponse, AdminError>)]()) { $0.append($1) }
        }
        return results.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Bytes of the device-readable part: header and data, padded with zeros to a multiple
    /// of 8 [admin:622-624] except where the length carries meaning (legacy config
    /// accesses 0x2–0x5, whose lengths are the access size; fact sheet A5).
    static func readableLength(_ command: AdminCommand) -> Int {
        let length = AdminCommandLayout.headerSize + command.data.count
        return lengthCarriesMeaning(command) ? length : (length + 7) & ~7
    }

    /// Bytes of the device-writable part: status header and result, padded likewise.
    static func writableLength(_ command: AdminCommand) -> Int {
        let length = AdminCommandLayout.resultHeaderSize + command.resultLength
        return lengthCarriesMeaning(command) ? length : (length + 7) & ~7
    }

    static func lengthCarriesMeaning(_ command: AdminCommand) -> Bool {
        command.groupType == .srIOV && (0x2...0x5).contains(command.opcode.rawValue)
    }

    /// Takes the queue for a LIST_USE (one at a time).
    func acquireExclusive() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.withLock {
                if exclusive { exclusiveWaiters.append(continuation) } else { exclusive = true; continuation.resume() }
            }
        }
    }

    /// Gives the queue back: to the next LIST_USE, or to the commands that waited.
    func releaseExclusive() {
        lock.withLock {
            if !exclusiveWaiters.isEmpty { exclusiveWaiters.removeFirst().resume(); return }
            exclusive = false
            while !waiters.isEmpty, let index = freeSlots.popLast() {
                waiters.removeFirst().continuation.resume(returning: SlotGrant(index: index, epoch: slotEpoch))
            }
        }
    }

    /// Waits until no command is outstanding (the device owns no command buffer).
    func drain(opcode: AdminOpcode, timeout: Duration) async throws(AdminError) {
        let deadline = monotonicNanoseconds().addingSaturated(timeout.nanoseconds)
        while true {
            let (busy, error) = lock.withLock { (busyCountLocked, stateErrorLocked(for: AdminCommand(opcode: opcode))) }
            if let error { throw error }
            if busy == 0 { return }
            if monotonicNanoseconds() >= deadline {
                throw .timeout(device: address, opcode: opcode, opcodeName: name(of: opcode), member: .none, after: timeout)
            }
            try? await Task.sleep(for: .microseconds(50))
        }
    }

    func submitAdmitted(_ command: AdminCommand, timeout: Duration?, exclusive holder: Bool) async throws(AdminError) -> AdminResponse {
        let (token, immediate) = lock.withLock { () -> (UInt64, Result<SlotGrant?, AdminError>) in
            nextToken += 1
            if let error = stateErrorLocked(for: command) { return (nextToken, .failure(error)) }
            if exclusive && !holder { return (nextToken, .success(nil)) }
            return (nextToken, .success(freeSlots.popLast().map { SlotGrant(index: $0, epoch: slotEpoch) }))
        }
        let slot: SlotGrant
        if let ready = try immediate.get() { slot = ready } else {
            slot = try await waitForSlot(command, token: token, exclusive: holder, timeout: options.slotWaitTimeout)
        }
        let timeout = timeout ?? options.defaultTimeout
        let result: Result<AdminResponse, AdminError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let startPoller = lock.withLock { () -> Bool in
                    submitLocked(slot: slot, command: command, token: token, timeout: timeout, continuation: continuation)
                    guard !pollerRunning, busyCountLocked > 0 else { return false }
                    pollerRunning = true
                    return true
                }
                if startPoller { Task.detached { [self] in await pollLoop() } }
            }
        } onCancel: {
            cancel(token: token)
        }
        return try result.get()
    }

    /// Waits for a command slot to be handed over (or fails when the driver stops). While a
    /// LIST_USE holds the queue, only its holder gets a slot. The wait is bounded by
    /// ``Options/slotWaitTimeout`` (slots of commands the device never completes stay taken).
    func waitForSlot(_ command: AdminCommand, token: UInt64, exclusive holder: Bool, timeout: Duration) async throws(AdminError) -> SlotGrant {
        let expiry = Task.detached { [self] in
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            lock.withLock {
                if let index = waiters.firstIndex(where: { $0.token == token }) {
                    expiredWaiters.insert(token)
                    waiters.remove(at: index).continuation.resume(returning: nil)
                }
            }
        }
        defer { expiry.cancel() }
        let slot: SlotGrant? = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                lock.withLock {
                    if stateErrorLocked(for: command) != nil {
                        continuation.resume(returning: nil)
                    } else if (!exclusive || holder), let slot = freeSlots.popLast() {
                        continuation.resume(returning: SlotGrant(index: slot, epoch: slotEpoch))
                    } else {
                        waiters.append(Waiter(token: token, continuation: continuation, exclusive: holder))
                    }
                }
            }
        } onCancel: {
            lock.withLock {
                if let index = waiters.firstIndex(where: { $0.token == token }) {
                    waiters.remove(at: index).continuation.resume(returning: nil)
                }
            }
        }
        guard let slot else {
            let (error, expired) = lock.withLock { (stateErrorLocked(for: command), expiredWaiters.remove(token) != nil) }
            if expired {
                lock.withLock { counters.timeouts += 1 }
                throw .noFreeSlot(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode), after: timeout)
            }
            throw error ?? .cancelled(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode))
        }
        return slot
    }

    /// Why a command cannot be sent now, if it cannot (lock held).
    func stateErrorLocked(for command: AdminCommand) -> AdminError? {
        let opcode = command.opcode
        switch state {
        case .failed(let error): return error
        case .closed: return .notRunning(device: address)
        case .starting:
            return opcode == .listQuery || opcode == .listUse ? nil : .notRunning(device: address)
        case .running:
            // LIST_QUERY changes nothing and may ask any group; LIST_USE negotiates one.
            if opcode == .listQuery || opcode == .listUse || command.unchecked { return nil }
            guard let group = groups[command.groupType.rawValue] else {
                return .groupUnavailable(device: address, group: command.groupType,
                                         reason: "the driver negotiated no command set for this group type (LIST_QUERY/LIST_USE)")
            }
            if let unavailable = group.unavailable { return unavailable }
            if !group.inUse.contains(opcode) {
                return .commandNotInUse(device: address, opcode: opcode, opcodeName: opcodeNames[opcode] ?? opcode.specName,
                                        supported: group.supported.contains(opcode))
            }
            return nil
        }
    }

    /// Places a command on the ring and notifies (lock held), then reaps what the device
    /// already completed.
    func submitLocked(slot grant: SlotGrant, command: AdminCommand, token: UInt64, timeout: Duration,
                      continuation: CheckedContinuation<Result<AdminResponse, AdminError>, Never>) {
        guard grant.epoch == slotEpoch else {
            // Granted before a fail-all: the slot may belong to another command by now.
            continuation.resume(returning: .failure(stateErrorLocked(for: command) ?? .notRunning(device: address)))
            return
        }
        let index = grant.index
        if let error = stateErrorLocked(for: command) {
            releaseSlotLocked(index)
            continuation.resume(returning: .failure(error))
            return
        }
        guard let queue, let slab, let notifier else {
            continuation.resume(returning: .failure(.notRunning(device: address)))
            return
        }
        let requestOffset = index * options.slotBytes * 2
        let responseOffset = requestOffset + options.slotBytes
        // The header and data go straight into the slot (no intermediate array).
        let request = slab.cpuAddress.advanced(by: requestOffset)
        let header = UnsafeMutableRawBufferPointer(start: request, count: AdminCommandLayout.headerSize)
        header.initializeMemory(as: UInt8.self, repeating: 0)
        header.writeLE(command.opcode.rawValue, at: AdminCommandLayout.opcode)
        header.writeLE(command.groupType.rawValue, at: AdminCommandLayout.groupType)
        header.writeLE(command.member.rawValue, at: AdminCommandLayout.groupMemberID)
        if !command.data.isEmpty {
            command.data.withUnsafeBytes { request.advanced(by: AdminCommandLayout.headerSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        let unpadded = AdminCommandLayout.headerSize + command.data.count
        let length = Self.readableLength(command)
        request.advanced(by: unpadded).initializeMemory(as: UInt8.self, repeating: 0, count: length - unpadded)
        // The status header is zeroed so a device that writes nothing cannot fake success.
        slab.cpuAddress.advanced(by: responseOffset).initializeMemory(as: UInt8.self, repeating: 0, count: AdminCommandLayout.resultHeaderSize)
        let head: UInt16
        do {
            head = try queue.add(
                readable: CollectionOfOne(DMABuffer(address: slab.deviceAddress(at: requestOffset), length: UInt32(length))),
                writable: CollectionOfOne(DMABuffer(address: slab.deviceAddress(at: responseOffset),
                                                   length: UInt32(Self.writableLength(command)))))
        } catch {
            // Slots are sized to the ring, so a full ring here is a driver bug; fail the command cleanly.
            releaseSlotLocked(index)
            continuation.resume(returning: .failure(.deviceMisbehaved(device: address, error)))
            return
        }
        let now = monotonicNanoseconds()
        slots[index].continuation = continuation
        slots[index].opcode = command.opcode
        slots[index].member = command.member
        slots[index].started = now
        slots[index].timeout = timeout
        slots[index].deadline = now.addingSaturated(timeout.nanoseconds)
        slots[index].token = token
        slots[index].resultLength = command.resultLength
        slots[index].busy = true
        headToSlot[Int(head)] = Int32(index)
        counters.submitted += 1
        counters.peakInFlight = max(counters.peakInFlight, busyCountLocked)
        if let traceHandler {
            slots[index].command = command
            traceHandler(.sent(command, bytes: Array(UnsafeRawBufferPointer(start: request, count: length))))
        }
        if queue.publish() {
            if holdNotify || (pollerRunning && busyCountLocked > 1) {
                // Commands are in flight and the poller runs: let it ring the doorbell once
                // for everything published until its next round (one notify per batch).
                kickPending = true
            } else {
                counters.notifies += 1
                notifier.notify()
            }
        }
        // A device that completes during the notify (or already had) is reaped right away.
        _ = pollLocked(now: now)
    }

    /// Gives a slot to the first waiter or back to the free list (lock held).
    func releaseSlotLocked(_ index: Int) {
        slots[index] = Slot()
        if let next = waiters.firstIndex(where: { !exclusive || $0.exclusive }) {
            waiters.remove(at: next).continuation.resume(returning: SlotGrant(index: index, epoch: slotEpoch))
        } else {
            freeSlots.append(index)
        }
    }

    func cancel(token: UInt64) {
        lock.withLock {
            guard let index = slots.firstIndex(where: { $0.busy && $0.token == token }), let continuation = slots[index].continuation else { return }
            slots[index].continuation = nil  // the slot stays busy until the device gives it back
            counters.cancellations += 1
            continuation.resume(returning: .failure(.cancelled(device: address, opcode: slots[index].opcode,
                                                               opcodeName: opcodeNames[slots[index].opcode] ?? slots[index].opcode.specName)))
        }
    }

    // MARK: Completion

    /// Takes completions (lock held) and resumes their callers. Returns how many completed.
    func pollLocked(now: UInt64) -> Int {
        guard let queue, let slab else { return 0 }
        do {
            return try queue.takeCompletions { element in
                let index = Int(headToSlot[Int(element.head)])
                headToSlot[Int(element.head)] = -1
                guard index >= 0 else { return }
                let slot = slots[index]
                counters.completed += 1
                let response = UnsafeRawBufferPointer(start: slab.cpuAddress + index * options.slotBytes * 2 + options.slotBytes, count: Int(element.length))
                if let continuation = slot.continuation {
                    if response.count >= AdminCommandLayout.resultHeaderSize {
                        let status = AdminStatus(rawValue: response.readLE(UInt16.self, at: AdminCommandLayout.status))
                        let qualifier = AdminStatusQualifier(rawValue: response.readLE(UInt16.self, at: AdminCommandLayout.statusQualifier))
                        counters.record(status: status)
                        counters.record(latencyNanoseconds: now &- slot.started)
                        var result = Array(UnsafeRawBufferPointer(rebasing: response[AdminCommandLayout.resultHeaderSize...]))
                        let written = result.count
                        // A short result is truncated by the device, not failed; the fields
                        // it did not write read as zero [admin:548-553,632-636].
                        if result.count < slot.resultLength { result += [UInt8](repeating: 0, count: slot.resultLength - result.count) }
                        if let command = slot.command, let traceHandler { traceHandler(.received(command, bytes: Array(response))) }
                        continuation.resume(returning: .success(AdminResponse(status: status, qualifier: qualifier, result: result,
                                                                              resultBytesWritten: written)))
                    } else {
                        continuation.resume(returning: .failure(.resultTooShort(
                            device: address, opcode: slot.opcode, opcodeName: opcodeNames[slot.opcode] ?? slot.opcode.specName,
                            expected: AdminCommandLayout.resultHeaderSize, received: response.count)))
                    }
                }
                releaseSlotLocked(index)
            }
        } catch {
            _ = quiesceLocked()
            failAllLocked(.deviceMisbehaved(device: address, error), newState: nil)
            return 1
        }
    }

    /// Whether a command waits past its deadline (lock held).
    func hasExpiredLocked(now: UInt64) -> Bool {
        slots.contains { $0.busy && $0.continuation != nil && now >= $0.deadline }
    }

    /// Fails expired commands (lock held). Their slots stay busy until the device completes them.
    func expireLocked(now: UInt64) {
        for index in slots.indices where slots[index].busy && slots[index].continuation != nil && now >= slots[index].deadline {
            let continuation = slots[index].continuation!
            slots[index].continuation = nil
            counters.timeouts += 1
            let slot = slots[index]
            continuation.resume(returning: .failure(.timeout(device: address, opcode: slot.opcode, opcodeName: opcodeNames[slot.opcode] ?? slot.opcode.specName,
                                                             member: slot.member, after: slot.timeout)))
        }
    }

    /// Fails every command in flight and every waiter (lock held). Call it only after
    /// ``quiesceLocked()``: the rings are reset for reuse (a quarantined queue is gone).
    func failAllLocked(_ error: AdminError, newState: State?) {
        slotEpoch &+= 1
        for index in slots.indices {
            if let continuation = slots[index].continuation {
                counters.failedInFlight += 1
                continuation.resume(returning: .failure(error))
            }
            slots[index] = Slot()
        }
        freeSlots = Array(slots.indices.reversed())
        headToSlot = Array(repeating: -1, count: headToSlot.count)
        for waiter in waiters { waiter.continuation.resume(returning: nil) }
        waiters.removeAll()
        state = newState ?? .failed(error)
        _ = queue?.abandonAll()
    }

    var busyCountLocked: Int { slots.count - freeSlots.count }

    /// Polls while commands are in flight: completions, timeouts, and device health.
    func pollLoop() async {
        var lastProgress = monotonicNanoseconds()
        var nextExpiry: UInt64 = 0
        while true {
            let now = monotonicNanoseconds()
            let (keepGoing, progressed) = lock.withLock { () -> (Bool, Bool) in
                if kickPending, !holdNotify, let notifier {
                    kickPending = false
                    counters.notifies += 1
                    notifier.notify()
                }
                let progressed = pollLocked(now: now) > 0
                let expiring = now >= nextExpiry && hasExpiredLocked(now: now)
                if now >= nextExpiry { nextExpiry = now + 1_000_000 }
                // Before timing a command out, and when nothing moved for a while, look at the
                // device (an MMIO read, off the fast path): a device that needs a reset or is
                // gone fails everything with that reason rather than with timeouts.
                if expiring || (!progressed && now &- lastProgress > 2_000_000 && busyCountLocked > 0) {
                    lastProgress = now
                    do throws(TransportError) { try transport.checkHealth() } catch {
                        let mapped: AdminError = error == .surpriseRemoval(device: address) ? .deviceRemoved(device: address) : .deviceNeedsReset(device: address)
                        _ = quiesceLocked()
                        failAllLocked(mapped, newState: nil)
                    }
                }
                if expiring { expireLocked(now: now) }
                let busy = busyCountLocked > 0 || kickPending
                if !busy { pollerRunning = false }
                return (busy, progressed)
            }
            if !keepGoing { return }
            if progressed { lastProgress = now }
            // Spin (yielding to other tasks) while completions keep coming; after 2 ms
            // without one, sleep between polls so a slow device does not cost a core.
            if now &- lastProgress > 2_000_000 {
                try? await Task.sleep(for: .microseconds(200))
            } else {
                await Task.yield()
            }
        }
    }
}


/// The drivers alive in this process (weakly held), for ``AdminQueueDriver/closeAllOpen()``.
enum OpenDrivers {
    struct Entry: @unchecked Sendable { weak var driver: AdminQueueDriver? }
    nonisolated(unsafe) static var entries: [ObjectIdentifier: Entry] = [:]
    static let lock = Lock()
    static func add(_ driver: AdminQueueDriver) { lock.withLock { entries[ObjectIdentifier(driver)] = Entry(driver: driver) } }
    static func remove(_ driver: AdminQueueDriver) { lock.withLock { _ = entries.removeValue(forKey: ObjectIdentifier(driver)) } }
    static func all() -> [AdminQueueDriver] { lock.withLock { entries.values.compactMap(\.driver) } }
}

/// DMA memory a device may still write: the rings and command slots of a device whose
/// reset was not confirmed and whose bus mastering could not be cleared. Kept (mapped and
/// allocated) for the life of the process, never released or reused.
enum DMAQuarantine {
    struct Entry: @unchecked Sendable {
        var queue: SplitVirtqueue?
        var slab: DMARegion?
    }
    nonisolated(unsafe) static var entries: [Entry] = []
    static let lock = Lock()
    static func keep(queue: SplitVirtqueue?, slab: DMARegion?) {
        lock.withLock { entries.append(Entry(queue: queue, slab: slab)) }
    }
}

extension UInt64 {
    /// `self + other`, or UInt64.max when that overflows (a huge timeout never wraps).
    func addingSaturated(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}

/// Nanoseconds since the first call (ContinuousClock: stdlib only, no Foundation).
func monotonicNanoseconds() -> UInt64 {
    clockBase.duration(to: ContinuousClock.now).nanoseconds
}

private let clockBase = ContinuousClock.now
