import Synchronization
import VirtioSystem
import VirtioSpec
import VirtioTransport
import Virtqueue

// Completion: the used ring read in place, results handed to their waiters, timeouts, and
// the poller that runs while commands are in flight. Spec: §2.7.14 (receiving used
// buffers), §2.12.1 (a short result is truncated, not failed), digest §7.
extension AdminQueueDriver {
    /// Takes completions (lock held) and resumes their callers. Returns how many completed.
    func pollLocked(now: UInt64) -> Int {
        guard let queue, let slab else { return 0 }
        do {
            return try queue.takeCompletions { element in
                guard let index = slotTable.slot(forHead: element.head) else { return }
                counters.completed += 1
                if slotTable.slots[index].waiter.isWaiting {
                    let start = slotTable.slots[index].large.map { $0.cpuAddress + slotTable.slots[index].largeResponseOffset }
                        ?? slab.cpuAddress + index * options.slotBytes * 2 + options.slotBytes
                    let response = UnsafeRawBufferPointer(start: start, count: Int(element.length))
                    finishLocked(slot: index, with: decodeLocked(response, of: index, now: now))
                }
                releaseSlotLocked(index)
            }
        } catch {
            _ = quiesceLocked()
            failAllLocked(.deviceMisbehaved(device: address, error), newState: nil)
            return 1
        }
    }

    /// The device's answer in a slot's response buffer (lock held).
    func decodeLocked(_ response: UnsafeRawBufferPointer, of index: Int, now: UInt64) -> Result<AdminResponse, AdminError> {
        // Fields read one by one: a copy of the slot would retain its waiter and command.
        let opcode = slotTable.slots[index].opcode
        let started = slotTable.slots[index].started
        let resultLength = slotTable.slots[index].resultLength
        guard response.count >= AdminCommandLayout.resultHeaderSize else {
            return .failure(.resultTooShort(device: address, opcode: opcode, opcodeName: opcodeName(opcode),
                                            expected: AdminCommandLayout.resultHeaderSize, received: response.count))
        }
        let status = AdminStatus(rawValue: response.readLE(UInt16.self, at: AdminCommandLayout.status))
        let qualifier = AdminStatusQualifier(rawValue: response.readLE(UInt16.self, at: AdminCommandLayout.statusQualifier))
        counters.record(status: status)
        counters.record(latencyNanoseconds: now &- started)
        let written = response.count - AdminCommandLayout.resultHeaderSize
        // A short result is truncated by the device, not failed; the fields it did not
        // write read as zero [admin:548-553,632-636]. One array, sized once.
        // Capacity 0 would write the count of the stdlib's shared empty-array storage (a race
        // ThreadSanitizer sees between two drivers): an empty result is the literal.
        let capacity = max(written, resultLength)
        let result = capacity == 0 ? [] : [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            if written > 0 { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: response[AdminCommandLayout.resultHeaderSize...])) }
            if resultLength > written {
                UnsafeMutableRawBufferPointer(rebasing: raw[written...]).initializeMemory(as: UInt8.self, repeating: 0)
            }
            count = buffer.count
        }
        if let traceHandler, let command = slotTable.slots[index].command { traceHandler(.received(command, bytes: Array(response))) }
        return .success(AdminResponse(status: status, qualifier: qualifier, result: result, resultBytesWritten: written))
    }

    /// Whether a command waits past its deadline (lock held).
    func hasExpiredLocked(now: UInt64) -> Bool {
        slotTable.slots.contains { $0.busy && $0.waiter.isWaiting && now >= $0.deadline }
    }

    /// Fails expired commands (lock held). Their slots stay busy until the device completes them.
    func expireLocked(now: UInt64) {
        for index in slotTable.slots.indices where slotTable.slots[index].busy && slotTable.slots[index].waiter.isWaiting && now >= slotTable.slots[index].deadline {
            counters.timeouts += 1
            let slot = slotTable.slots[index]
            finishLocked(slot: index, with: .failure(.timeout(device: address, opcode: slot.opcode, opcodeName: opcodeName(slot.opcode),
                                                              member: slot.member, after: slot.timeout)))
        }
    }

    /// Polls the used ring from the caller's thread until `remaining()` (read with the lock
    /// held: the caller's own commands not yet completed) is zero, or until it has not gone
    /// down for ``Options/callerSpin``, or for at most 40 × that in all; each round gives the
    /// processor away once (the device may need it). Returns whether it reached zero. Used
    /// where one caller waits for many commands (a batch): a fast device is then answered
    /// without a task switch; a slow one is left to the poller.
    ///
    /// While it polls it also does the poller's clock work — rings a deferred doorbell,
    /// fails commands past their deadline — so that callers polling on every thread of the
    /// executor cannot keep the poller, and so everyone's timeouts, from running.
    func spinWhileProgressing(remaining: () -> Int) -> Bool {
        let budget = options.callerSpin.nanoseconds
        guard budget > 0 else { return false }
        let clock = self.clock
        let start = clock.nowNanoseconds
        let limit = budget.multipliedReportingOverflow(by: 40)
        let total = limit.overflow ? UInt64.max : limit.partialValue
        var lastProgress = start
        var last = Int.max
        var stillRounds = 0
        var lastNow = start
        while true {
            Sys.yieldThread()
            let now = clock.nowNanoseconds
            // Rounds on a clock that stands still (a test's) are counted apart: on a real
            // clock a quick `sched_yield` must not end the spin before `callerSpin` passed.
            stillRounds = now == lastNow ? stillRounds + 1 : 0
            lastNow = now
            let left = lock.withLock { () -> Int in
                ringDeferredDoorbellLocked()
                let reaped = pollLocked(now: now)
                if reaped > 0 {
                    counters.completedWhileWaiting += reaped
                    lastCallerReap = now
                }
                if now >= nextClockWork || now < lastProgress {
                    nextClockWork = now &+ 1_000_000
                    // As the poller does: the device's health first, so that a device that
                    // needs a reset fails its commands with that reason, not with timeouts.
                    if hasExpiredLocked(now: now) {
                        checkHealthLocked()
                        expireLocked(now: now)
                    }
                }
                return remaining()
            }
            if left == 0 { return true }
            if left < last {
                last = left
                lastProgress = now
                stillRounds = 0
            } else if now &- lastProgress >= budget || now < lastProgress || stillRounds >= 4096 {
                // A clock that stands still ends the spin by rounds.
                return false
            }
            if now &- start >= total { return false }
        }
    }

    /// Looks at the device (an MMIO read, off the fast path): one that needs a reset or is
    /// gone fails everything in flight with that reason (lock held).
    func checkHealthLocked() {
        do throws(TransportError) { try transport.checkHealth() } catch {
            let mapped: AdminError = error == .surpriseRemoval(device: address) ? .deviceRemoved(device: address) : .deviceNeedsReset(device: address)
            _ = quiesceLocked()
            failAllLocked(mapped, newState: nil)
        }
    }

    /// Rings the doorbell for chains published without one (lock held).
    func ringDeferredDoorbellLocked() {
        guard kickPending, let notifier else { return }
        kickPending = false
        counters.notifies += 1
        notifier.notify()
    }

    /// Starts the poller if commands are in flight and none runs (lock held).
    func startPollerLocked() {
        guard !pollerRunning, slotTable.busyCount > 0 else { return }
        pollerRunning = true
        poller = Task.detached { [self] in await pollLoop() }
    }

    /// Polls while commands are in flight: completions, timeouts, and device health. Time
    /// is the driver's clock: it spins (yielding) while completions come, and after 2 ms
    /// without one sleeps 200 µs between rounds so a slow device does not cost a core. A
    /// clock that stands still (a test's) puts it to sleep after 8 quiet rounds.
    func pollLoop() async {
        let clock = self.clock
        var lastProgress = clock.nowNanoseconds
        var stillRounds = 0
        var lastBusy = lastProgress
        var lastNow: UInt64 = 0
        var lastYield = lastProgress
        var progressed = false
        var callerResumed = false
        while true {
            let now = clock.nowNanoseconds
            let sleep = lock.withLock { () -> Bool? in
                pollerSleeping = false
                ringDeferredDoorbellLocked()
                // A caller polls the ring itself (a batch): it takes the completions, the
                // poller only watches the clock (two pollers would race for the lock) — but
                // reaps the ring before it times anything out (a caller that polls may be
                // off the processor: a command the device completed is not a timeout).
                let clockWork = now >= nextClockWork
                progressed = (spinners == 0 || clockWork) && pollLocked(now: now) > 0
                if progressed { lastProgress = now }
                // What polling callers reaped counts as progress: when they are gone, the
                // poller goes on polling rather than sleeping.
                if lastCallerReap > lastProgress && lastCallerReap <= now { lastProgress = lastCallerReap }
                stillRounds = !progressed && now == lastNow ? stillRounds + 1 : 0
                lastNow = now
                let expiring = clockWork && hasExpiredLocked(now: now)
                if clockWork { nextClockWork = now &+ 1_000_000 }
                // Before timing a command out, and when nothing moved for a while, look at the
                // device (an MMIO read, off the fast path): a device that needs a reset or is
                // gone fails everything with that reason rather than with timeouts.
                if expiring || (!progressed && now &- lastProgress > 2_000_000 && slotTable.busyCount > 0) {
                    lastProgress = now
                    checkHealthLocked()
                }
                if expiring { expireLocked(now: now) }
                if slotTable.busyCount > 0 || kickPending {
                    lastBusy = now
                } else if now &- lastBusy > 1_000_000 || stillRounds >= 8 {
                    // Nothing in flight for 1 ms: stop (the next command starts a poller).
                    // Until then the next command finds this one running (no task per command).
                    pollerRunning = false
                    poller = nil
                    return nil
                }
                if Task.isCancelled {
                    // Cancelled by a fail-all while new commands arrived: a fresh poller takes over.
                    pollerRunning = false
                    startPollerLocked()
                    return nil
                }
                // A caller polls the ring itself (a batch): the poller only watches the clock.
                let idle = now &- lastProgress > 2_000_000 || stillRounds >= 8 || spinners > 0
                // Asleep, the poller rings no doorbell: submitters ring their own.
                if idle { pollerSleeping = true }
                callerResumed = self.callerResumed.load(ordering: .relaxed)
                return idle
            }
            guard let sleep else { return }
            if sleep {
                await clock.sleep(untilNanoseconds: now &+ 200_000)
            } else {
                // After a round without news, give the processor to another thread (a
                // device's, on a small machine: what the poller waits for). Then the executor
                // to other tasks: at once when a waiter was resumed (it runs on this thread
                // next; a command's caller hands the poller back when it runs, with no
                // allocation), else every 50 µs — each `Task.yield()` is a heap-allocated job,
                // and a round without news has nobody new to run. (A `sched_yield` after a
                // round with completions only delayed the callers they resumed: 8 in flight
                // did some 20 % fewer commands a second with it, BENCHMARKS.md.)
                if !progressed { Sys.yieldThread() }
                if callerResumed {
                    lastYield = now
                    await handOffToResumedCaller()
                } else if progressed || now &- lastYield >= 50_000 || now < lastYield {
                    lastYield = now
                    if progressed { lock.withLock { counters.pollerYieldsAfterProgress += 1 } }
                    await Task.yield()
                }
            }
        }
    }
}

/// The poller's hand-off to the command callers it resumed (guarded by the driver's lock;
/// whether one was resumed is ``AdminQueueDriver/callerResumed``).
struct PollerHandOff {
    /// The poller, suspended until a resumed caller runs.
    var poller: UnsafeContinuation<Void, Never>?
}

extension AdminQueueDriver {
    /// Lets the command callers the poller resumed run before it polls again, as
    /// `Task.yield()` would (the resumed caller runs on this thread next), without its heap-
    /// allocated job: the poller suspends until the first of those callers runs
    /// (``callerRuns()``), which enqueues the poller's own task again. When that caller
    /// already ran (on another thread) the poller goes on at once. Every caller the flag
    /// stands for runs ``callerRuns()`` right after its wait, so the poller is never left
    /// suspended; meanwhile it counts as asleep, so submitters ring their own doorbells.
    func handOffToResumedCaller() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let goOn = lock.withLock { () -> Bool in
                counters.pollerHandOffs += 1
                guard callerResumed.load(ordering: .relaxed) else { return true }
                counters.pollerParks += 1
                handOff.poller = continuation
                pollerSleeping = true
                return false
            }
            if goOn { continuation.resume() }
        }
    }

    /// A command's caller runs again after its wait: the poller waiting for that goes on.
    /// Most callers find the flag clear (another caller of the same poll ran first) and take
    /// no lock. The flag is set before each resume, so the last caller resumed reads it after
    /// its last setting: it is never left set with nobody to clear it.
    func callerRuns() {
        guard callerResumed.load(ordering: .acquiring) else { return }
        let poller = lock.withLock { () -> UnsafeContinuation<Void, Never>? in
            guard callerResumed.load(ordering: .relaxed) else { return nil }
            callerResumed.store(false, ordering: .relaxed)
            guard let poller = handOff.poller else { return nil }
            handOff.poller = nil
            pollerSleeping = false
            return poller
        }
        poller?.resume()
    }
}
