import VirtioSpec
import Virtqueue
import VirtioSystem

extension SimulatedSRIOVDevice {
    // MARK: Completion (lock held)

    func schedule(_ function: FunctionModel, queue: QueueModel, completions: inout [Completion]) {
        switch timing.completionOrder {
        case .inOrder: break
        case .reversed: completions.reverse()
        case .shuffled(let seed):
            var generator = SplitMix64(seed: seed &+ UInt64(queue.usedIndex))
            completions.shuffle(using: &generator)
        }
        let latency = latencyNanoseconds
        if latency == 0 {
            complete(function, queue: queue, completions)
            return
        }
        let now = monotonicNanoseconds()
        var due: [CompletionScheduler.Item] = []
        due.reserveCapacity(completions.count)
        for completion in completions {
            // The worker that frees first takes the next command.
            var worker = 0
            for candidate in workerFreeAt.indices where workerFreeAt[candidate] < workerFreeAt[worker] { worker = candidate }
            let start = max(now, workerFreeAt[worker])
            var service = Double(latency)
            if timing.jitter > 0 { service *= 1 + timing.jitter * (Double(random.next() % 2001) / 1000 - 1) }
            let finish = start + UInt64(max(service, 0))
            workerFreeAt[worker] = finish
            due.append(.init(due: finish, function: function, queue: queue, head: completion.head, length: completion.length,
                             capacity: completion.capacity, epoch: function.epoch))
        }
        scheduler.add(due, nice: timing.schedulerNice)
    }

    /// Publishes completions on the used ring, applying completion faults, and decides
    /// whether an interrupt would be raised.
    func complete(_ function: FunctionModel, queue: QueueModel, _ items: [Completion]) {
        guard function !== pf || busMaster, queue.enabled, !function.status.contains(.deviceNeedsReset), let ring = ringView(queue) else { return }
        let old = queue.usedIndex
        let isAdmin = function.isAdminQueue(queue.index)
        for item in items {
            guard queue.inService.remove(item.head) != nil else { continue }
            var id = UInt32(item.head)
            var length = item.length
            if isAdmin && function.faults.contains(.outOfRangeID) { id = UInt32(queue.size) + 7 }
            if isAdmin && function.faults.contains(.usedLengthTooLarge) { length = UInt32(item.capacity) + 16 }
            ring.setUsedEntry(Int(queue.usedIndex) & (queue.size - 1), id: id, length: length)
            queue.usedIndex &+= 1
            if isAdmin && function.faults.contains(.duplicateID) {
                ring.setUsedEntry(Int(queue.usedIndex) & (queue.size - 1), id: id, length: length)
                queue.usedIndex &+= 1
            }
        }
        ring.storeUsedIndex(queue.usedIndex)
        let new = queue.usedIndex
        if old == new { return }
        let interrupt: Bool
        if function.negotiatedEventIndex {
            interrupt = ringNeedsEvent(eventIndex: ring.usedEvent, newIndex: new, oldIndex: old)
        } else {
            interrupt = ring.availFlags & RingFlags.availNoInterrupt == 0
        }
        if interrupt {
            function.counters.interrupts += 1
            function.isr |= ISRStatus.queueInterrupt
        }
    }

    /// Called by the scheduler's worker with completions that are due.
    /// `decided`: when the scheduler took them as due (before it waited for the lock).
    func deliver(_ items: [CompletionScheduler.Item], decided: UInt64) {
        lock.withLock {
            // Late by as much as the scheduler's thread waited to run and for this lock.
            let now = monotonicNanoseconds()
            var groups: [ObjectIdentifier: [CompletionScheduler.Item]] = [:]
            var order: [ObjectIdentifier] = []
            for item in items where item.epoch == item.function.epoch {
                item.function.counters.scheduledCompletions += 1
                item.function.counters.completionLatenessNanoseconds &+= now &- item.due
                item.function.counters.completionLockWaitNanoseconds &+= now &- decided
                let key = ObjectIdentifier(item.queue)
                if groups[key] == nil { order.append(key) }
                groups[key, default: []].append(item)
            }
            for key in order {
                let batch = groups[key]!
                complete(batch[0].function, queue: batch[0].queue, batch.map { Completion(head: $0.head, length: $0.length, capacity: $0.capacity) })
            }
        }
    }
}

extension FunctionModel {
    var negotiatedEventIndex: Bool { driverFeatures.contains(.eventIndex) && status.contains(.featuresOK) }
}
