import VirtioTransport
import VirtioSystem
import Virtqueue

// Failure and close: quiesce the device before any DMA memory is released or reused, then
// fail every command in flight. Spec: §4.1.4.3.2 (reset: wait for device_status to read 0).
extension AdminQueueDriver {
    /// Resets the device (so it lets go of the rings), then fails every command in flight.
    ///
    /// DMA memory is released or reused only once the device is known to be quiet: its
    /// reset confirmed (device_status reads 0); otherwise Bus Master Enable cleared through
    /// ``Options/disableBusMaster``; otherwise the rings and command slots are quarantined
    /// (kept for the life of the process) and the returned error says so.
    ///
    /// Closing a closed driver does nothing (its device was quiesced by the first close), unless
    /// a bring-up runs: then the device is reset again, and the bring-up stops.
    /// - Returns: `nil`, or ``AdminError/memoryQuarantined(device:bytes:reason:)``.
    @discardableResult
    package func close() -> AdminError? {
        lock.withLock {
            closes &+= 1
            if case .closed = state, bringUps == 0 { return nil }
            return quiesceAndCloseLocked()
        }
    }

    /// Quiesces the device, fails everything in flight and leaves the driver closed (lock
    /// held). Returns the quarantine error, if it came to that.
    @discardableResult
    func quiesceAndCloseLocked() -> AdminError? {
        let quarantine = quiesceLocked()
        failAllLocked(.notRunning(device: address), newState: .closed)
        return quarantine
    }

    /// Quiesces the device after a failed bring-up (no command can be in flight).
    func quiesceAfterFailure() {
        lock.withLock { _ = quiesceAndCloseLocked() }
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
        if let disableBusMaster = options.disableBusMaster, disableBusMaster() {
            busMasterCleared = true
            return nil
        }
        // Buffers of commands larger than a slot go with the rings.
        var large: [DMARegion] = []
        for index in slotTable.slots.indices {
            if let region = slotTable.slots[index].large {
                large.append(region)
                slotTable.slots[index].large = nil
            }
        }
        guard queue != nil || slab != nil || !large.isEmpty else { return nil }
        var bytes = large.reduce(0) { $0 + $1.length }
        if let queue { bytes += queue.memory.length }
        if let slab { bytes += slab.length }
        DMAQuarantine.keep(queue: queue, slab: slab)
        for region in large { DMAQuarantine.keep(queue: nil, slab: region) }
        queue = nil
        slab = nil
        notifier = nil
        quarantinedBytes += bytes
        return .memoryQuarantined(device: address, bytes: bytes, reason: resetError.description)
    }

    /// Fails every command in flight and every waiter (lock held). Call it only after
    /// ``quiesceLocked()``: the rings are reset for reuse (a quarantined queue is gone).
    func failAllLocked(_ error: AdminError, newState: State?) {
        for index in slotTable.slots.indices where slotTable.slots[index].waiter.isWaiting {
            counters.failedInFlight += 1
            finishLocked(slot: index, with: .failure(error))
        }
        // The device is quiet (or what it may still write was quarantined): the buffers of
        // commands larger than a slot go back.
        for index in slotTable.slots.indices {
            if let large = slotTable.slots[index].large { allocator.release(large) }
        }
        slotTable.resetAll()
        for waiter in waiters { waiter.continuation.resume(returning: nil) }
        waiters.removeAll()
        // A poller asleep on the clock wakes up, finds nothing busy and ends.
        poller?.cancel()
        poller = nil
        state = newState ?? .failed(error)
        _ = queue?.abandonAll()
    }
}

/// The drivers alive in this process (weakly held), for ``AdminQueueDriver/closeAllOpen()``.
let openDrivers = WeakRegistry<AdminQueueDriver>()

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
