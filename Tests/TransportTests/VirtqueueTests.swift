import Testing
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import Virtqueue

struct VirtqueueTests {
    /// Sends `payload` through the loopback VF and returns the completion.
    func roundTrip(_ setup: LoopbackQueue, payloads: [[UInt8]]) throws -> [UInt16: [UInt8]] {
        var heads: [UInt16: Int] = [:]
        for (index, payload) in payloads.enumerated() {
            let input = index * 512
            let output = input + 256
            setup.buffers.bytes.baseAddress!.advanced(by: input).copyMemory(from: payload, byteCount: payload.count)
            let head = try setup.queue.add(readable: [DMABuffer(address: setup.buffers.deviceAddress(at: input), length: UInt32(payload.count))],
                                           writable: [DMABuffer(address: setup.buffers.deviceAddress(at: output), length: 256)])
            heads[head] = index
        }
        if setup.queue.publish() { setup.notifier.notify() }
        var results: [UInt16: [UInt8]] = [:]
        try setup.queue.takeCompletions { element in
            let index = heads[element.head]!
            let output = setup.buffers.bytes.baseAddress!.advanced(by: index * 512 + 256)
            results[element.head] = Array(UnsafeRawBufferPointer(start: output, count: Int(element.length)))
        }
        #expect(results.count == payloads.count)
        return results.isEmpty ? [:] : Dictionary(uniqueKeysWithValues: results.map { (head, bytes) in (UInt16(heads[head]!), bytes) })
    }

    @Test func wrapAroundTensOfThousandsThroughSixteenEntries() throws {
        let setup = try LoopbackQueue(size: 16)
        var sent = 0
        // Each request is a two-descriptor chain, so 8 fit the 16 descriptors at once.
        for round in 0..<5_200 {
            let batch = (0..<8).map { index -> [UInt8] in
                let value = UInt32(truncatingIfNeeded: round * 8 + index)
                return [UInt8(value & 0xff), UInt8((value >> 8) & 0xff), UInt8((value >> 16) & 0xff), UInt8(index)]
            }
            let results = try roundTrip(setup, payloads: batch)
            for (index, payload) in batch.enumerated() { #expect(results[UInt16(index)] == payload) }
            sent += batch.count
        }
        #expect(sent == 41_600)
        #expect(setup.queue.freeCount == 16 && setup.queue.inFlightCount == 0)
        #expect(setup.device.vfCounters(0).queueRequests == 41_600)
    }

    @Test(arguments: [CompletionOrder.reversed, .shuffled(seed: 7), .shuffled(seed: 99)])
    func outOfOrderCompletions(order: CompletionOrder) throws {
        let device = SimulatedSRIOVDevice()
        device.setTiming(DeviceTiming(completionOrder: order))
        let setup = try LoopbackQueue(device: device, size: 16)
        var seenOrder: [UInt16] = []
        var heads: [UInt16: UInt8] = [:]
        for index in 0..<8 {
            setup.buffers.bytes[index * 512] = UInt8(index + 1)
            let head = try setup.queue.add(readable: [DMABuffer(address: setup.buffers.deviceAddress(at: index * 512), length: 1)],
                                           writable: [DMABuffer(address: setup.buffers.deviceAddress(at: index * 512 + 256), length: 16)])
            heads[head] = UInt8(index + 1)
        }
        #expect(setup.queue.publish())
        setup.notifier.notify()
        try setup.queue.takeCompletions { element in
            seenOrder.append(element.head)
            let slot = Int(heads[element.head]! - 1)
            #expect(element.length == 1)
            #expect(setup.buffers.bytes[slot * 512 + 256] == heads[element.head]!, "completion \(element.head) carries its own data")
        }
        #expect(seenOrder.count == 8)
        #expect(seenOrder != heads.keys.sorted { heads[$0]! < heads[$1]! }, "completions came back out of submission order")
        #expect(Set(seenOrder).count == 8)
    }

    @Test func mixedChains() throws {
        let setup = try LoopbackQueue(size: 16)
        let base = setup.buffers
        for index in 0..<30 { base.bytes[index] = UInt8(index + 1) }
        // Three readable pieces (10 + 7 + 13 bytes), two writable (8 + 32).
        let head = try setup.queue.add(
            readable: [DMABuffer(address: base.deviceAddress(at: 0), length: 10), DMABuffer(address: base.deviceAddress(at: 10), length: 7),
                       DMABuffer(address: base.deviceAddress(at: 17), length: 13)],
            writable: [DMABuffer(address: base.deviceAddress(at: 1000), length: 8), DMABuffer(address: base.deviceAddress(at: 2000), length: 32)])
        #expect(setup.queue.freeCount == 11)
        #expect(setup.queue.publish())
        setup.notifier.notify()
        var lengths: [UInt32] = []
        try setup.queue.takeCompletions { element in
            #expect(element.head == head)
            lengths.append(element.length)
        }
        #expect(lengths == [30])
        #expect(Array(base.bytes[1000..<1008]) == Array(1...8))
        #expect(Array(base.bytes[2000..<2022]) == Array(9...30))
        #expect(setup.queue.freeCount == 16)
        // A chain longer than the queue, and one that does not fit the free descriptors.
        #expect(throws: VirtqueueError.invalidChain(buffers: 17, queueSize: 16)) {
            try setup.queue.add(readable: Array(repeating: DMABuffer(address: base.deviceAddress, length: 1), count: 17), writable: [])
        }
        for _ in 0..<5 { try setup.queue.add(readable: Array(repeating: DMABuffer(address: base.deviceAddress, length: 1), count: 3), writable: []) }
        #expect(throws: VirtqueueError.full(needed: 2, free: 1)) {
            try setup.queue.add(readable: [DMABuffer(address: base.deviceAddress, length: 1)], writable: [DMABuffer(address: base.deviceAddress, length: 1)])
        }
    }

    @Test func batchSubmittedWithOneNotify() throws {
        let setup = try LoopbackQueue(size: 16)
        for index in 0..<8 {
            try setup.queue.add(readable: [DMABuffer(address: setup.buffers.deviceAddress(at: index), length: 1)],
                                writable: [DMABuffer(address: setup.buffers.deviceAddress(at: 4096 + index * 8), length: 8)])
        }
        let before = setup.device.vfCounters(0).notifies
        #expect(setup.queue.publish())
        setup.notifier.notify()
        #expect(setup.queue.publish() == false, "nothing new to publish")
        #expect(setup.device.vfCounters(0).notifies == before + 1)
        #expect(try setup.queue.takeCompletions { _ in } == 8)
        #expect(setup.device.vfCounters(0).interrupts == 0, "polling: interrupts are suppressed with VIRTQ_AVAIL_F_NO_INTERRUPT")
    }

    @Test func eventIndexSuppressesNotifiesAndInterrupts() throws {
        let setup = try LoopbackQueue(size: 16, eventIndex: true)
        #expect(setup.queue.eventIndex)
        let buffer = DMABuffer(address: setup.buffers.deviceAddress, length: 1)
        let output = DMABuffer(address: setup.buffers.deviceAddress(at: 4096), length: 8)
        // First batch: avail_event starts at 0, so the device wants to hear about index 0 → notify.
        try setup.queue.add(readable: [buffer], writable: [output])
        #expect(setup.queue.publish())
        setup.notifier.notify()
        // The device consumed up to 1 and set avail_event = 1: the next batch (1 → 3) crosses it.
        try setup.queue.add(readable: [buffer], writable: [output])
        try setup.queue.add(readable: [buffer], writable: [output])
        #expect(setup.queue.publish())
        // Without a notify the device has not looked; avail_event stays 1, so a third batch
        // (3 → 4) does not cross it: no notify is needed (the device will see it anyway).
        try setup.queue.add(readable: [buffer], writable: [output])
        #expect(setup.queue.publish() == false)
        setup.notifier.notify()
        #expect(try setup.queue.takeCompletions { _ in } == 4)
        // used_event is kept far ahead while polling: the device raised no interrupt.
        #expect(setup.device.vfCounters(0).interrupts == 0)
        setup.queue.setInterrupts(enabled: true)
        try setup.queue.add(readable: [buffer], writable: [output])
        #expect(setup.queue.publish())
        setup.notifier.notify()
        #expect(setup.device.vfCounters(0).interrupts == 1)
    }
}

/// The engine's validation of used elements, driven by writing the used ring by hand (the
/// test plays a hostile device).
struct UsedRingValidationTests {
    func queueWithTwoInFlight() throws -> (SplitVirtqueue, [UInt16], SimulatedMemory) {
        let memory = SimulatedMemory()
        let queue = try SplitVirtqueue(size: 8, allocator: memory, eventIndex: false)
        let buffer = try memory.allocate(length: 4096, alignment: 64)
        var heads: [UInt16] = []
        for index in 0..<2 {
            heads.append(try queue.add(readable: [DMABuffer(address: buffer.deviceAddress(at: index * 64), length: 16)],
                                       writable: [DMABuffer(address: buffer.deviceAddress(at: 1024 + index * 64), length: 24),
                                                  DMABuffer(address: buffer.deviceAddress(at: 2048 + index * 64), length: 8)]))
        }
        _ = queue.publish()
        return (queue, heads, memory)
    }

    func deviceCompletes(_ queue: SplitVirtqueue, _ elements: [(UInt32, UInt32)], index: UInt16? = nil) {
        for (slot, element) in elements.enumerated() { queue.ring.setUsedEntry(slot, id: element.0, length: element.1) }
        queue.ring.storeUsedIndex(index ?? UInt16(elements.count))
    }

    @Test func validCompletionsAreDelivered() throws {
        let (queue, heads, _) = try queueWithTwoInFlight()
        deviceCompletes(queue, [(UInt32(heads[1]), 32), (UInt32(heads[0]), 0)])
        var taken: [UsedElement] = []
        try queue.takeCompletions { taken.append($0) }
        #expect(taken == [UsedElement(head: heads[1], length: 32), UsedElement(head: heads[0], length: 0)])
        #expect(queue.freeCount == 8)
    }

    @Test func idOutOfRange() throws {
        let (queue, _, _) = try queueWithTwoInFlight()
        deviceCompletes(queue, [(8, 0)])
        #expect(throws: VirtqueueError.usedIDOutOfRange(id: 8, queueSize: 8)) { try queue.takeCompletions { _ in } }
        deviceCompletes(queue, [(0xffff_ffff, 0)])
        #expect(throws: VirtqueueError.usedIDOutOfRange(id: 0xffff_ffff, queueSize: 8)) { try queue.takeCompletions { _ in } }
    }

    @Test func idNotAHeadInFlight() throws {
        let (queue, heads, _) = try queueWithTwoInFlight()
        // A descriptor in the middle of a chain is not a head.
        let notHead = (0..<8).map(UInt16.init).first { !heads.contains($0) && $0 < 6 }!
        deviceCompletes(queue, [(UInt32(notHead), 0)])
        #expect(throws: VirtqueueError.usedIDNotInFlight(id: UInt32(notHead))) { try queue.takeCompletions { _ in } }
    }

    @Test func duplicateCompletion() throws {
        let (queue, heads, _) = try queueWithTwoInFlight()
        deviceCompletes(queue, [(UInt32(heads[0]), 4), (UInt32(heads[0]), 4)])
        var delivered = 0
        #expect(throws: VirtqueueError.usedIDNotInFlight(id: UInt32(heads[0]))) { try queue.takeCompletions { _ in delivered += 1 } }
        #expect(delivered == 1, "the first, valid completion was delivered exactly once")
    }

    @Test func lengthBeyondWritableCapacity() throws {
        let (queue, heads, _) = try queueWithTwoInFlight()
        deviceCompletes(queue, [(UInt32(heads[0]), 33)])
        #expect(throws: VirtqueueError.usedLengthTooLarge(id: UInt32(heads[0]), length: 33, capacity: 32)) { try queue.takeCompletions { _ in } }
    }

    @Test func usedIndexJump() throws {
        let (queue, heads, _) = try queueWithTwoInFlight()
        deviceCompletes(queue, [(UInt32(heads[0]), 0)], index: 5)
        #expect(throws: VirtqueueError.usedIndexJump(from: 0, to: 5, inFlight: 2)) { try queue.takeCompletions { _ in } }
    }

    @Test func abandonFreesEverything() throws {
        let (queue, heads, memory) = try queueWithTwoInFlight()
        #expect(Set(queue.abandonAll()) == Set(heads))
        #expect(queue.freeCount == 8 && queue.inFlightCount == 0)
        #expect(memory.liveAllocations == 2)
    }
}
