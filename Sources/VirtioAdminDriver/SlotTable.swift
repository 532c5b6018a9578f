import Synchronization
import VirtioSpec
import VirtioTransport

/// Who waits for a command on the ring.
enum SlotWaiter {
    /// Nobody any more (the command timed out or was cancelled; the device still owns its buffers).
    case none
    /// One caller of ``AdminQueueDriver/submit(_:timeout:)`` (always resumed with a result;
    /// `nil` is for the caller's own detours before its command is placed).
    case single(UnsafeContinuation<Result<AdminResponse, AdminError>?, Never>)
    /// Entry `index` of a batch (``AdminQueueDriver/submitBatch(_:timeout:)``).
    case batch(BatchCompletion, index: Int)

    var isWaiting: Bool {
        if case .none = self { return false }
        return true
    }
}

/// The outcome of a batch, filled in as its commands complete (guarded by the driver's lock).
final class BatchCompletion: @unchecked Sendable {
    var results: [Result<AdminResponse, AdminError>?]
    /// Entries not yet filled in.
    var remaining: Int
    var continuation: UnsafeContinuation<Void, Never>?

    init(count: Int) {
        results = Array(repeating: nil, count: count)
        remaining = count
    }

    /// Fills in entry `index`; resumes the waiting batch when it was the last (lock held).
    func complete(_ index: Int, with result: Result<AdminResponse, AdminError>) {
        guard results[index] == nil else { return }
        results[index] = result
        remaining -= 1
        if remaining == 0, let continuation {
            self.continuation = nil
            continuation.resume()
        }
    }
}

/// One command slot: its request and response buffers in the DMA slab, and while the
/// command is on the ring, what it is and who waits for it.
struct Slot {
    var waiter = SlotWaiter.none
    var command: AdminCommand?
    var opcode = AdminOpcode(0)
    var member = GroupMemberID.none
    var started: UInt64 = 0
    var deadline: UInt64 = 0
    var timeout: Duration = .zero
    var token: UInt64 = 0
    /// Result bytes the caller asked for (a shorter result is zero-filled to this).
    var resultLength = 0
    /// A command larger than a slot: the DMA memory of its request and response (the
    /// response at ``largeResponseOffset``), released when the slot is.
    var large: DMARegion?
    var largeResponseOffset = 0
    /// On the ring (the device owns its buffers).
    var busy = false
}

/// A slot handed to a command, stamped with the epoch it was granted in: a grant from
/// before a fail-all (and reinitialisation) is stale and never used.
struct SlotGrant {
    var index: Int
    var epoch: UInt64
}

/// A task waiting for a free slot.
struct Waiter {
    var token: UInt64
    var continuation: CheckedContinuation<SlotGrant?, Never>
    var exclusive: Bool
}

/// The command slots of the admin queue (guarded by the driver's lock): which are free,
/// which ring head belongs to which slot, and the epoch that makes old grants stale.
/// Each command takes two descriptors, so there are queue size / 2 slots.
struct SlotTable {
    var slots: [Slot] = []
    /// Free slot indices (taken from the end).
    var free: [Int] = []
    /// Ring head → slot index, -1 for none.
    var headToSlot: [Int32] = []
    /// Bumped by every fail-all: slot grants of an older epoch are stale.
    var epoch: UInt64 = 0

    /// Slots on the ring, or granted and about to be.
    var busyCount: Int { slots.count - free.count }

    /// Sizes the table for a new ring (every slot free; the epoch is kept).
    mutating func resize(slots count: Int, queueSize: Int) {
        slots = Array(repeating: Slot(), count: count)
        free = Array((0..<count).reversed())
        headToSlot = Array(repeating: -1, count: queueSize)
    }

    /// A free slot, if there is one.
    mutating func take() -> SlotGrant? { free.popLast().map { SlotGrant(index: $0, epoch: epoch) } }

    /// Whether `grant` was made in the current epoch.
    func isCurrent(_ grant: SlotGrant) -> Bool { grant.epoch == epoch }

    /// The slot whose chain has head `head`, forgetting the link (`nil`: none).
    mutating func slot(forHead head: UInt16) -> Int? {
        let index = Int(headToSlot[Int(head)])
        headToSlot[Int(head)] = -1
        return index >= 0 ? index : nil
    }

    /// Every slot free and every old grant stale (after the device was quiesced).
    mutating func resetAll() {
        epoch &+= 1
        for index in slots.indices { slots[index] = Slot() }
        free = Array(slots.indices.reversed())
        for head in headToSlot.indices { headToSlot[head] = -1 }
    }
}

extension AdminQueueDriver {
    /// Hands a slot's outcome to whoever waits for it (lock held); the slot stays busy.
    func finishLocked(slot index: Int, with result: Result<AdminResponse, AdminError>) {
        let waiter = slotTable.slots[index].waiter
        slotTable.slots[index].waiter = .none
        switch waiter {
        case .none: break
        case .single(let continuation):
            // Set before the resume: the caller reads it after its wait, without the lock.
            callerResumed.store(true, ordering: .releasing)
            continuation.resume(returning: result)
        case .batch(let batch, let entry): batch.complete(entry, with: result)
        }
    }

    /// Gives a slot to the first waiter or back to the free list (lock held). The device
    /// no longer owns its buffers (it completed the command, or never saw it).
    func releaseSlotLocked(_ index: Int) {
        if let large = slotTable.slots[index].large { allocator.release(large) }
        slotTable.slots[index] = Slot()
        if !waiters.isEmpty, let next = waiters.firstIndex(where: { !exclusive || $0.exclusive }) {
            waiters.remove(at: next).continuation.resume(returning: SlotGrant(index: index, epoch: slotTable.epoch))
        } else {
            slotTable.free.append(index)
        }
    }

    /// Waits for a command slot to be handed over (or fails when the driver stops). While a
    /// LIST_USE holds the queue, only its holder gets a slot. The wait is bounded by
    /// ``Options/slotWaitTimeout`` on the driver's clock (slots of commands the device never
    /// completes stay taken).
    func waitForSlot(_ command: AdminCommand, token: UInt64, exclusive holder: Bool, timeout: Duration) async throws(AdminError) -> SlotGrant {
        let clock = self.clock
        let deadline = clock.deadline(after: timeout, from: clock.nowNanoseconds)
        let expiry = Task.detached { [self] in
            await clock.sleep(untilNanoseconds: deadline)
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
                    // Cancelled before it waits: the cancellation handler found no waiter.
                    if stateErrorLocked(for: command) != nil || Task.isCancelled {
                        continuation.resume(returning: nil)
                    } else if !exclusive || holder, let slot = slotTable.take() {
                        continuation.resume(returning: slot)
                    } else {
                        waiters.append(Waiter(token: token, continuation: continuation, exclusive: holder))
                    }
                }
            }
        } onCancel: {
            afterCancellation { [self] in
                lock.withLock {
                    if let index = waiters.firstIndex(where: { $0.token == token }) {
                        waiters.remove(at: index).continuation.resume(returning: nil)
                    }
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

    // MARK: LIST_USE holds the queue alone

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
            while !waiters.isEmpty, let grant = slotTable.take() {
                waiters.removeFirst().continuation.resume(returning: grant)
            }
        }
    }

    /// Waits until no command is outstanding (the device owns no command buffer), at most
    /// `timeout` on the driver's clock.
    func drain(opcode: AdminOpcode, timeout: Duration) async throws(AdminError) {
        let deadline = clock.deadline(after: timeout, from: clock.nowNanoseconds)
        var rounds = 0
        while true {
            let (busy, error) = lock.withLock { (slotTable.busyCount, stateErrorLocked(for: AdminCommand(opcode: opcode))) }
            if let error { throw error }
            if busy == 0 { return }
            let now = clock.nowNanoseconds
            if now >= deadline {
                throw .timeout(device: address, opcode: opcode, opcodeName: name(of: opcode), member: .none, after: timeout)
            }
            // Commands usually complete within a few rounds; then the wait sleeps.
            rounds += 1
            if rounds < 64 { await Task.yield() } else { await clock.sleep(untilNanoseconds: min(deadline, now + 50_000)) }
        }
    }
}
