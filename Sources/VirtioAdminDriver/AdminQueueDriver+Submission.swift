import Synchronization
import VirtioSystem
import VirtioSpec
import VirtioTransport
import Virtqueue

// Submission: admission (command-set and state checks, a slot), the command's bytes into
// its slot, the chain on the ring, the doorbell. Spec: §2.12.1 (admin command layout),
// §2.7.13 (supplying buffers), digest §7.
extension AdminQueueDriver {
    /// Runs a command and returns its command-specific result; a status other than OK
    /// throws ``AdminError/commandFailed(device:opcode:opcodeName:member:status:qualifier:)``.
    /// - Parameter minimumResult: result bytes the caller needs (fewer → `resultTooShort`).
    ///
    /// EAGAIN has no side effects, so the command is sent again (the driver SHOULD retry
    /// [admin:607-609,642-643]): up to ``eagainRetries`` more times, 1, 4, 16 … ms apart.
    public func run(_ command: AdminCommand, timeout: Duration? = nil, minimumResult: Int = 0) async throws(AdminError) -> [UInt8] {
        let response = try await submitRetryingEAGAIN(command, timeout: timeout)
        return try checkedResult(of: command, response: response, minimumResult: minimumResult)
    }

    /// How many times ``run(_:timeout:minimumResult:)`` sends a command again after EAGAIN.
    package static let eagainRetries = 5

    /// Submits a command and returns the device's response, whatever its status.
    ///
    /// Continuations are resumed while the lock is held: resuming only enqueues the waiting
    /// task, so nothing runs re-entrantly, and the completion path needs no buffers.
    public func submit(_ command: AdminCommand, timeout: Duration? = nil) async throws(AdminError) -> AdminResponse {
        try checkSize(command)
        // A command for a group whose LIST_QUERY/LIST_USE failed (the SR-IOV group before
        // VFs were enabled) negotiates that group first (submitAdmitted finds out).
        guard command.opcode == .listUse else { return try await submitAdmitted(command, timeout: timeout, exclusive: false, renegotiate: true) }
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
    package func submitUnchecked(_ command: AdminCommand, timeout: Duration? = nil) async throws(AdminError) -> AdminResponse {
        var command = command
        command.unchecked = true
        return try await submit(command, timeout: timeout)
    }

    /// A command whose parts exceed ``Options/largeCommandBytes`` is refused before anything is sent.
    func checkSize(_ command: AdminCommand) throws(AdminError) {
        let limit = options.largeCommandBytes
        guard Self.readableLength(command) <= limit, Self.writableLength(command) <= limit else {
            throw .commandTooLarge(device: address, opcode: command.opcode, opcodeName: opcodeName(command.opcode),
                                   dataBytes: command.data.count, resultBytes: command.resultLength,
                                   dataLimit: limit - AdminCommandLayout.headerSize, resultLimit: limit - AdminCommandLayout.resultHeaderSize)
        }
    }

    /// Whether a command's header + data or status + result do not fit a command slot.
    func isLarge(_ command: AdminCommand) -> Bool {
        Self.readableLength(command) > options.slotBytes || Self.writableLength(command) > options.slotBytes
    }

    /// DMA memory of its own for a command larger than a slot: the request, padded to 8
    /// bytes, then the response (at ``largeResponseOffset(_:)``).
    func allocateLarge(_ command: AdminCommand) throws(AdminError) -> DMARegion {
        let bytes = Self.largeResponseOffset(command) + Self.writableLength(command)
        do { return try allocator.allocate(length: bytes, alignment: 4096) } catch {
            throw .dma(device: address, purpose: .command(opcode: command.opcode, opcodeName: opcodeName(command.opcode), bytes: bytes), error)
        }
    }

    /// Where the response starts in a large command's own memory: after the request, at the
    /// next multiple of 8.
    static func largeResponseOffset(_ command: AdminCommand) -> Int { (readableLength(command) + 7) & ~7 }

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

    /// - Parameter renegotiate: a command for a group that is unavailable (its LIST_QUERY
    ///   or LIST_USE failed) negotiates the group first, then goes on.
    ///
    /// The usual command takes the lock once here: one hold admits it (state, command set,
    /// a free slot), places it, publishes it and rings. Only a command that must wait for a
    /// slot, or for its group to be negotiated again, takes the slow way.
    func submitAdmitted(_ command: AdminCommand, timeout: Duration?, exclusive holder: Bool, renegotiate: Bool = false) async throws(AdminError) -> AdminResponse {
        let timeout = timeout ?? options.defaultTimeout
        // A command larger than a slot brings its own DMA memory (allocated outside the
        // lock); it is released here unless the command went on the ring.
        var large: DMARegion?
        if isLarge(command) {
            // A driver that cannot send it says so, not a failed allocation.
            if let error = lock.withLock({ stateErrorLocked(for: command) }) { throw error }
            large = try allocateLarge(command)
        }
        var onTheRing = false
        defer { if let large, !onTheRing { allocator.release(large) } }
        // The token is known before the lock is taken, so that a cancellation can find the command.
        let token = newToken()
        /// Why the first hold did not place the command.
        enum Detour { case renegotiate, waitForSlot }
        var detour: Detour?
        var outcome: Result<AdminResponse, AdminError>? = await withTaskCancellationHandler {
            await withUnsafeContinuation { continuation in
                lock.withLock {
                    if let cancelled = cancelledBeforePlacingLocked(command) {
                        continuation.resume(returning: .failure(cancelled))
                        return
                    }
                    if renegotiate && needsRenegotiationLocked(command) {
                        detour = .renegotiate
                        continuation.resume(returning: nil)
                        return
                    }
                    switch admitLocked(command, exclusive: holder) {
                    case .failure(let error): continuation.resume(returning: .failure(error))
                    case .success(nil):
                        detour = .waitForSlot
                        continuation.resume(returning: nil)
                    case .success(let slot?):
                        onTheRing = submitLocked(slot: slot, command: command, token: token, timeout: timeout, waiter: .single(continuation), large: large)
                    }
                }
            }
        } onCancel: {
            afterCancellation { [self] in cancel(token: token) }
        }
        if let detour {
            // The slow way: the group negotiated again, or a wait for a slot.
            if detour == .renegotiate {
                // The retry allocates its own memory, if it needs some.
                if let region = large {
                    allocator.release(region)
                    large = nil
                }
                try await refreshGroup(command.groupType)
                return try await submitAdmitted(command, timeout: timeout, exclusive: holder)
            }
            let slot = try await waitForSlot(command, token: token, exclusive: holder, timeout: options.slotWaitTimeout)
            outcome = await withTaskCancellationHandler {
                await withUnsafeContinuation { continuation in
                    lock.withLock {
                        if let cancelled = cancelledBeforePlacingLocked(command) {
                            if slotTable.isCurrent(slot) { releaseSlotLocked(slot.index) }
                            continuation.resume(returning: .failure(cancelled))
                            return
                        }
                        onTheRing = submitLocked(slot: slot, command: command, token: token, timeout: timeout, waiter: .single(continuation), large: large)
                    }
                }
            } onCancel: {
                afterCancellation { [self] in cancel(token: token) }
            }
        }
        callerRuns()
        // Every resume of a placed command's waiter carries a result.
        return try outcome!.get()
    }

    /// Why a command is not placed: its task was cancelled before (lock held). A cancel
    /// that comes later finds the command on the ring (``cancel(token:)`` takes the lock).
    func cancelledBeforePlacingLocked(_ command: AdminCommand) -> AdminError? {
        guard Task.isCancelled else { return nil }
        counters.cancellations += 1
        return .cancelled(device: address, opcode: command.opcode, opcodeName: opcodeName(command.opcode))
    }

    /// A token for a command (unique for the driver's life; no lock needed).
    func newToken() -> UInt64 { lastToken.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Whether `command` is for a group whose LIST_QUERY/LIST_USE failed, so that the group
    /// is negotiated again before it is sent (lock held).
    func needsRenegotiationLocked(_ command: AdminCommand) -> Bool {
        guard case .running = state, command.opcode != .listQuery, command.opcode != .listUse else { return false }
        return groups.isUnavailable(command.groupType.rawValue)
    }

    /// A free slot for the command, none (wait for one), or why it cannot be sent (lock held).
    func admitLocked(_ command: AdminCommand, exclusive holder: Bool) -> Result<SlotGrant?, AdminError> {
        if let error = stateErrorLocked(for: command) { return .failure(error) }
        if exclusive && !holder { return .success(nil) }
        return .success(slotTable.take())
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
            if opcode == .listQuery || opcode == .listUse || command.unchecked || groups.admits(command.groupType.rawValue, opcode) { return nil }
            guard let group = groups[command.groupType.rawValue] else {
                return .groupUnavailable(device: address, group: command.groupType,
                                         reason: "the driver negotiated no command set for this group type (LIST_QUERY/LIST_USE)")
            }
            if let unavailable = group.unavailable { return unavailable }
            if !group.inUse.contains(opcode) {
                return .commandNotInUse(device: address, opcode: opcode, opcodeName: opcodeName(opcode),
                                        supported: group.supported.contains(opcode))
            }
            return nil
        }
    }

    /// Places a command on the ring, rings the doorbell (or leaves it to the poller), then
    /// reaps what the device already completed (lock held). A failure goes to `waiter`.
    /// Returns whether the command went on the ring (its slot then owns `large`).
    @discardableResult
    func submitLocked(slot grant: SlotGrant, command: AdminCommand, token: UInt64, timeout: Duration, waiter: SlotWaiter, large: DMARegion? = nil) -> Bool {
        let now = clock.nowNanoseconds
        guard placeLocked(slot: grant, command: command, token: token, timeout: timeout, waiter: waiter, now: now, large: large) else { return false }
        publishLocked()
        // A device that completes during the notify (or already had) is reaped right away.
        _ = pollLocked(now: now)
        startPollerLocked()
        return true
    }

    /// Writes a command into its slot and adds its chain to the ring, unpublished (lock
    /// held). Returns whether it is on the ring; if not, `waiter` got the error.
    /// - Parameter large: the command's own DMA memory when it does not fit a slot
    ///   (``allocateLarge(_:)``); on the ring, its slot owns it.
    func placeLocked(slot grant: SlotGrant, command: AdminCommand, token: UInt64, timeout: Duration, waiter: SlotWaiter, now: UInt64,
                     large: DMARegion? = nil) -> Bool {
        func fail(_ error: AdminError) {
            switch waiter {
            case .none: break
            case .single(let continuation): continuation.resume(returning: .failure(error))
            case .batch(let batch, let entry): batch.complete(entry, with: .failure(error))
            }
        }
        guard slotTable.isCurrent(grant) else {
            // Granted before a fail-all: the slot may belong to another command by now.
            fail(stateErrorLocked(for: command) ?? .notRunning(device: address))
            return false
        }
        let index = grant.index
        if let error = stateErrorLocked(for: command) {
            releaseSlotLocked(index)
            fail(error)
            return false
        }
        guard let queue, let slab else {
            fail(.notRunning(device: address))
            return false
        }
        let length = Self.readableLength(command)
        // The header (VirtioSpec's encoder) and the data go straight into the slot, or into
        // the command's own memory (request, then response at the next multiple of 8).
        let buffers = large ?? slab
        let requestOffset = large == nil ? index * options.slotBytes * 2 : 0
        let responseOffset = large == nil ? requestOffset + options.slotBytes : Self.largeResponseOffset(command)
        let request = buffers.cpuAddress.advanced(by: requestOffset)
        let requestBytes = UnsafeMutableRawBufferPointer(start: request, count: length)
        AdminCommandHeader(opcode: command.opcode, groupType: command.groupType, memberID: command.member).encode(into: requestBytes)
        if !command.data.isEmpty {
            command.data.withUnsafeBytes { request.advanced(by: AdminCommandLayout.headerSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        let unpadded = AdminCommandLayout.headerSize + command.data.count
        request.advanced(by: unpadded).initializeMemory(as: UInt8.self, repeating: 0, count: length - unpadded)
        // The status header is zeroed so a device that writes nothing cannot fake success.
        buffers.cpuAddress.advanced(by: responseOffset).initializeMemory(as: UInt8.self, repeating: 0, count: AdminCommandLayout.resultHeaderSize)
        let head: UInt16
        do {
            head = try queue.add(readable: DMABuffer(address: buffers.deviceAddress(at: requestOffset), length: UInt32(length)),
                                 writable: DMABuffer(address: buffers.deviceAddress(at: responseOffset), length: UInt32(Self.writableLength(command))))
        } catch {
            // Slots are sized to the ring, so a full ring here is a driver bug; fail the command cleanly.
            releaseSlotLocked(index)
            fail(.deviceMisbehaved(device: address, error))
            return false
        }
        slotTable.slots[index] = Slot(waiter: waiter, command: traceHandler == nil ? nil : command, opcode: command.opcode, member: command.member,
                                      started: now, deadline: now.addingSaturated(timeout.nanoseconds), timeout: timeout, token: token,
                                      resultLength: command.resultLength, large: large, largeResponseOffset: responseOffset, busy: true)
        slotTable.headToSlot[Int(head)] = Int32(index)
        counters.submitted += 1
        counters.peakInFlight = max(counters.peakInFlight, slotTable.busyCount)
        if let traceHandler {
            traceHandler(.sent(command, bytes: Array(UnsafeRawBufferPointer(start: request, count: length))))
        }
        return true
    }

    /// Publishes what was placed and rings the doorbell if the device wants it (lock held).
    /// While other commands are in flight and the poller is awake, the poller rings once
    /// for everything published until its next round.
    /// A batch (`deferring: false`) rings at once: its one doorbell covers everything published.
    func publishLocked(deferring: Bool = true) {
        guard let queue, let notifier, queue.publish() else { return }
        if deferring && pollerRunning && !pollerSleeping && slotTable.busyCount > 1 {
            kickPending = true
        } else {
            kickPending = false
            counters.notifies += 1
            notifier.notify()
        }
    }

    /// Runs what a cancellation handler does, which must not wait for the driver's lock. The
    /// handler runs holding its task's status lock, and the driver resumes that task's
    /// continuation while it holds its own lock (resuming needs the status lock): the two
    /// would wait for each other for good. A task of its own takes the lock instead
    /// (cancellations are rare; a command that completes meanwhile is simply not cancelled).
    func afterCancellation(_ work: @escaping @Sendable () -> Void) {
        Task.detached { work() }
    }

    func cancel(token: UInt64) {
        lock.withLock {
            guard let index = slotTable.slots.firstIndex(where: { $0.busy && $0.token == token }), slotTable.slots[index].waiter.isWaiting else { return }
            counters.cancellations += 1
            let opcode = slotTable.slots[index].opcode
            // The slot stays busy until the device gives it back.
            finishLocked(slot: index, with: .failure(.cancelled(device: address, opcode: opcode, opcodeName: opcodeName(opcode))))
        }
    }
}
