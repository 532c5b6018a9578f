import PCIConfig
import VirtioLock
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
        /// Opcodes to enable with LIST_USE (`nil`: everything the device lists).
        public var wantedOpcodes: [AdminOpcode]?
        /// Group type of the commands (SR-IOV).
        public var groupType: AdminGroupType = .srIOV
        public init() {}
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
        /// On the ring (the device owns its buffers).
        var busy = false
    }

    struct Waiter {
        var token: UInt64
        var continuation: CheckedContinuation<Int?, Never>
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
    var nextToken: UInt64 = 1
    var pollerRunning = false
    /// Chains were published without a notify; the poller sends one.
    var kickPending = false
    var counters = AdminCounters()
    var supportedOpcodes = AdminOpcodeBitmap()
    var inUseOpcodes = AdminOpcodeBitmap()
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
    }

    deinit {
        if let slab { allocator.release(slab) }
    }

    /// Prints or records every command's bytes (the CLI's `--trace`).
    public func setTrace(_ handler: (@Sendable (AdminTraceEvent) -> Void)?) { lock.withLock { traceHandler = handler } }

    /// The spec or plugin name of an opcode.
    public func name(of opcode: AdminOpcode) -> String { lock.withLock { opcodeNames[opcode] } ?? opcode.specName }

    /// Opcodes the device listed in LIST_QUERY.
    public var supported: AdminOpcodeBitmap { lock.withLock { supportedOpcodes } }
    /// Opcodes enabled with LIST_USE.
    public var inUse: AdminOpcodeBitmap { lock.withLock { inUseOpcodes } }
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
        do {
            try bringUp()
        } catch {
            try? transport.reset()
            throw error
        }
        // Command-set negotiation: LIST_QUERY, then LIST_USE of what we will use.
        do {
            // 64 bytes of bitmap describe opcodes 0x000–0x1ff.
            let listed = try await run(AdminCommand(opcode: .listQuery, groupType: options.groupType, resultLength: 64), minimumResult: 8)
            let supported = AdminOpcodeBitmap(decoding: listed)
            var wanted = AdminOpcodeBitmap(opcodes: (options.wantedOpcodes ?? supported.opcodes).filter(supported.contains))
            wanted.insert(.listQuery)
            wanted.insert(.listUse)
            lock.withLock { supportedOpcodes = supported }
            _ = try await run(AdminCommand(opcode: .listUse, groupType: options.groupType, data: wanted.encode()))
            lock.withLock {
                inUseOpcodes = wanted
                if case .starting = state { state = .running }
            }
        } catch {
            close()
            throw error
        }
    }

    func bringUp() throws(AdminError) {
        do {
            try transport.negotiate(required: [.adminVQ], wanted: [.eventIndex, .accessPlatform])
        } catch .missingFeatures(let device, let missing, _) where missing.contains(.adminVQ) {
            throw .adminVQNotOffered(device: device)
        } catch {
            throw .transport(error)
        }
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
        do {
            notifier = try transport.setUpQueue(admin.index, size: size, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea,
                                                deviceArea: queue.deviceArea, checkIndex: false)
            try transport.driverOK()
        } catch {
            allocator.release(slab)
            throw .transport(error)
        }
        lock.withLock {
            if let old = self.slab { allocator.release(old) }
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
    public func close() {
        lock.withLock {
            try? transport.reset()
            failAllLocked(.notRunning(device: address), newState: .closed)
        }
    }

    // MARK: Submission

    /// Runs a command and returns its command-specific result; a status other than OK
    /// throws ``AdminError/commandFailed(device:opcode:opcodeName:member:status:qualifier:)``.
    /// - Parameter minimumResult: result bytes the caller needs (fewer → `resultTooShort`).
    public func run(_ command: AdminCommand, timeout: Duration? = nil, minimumResult: Int = 0) async throws(AdminError) -> [UInt8] {
        let response = try await submit(command, timeout: timeout)
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

    /// Submits a command and returns the device's response, whatever its status.
    ///
    /// Continuations are resumed while the lock is held: resuming only enqueues the waiting
    /// task, so nothing runs re-entrantly, and the completion path needs no buffers.
    public func submit(_ command: AdminCommand, timeout: Duration? = nil) async throws(AdminError) -> AdminResponse {
        let limit = options.slotBytes
        guard AdminCommandLayout.headerSize + command.data.count <= limit,
              AdminCommandLayout.resultHeaderSize + command.resultLength <= limit else {
            throw .commandTooLarge(opcode: command.opcode, dataBytes: command.data.count, resultBytes: command.resultLength,
                                   limit: limit - AdminCommandLayout.headerSize)
        }
        let (token, immediate) = lock.withLock { () -> (UInt64, Result<Int?, AdminError>) in
            nextToken += 1
            if let error = stateErrorLocked(for: command.opcode) { return (nextToken, .failure(error)) }
            return (nextToken, .success(freeSlots.popLast()))
        }
        let slot: Int
        if let ready = try immediate.get() { slot = ready } else { slot = try await waitForSlot(command, token: token) }
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

    /// Waits for a command slot to be handed over (or fails when the driver stops).
    func waitForSlot(_ command: AdminCommand, token: UInt64) async throws(AdminError) -> Int {
        let slot: Int? = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                lock.withLock {
                    if stateErrorLocked(for: command.opcode) != nil {
                        continuation.resume(returning: nil)
                    } else if let slot = freeSlots.popLast() {
                        continuation.resume(returning: slot)
                    } else {
                        waiters.append(Waiter(token: token, continuation: continuation))
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
            let error = lock.withLock { stateErrorLocked(for: command.opcode) }
            throw error ?? .cancelled(device: address, opcode: command.opcode, opcodeName: name(of: command.opcode))
        }
        return slot
    }

    /// Why a command cannot be sent now, if it cannot (lock held).
    func stateErrorLocked(for opcode: AdminOpcode) -> AdminError? {
        switch state {
        case .failed(let error): return error
        case .closed: return .notRunning(device: address)
        case .starting:
            return opcode == .listQuery || opcode == .listUse ? nil : .notRunning(device: address)
        case .running:
            if !inUseOpcodes.contains(opcode) {
                return .commandNotInUse(device: address, opcode: opcode, opcodeName: opcodeNames[opcode] ?? opcode.specName,
                                        supported: supportedOpcodes.contains(opcode))
            }
            return nil
        }
    }

    /// Places a command on the ring and notifies (lock held), then reaps what the device
    /// already completed.
    func submitLocked(slot index: Int, command: AdminCommand, token: UInt64, timeout: Duration,
                      continuation: CheckedContinuation<Result<AdminResponse, AdminError>, Never>) {
        if let error = stateErrorLocked(for: command.opcode) {
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
        let length = AdminCommandLayout.headerSize + command.data.count
        // The status header is zeroed so a device that writes nothing cannot fake success.
        slab.cpuAddress.advanced(by: responseOffset).initializeMemory(as: UInt8.self, repeating: 0, count: AdminCommandLayout.resultHeaderSize)
        let head: UInt16
        do {
            head = try queue.add(
                readable: CollectionOfOne(DMABuffer(address: slab.deviceAddress(at: requestOffset), length: UInt32(length))),
                writable: CollectionOfOne(DMABuffer(address: slab.deviceAddress(at: responseOffset),
                                                   length: UInt32(AdminCommandLayout.resultHeaderSize + command.resultLength))))
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
        slots[index].deadline = now &+ timeout.nanoseconds
        slots[index].token = token
        slots[index].busy = true
        headToSlot[Int(head)] = Int32(index)
        counters.submitted += 1
        counters.peakInFlight = max(counters.peakInFlight, busyCountLocked)
        if let traceHandler {
            slots[index].command = command
            traceHandler(.sent(command, bytes: Array(UnsafeRawBufferPointer(start: request, count: length))))
        }
        if queue.publish() {
            if pollerRunning && busyCountLocked > 1 {
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
        if !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: index)
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
                        let result = Array(UnsafeRawBufferPointer(rebasing: response[AdminCommandLayout.resultHeaderSize...]))
                        if let command = slot.command, let traceHandler { traceHandler(.received(command, bytes: Array(response))) }
                        continuation.resume(returning: .success(AdminResponse(status: status, qualifier: qualifier, result: result)))
                    } else {
                        continuation.resume(returning: .failure(.resultTooShort(
                            device: address, opcode: slot.opcode, opcodeName: opcodeNames[slot.opcode] ?? slot.opcode.specName,
                            expected: AdminCommandLayout.resultHeaderSize, received: response.count)))
                    }
                }
                releaseSlotLocked(index)
            }
        } catch {
            try? transport.reset()
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

    /// Fails every command in flight and every waiter (lock held).
    func failAllLocked(_ error: AdminError, newState: State?) {
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
                if kickPending, let notifier {
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
                        try? transport.reset()
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


/// Nanoseconds since the first call (ContinuousClock: stdlib only, no Foundation).
func monotonicNanoseconds() -> UInt64 {
    clockBase.duration(to: ContinuousClock.now).nanoseconds
}

private let clockBase = ContinuousClock.now
