import VirtioSystem
import VirtioSpec

// The batch API: N commands placed on the ring, published with one avail-index store and
// one doorbell, their outcomes returned in one array, with one wait for the whole batch.
extension AdminQueueDriver {
    /// Sends `commands` as one batch and returns their outcomes in order.
    ///
    /// Every command that fits a free slot goes on the ring before the device is notified
    /// once; the device sees them together, in this order. A batch larger than the free
    /// slots goes in rounds, one doorbell per round. Each command has its own timeout,
    /// checks and padding as with ``submit(_:timeout:)``; a status other than OK is a
    /// success here (the device answered). LIST_USE, which must be alone on the queue, and a
    /// command larger than a command slot (``Options/largeCommandBytes``) are sent by
    /// themselves at their place in the order.
    public func submitBatch(_ commands: [AdminCommand], timeout: Duration? = nil) async -> [Result<AdminResponse, AdminError>] {
        await submitBatch(commands, timeouts: .same(timeout))
    }

    /// ``submitBatch(_:timeout:)`` with a timeout per command (`nil`: the default).
    func submitBatch(_ commands: [AdminCommand], timeouts: BatchTimeouts) async -> [Result<AdminResponse, AdminError>] {
        // Every entry is filled in below, each exactly once (the placeholder is never returned):
        // one array, no second one of optionals to unwrap.
        var results = [Result<AdminResponse, AdminError>](repeating: .failure(.notRunning(device: address)), count: commands.count)
        // Groups still to be negotiated (the SR-IOV group before VFs were enabled) are, first.
        // A batch's commands are nearly always of one group: a set only for any others.
        var firstGroup: UInt16?
        var otherGroups = Set<UInt16>()
        for command in commands where command.opcode != .listQuery && command.opcode != .listUse {
            let group = command.groupType.rawValue
            if firstGroup == nil { firstGroup = group } else if group == firstGroup || !otherGroups.insert(group).inserted { continue }
            if lock.withLock({ needsRenegotiationLocked(command) }) { try? await refreshGroup(command.groupType) }
        }
        var next = 0
        while next < commands.count {
            let command = commands[next]
            do throws(AdminError) { try checkSize(command) } catch {
                results[next] = .failure(error)
                next += 1
                continue
            }
            // LIST_USE, and a command larger than a slot (memory of its own), go by themselves.
            if command.opcode == .listUse || isLarge(command) {
                do throws(AdminError) { results[next] = .success(try await submit(command, timeout: timeouts[next])) } catch { results[next] = .failure(error) }
                next += 1
                continue
            }
            // The first command of a round may wait for a slot; the rest take the free ones.
            let token = newToken()
            // A batch whose task was cancelled sends nothing more (each entry fails as cancelled).
            let immediate = lock.withLock { () -> Result<SlotGrant?, AdminError> in
                cancelledBeforePlacingLocked(command).map { .failure($0) } ?? admitLocked(command, exclusive: false)
            }
            let first: SlotGrant
            do throws(AdminError) {
                if let ready = try immediate.get() { first = ready } else {
                    first = try await waitForSlot(command, token: token, exclusive: false, timeout: options.slotWaitTimeout)
                }
            } catch {
                results[next] = .failure(error)
                next += 1
                continue
            }
            next = await submitRound(commands, from: next, first: first, token: token, timeouts: timeouts, into: &results)
        }
        return results
    }

    /// Places `commands[start...]` — the first in slot `first`, the next in free slots, up
    /// to the first LIST_USE or oversized command — publishes them with one doorbell and
    /// waits until all completed. Returns the index after the last one placed.
    func submitRound(_ commands: [AdminCommand], from start: Int, first: SlotGrant, token: UInt64, timeouts: BatchTimeouts,
                     into results: inout [Result<AdminResponse, AdminError>]) async -> Int {
        let batch = BatchCompletion(count: 0)
        var end = start
        var polledToTheEnd = false
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                var done = lock.withLock { () -> Bool in
                    let now = clock.nowNanoseconds
                    var grant: SlotGrant? = first
                    batch.results.reserveCapacity(min(commands.count - start, slotTable.free.count + 1))
                    while let slot = grant {
                        batch.results.append(nil)
                        batch.remaining += 1
                        _ = placeLocked(slot: slot, command: commands[end], token: end == start ? token : newToken(), timeout: timeouts[end] ?? options.defaultTimeout,
                                        waiter: .batch(batch, index: end - start), now: now)
                        end += 1
                        grant = nil
                        if end < commands.count, !exclusive, isBatchable(commands[end]) { grant = slotTable.take() }
                    }
                    publishLocked(deferring: false)
                    _ = pollLocked(now: now)
                    if batch.remaining == 0 { return true }
                    spinners += 1
                    startPollerLocked()
                    return false
                }
                // A device that answers quickly is waited for here, polling the used ring,
                // rather than through the poller and a task switch.
                if !done {
                    let polled = spinWhileProgressing { batch.remaining }
                    lock.withLock {
                        spinners -= 1
                        // Set last, so that nothing resumes the batch while it is being placed.
                        if batch.remaining != 0 { batch.continuation = continuation; done = false } else { done = true }
                    }
                    // A thread running callers that poll batch after batch gives the executor
                    // away every 500 µs (or 64 such batches), not after every batch: a yield
                    // per batch cost a lone submitter a third of its throughput.
                    polledToTheEnd = polled && Sys.executorTurnDue(now: clock.nowNanoseconds, period: 500_000, turns: 64)
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            afterCancellation { [self] in cancel(batch: batch) }
        }
        // A batch finished while its caller polled never suspended the task: now and then
        // let the executor run others before going on (callers sending batch after batch
        // would keep every executor thread to themselves).
        if polledToTheEnd { await Task.yield() }
        for (offset, result) in batch.results.enumerated() {
            // Every entry was completed (a cancelled one as cancelled) before the batch resumed.
            guard let result else { preconditionFailure("batch entry \(start + offset) resumed without a result") }
            results[start + offset] = result
        }
        return end
    }

    /// Whether a command can join a round (LIST_USE goes alone; an oversized one fails alone).
    func isBatchable(_ command: AdminCommand) -> Bool {
        command.opcode != .listUse && !isLarge(command)
    }

    /// Fails the commands of a cancelled batch that are still in flight.
    func cancel(batch: BatchCompletion) {
        lock.withLock {
            for index in slotTable.slots.indices {
                guard case .batch(let owner, _) = slotTable.slots[index].waiter, owner === batch else { continue }
                counters.cancellations += 1
                let opcode = slotTable.slots[index].opcode
                finishLocked(slot: index, with: .failure(.cancelled(device: address, opcode: opcode, opcodeName: opcodeName(opcode))))
            }
        }
    }

    /// Places all `commands` on the ring before ringing the doorbell once, so that the
    /// device sees them as one batch (in this order), and returns their outcomes in order
    /// (``submitBatch(_:timeout:)``; `unchecked` skips the command-set check, as
    /// ``submitUnchecked(_:timeout:)`` does).
    package func submitTogether(_ commands: [AdminCommand], unchecked: Bool = false, timeout: Duration? = nil) async -> [Result<AdminResponse, AdminError>] {
        await submitBatch(commands.map { command in
            var command = command
            command.unchecked = command.unchecked || unchecked
            return command
        }, timeout: timeout)
    }
}

/// The timeouts of a batch's commands: one for all (no array), or one each.
enum BatchTimeouts {
    case same(Duration?)
    case each([Duration?])

    subscript(index: Int) -> Duration? {
        switch self {
        case .same(let timeout): timeout
        case .each(let timeouts): timeouts[index]
        }
    }
}
