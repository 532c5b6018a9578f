import CVolatile
import VirtioSpec
import VirtioTransport

/// One buffer of a descriptor chain: a device address and a length.
package struct DMABuffer: Sendable, Hashable {
    package var address: UInt64
    package var length: UInt32
    package init(address: UInt64, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A completion taken from the used ring: the chain's head and the bytes the device wrote.
package struct UsedElement: Sendable, Hashable {
    package var head: UInt16
    package var length: UInt32
    package init(head: UInt16, length: UInt32) {
        self.head = head
        self.length = length
    }
}

/// Errors of the split-virtqueue engine. Device-side violations are typed errors; the
/// engine never follows a device-supplied index into memory without checking it.
public enum VirtqueueError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Not enough free descriptors for the chain.
    case full(needed: Int, free: Int)
    /// A chain needs at least one buffer, and at most the queue size.
    case invalidChain(buffers: Int, queueSize: Int)
    /// The device returned an id beyond the queue.
    case usedIDOutOfRange(id: UInt32, queueSize: Int)
    /// The device returned an id that is not the head of a chain in flight (a duplicate
    /// completion, or a made-up id).
    case usedIDNotInFlight(id: UInt32)
    /// The device claims to have written more bytes than the chain's writable buffers hold.
    case usedLengthTooLarge(id: UInt32, length: UInt32, capacity: UInt32)
    /// used->idx moved by more than the number of chains in flight.
    case usedIndexJump(from: UInt16, to: UInt16, inFlight: Int)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case let .full(needed, free): "the virtqueue is full: \(needed) descriptors needed, \(free) free."
        case let .invalidChain(buffers, queueSize): "a chain of \(buffers) buffers does not fit a queue of \(queueSize)."
        case let .usedIDOutOfRange(id, queueSize): "the device completed id \(id), outside the queue of \(queueSize) entries."
        case let .usedIDNotInFlight(id): "the device completed id \(id), which is not in flight (duplicate or invented completion)."
        case let .usedLengthTooLarge(id, length, capacity): "the device reports \(length) bytes written for id \(id), but its writable buffers hold \(capacity)."
        case let .usedIndexJump(from, to, inFlight): "used index jumped from \(from) to \(to) with only \(inFlight) chains in flight."
        }
    }

    /// Whether the error is the device's fault (as opposed to the caller's).
    public var isDeviceError: Bool {
        switch self {
        case .full, .invalidChain: false
        default: true
        }
    }
}

/// The driver side of a split virtqueue. Spec: §2.7.
///
/// Descriptor bookkeeping (free list, chain links, writable capacity, in-flight marks) is
/// kept in driver-private arrays, never read back from the shared table, so a device that
/// scribbles on shared memory cannot steer the driver. Not thread-safe: one owner calls it.
package final class SplitVirtqueue: @unchecked Sendable {
    package let size: Int
    package let layout: SplitRingLayout
    package let memory: DMARegion
    package let ring: SplitRingView
    package let eventIndex: Bool
    /// VIRTIO_F_ORDER_PLATFORM: barriers that order against DMA, not only other CPUs.
    package let platformOrdering: Bool
    let allocator: any DMAAllocator

    // Driver-private bookkeeping, allocated once (no copy-on-write or exclusivity checks on
    // the per-command path); one owner calls the queue, so plain memory is enough.
    /// Free descriptor ids; the top is `freeStack[freeTop - 1]`.
    private let freeStack: UnsafeMutableBufferPointer<UInt16>
    @exclusivity(unchecked) private var freeTop: Int
    private let chainNext: UnsafeMutableBufferPointer<UInt16>
    private let chainCount: UnsafeMutableBufferPointer<UInt16>
    private let writableCapacity: UnsafeMutableBufferPointer<UInt32>
    private let inFlight: UnsafeMutableBufferPointer<Bool>
    @exclusivity(unchecked) private var availIndex: UInt16 = 0
    @exclusivity(unchecked) private var publishedIndex: UInt16 = 0
    @exclusivity(unchecked) private var lastUsedIndex: UInt16 = 0
    @exclusivity(unchecked) package private(set) var inFlightCount = 0

    /// Descriptor area (table) device address.
    package var descriptorArea: UInt64 { memory.deviceAddress(at: layout.descriptorOffset) }
    /// Driver area (avail ring) device address.
    package var driverArea: UInt64 { memory.deviceAddress(at: layout.availOffset) }
    /// Device area (used ring) device address.
    package var deviceArea: UInt64 { memory.deviceAddress(at: layout.usedOffset) }
    package var freeCount: Int { freeTop }

    /// Allocates the rings for a queue of `size` entries (a power of two ≤ 32768).
    package init(size: Int, allocator: any DMAAllocator, eventIndex: Bool, platformOrdering: Bool = false) throws(DMAError) {
        precondition(size > 0 && size <= SplitQueueLayout.maximumSize && size & (size - 1) == 0, "queue size must be a power of two ≤ 32768")
        self.size = size
        self.allocator = allocator
        self.eventIndex = eventIndex
        self.platformOrdering = platformOrdering
        layout = SplitRingLayout(size: size)
        memory = try allocator.allocate(length: layout.totalLength, alignment: 4096)
        ring = SplitRingView(size: size, descriptors: memory.cpuAddress + layout.descriptorOffset,
                             avail: memory.cpuAddress + layout.availOffset, used: memory.cpuAddress + layout.usedOffset)
        freeStack = .allocate(capacity: size)
        for position in 0..<size { freeStack[position] = UInt16(size - 1 - position) }
        freeTop = size
        chainNext = .allocate(capacity: size)
        chainNext.initialize(repeating: 0)
        chainCount = .allocate(capacity: size)
        chainCount.initialize(repeating: 0)
        writableCapacity = .allocate(capacity: size)
        writableCapacity.initialize(repeating: 0)
        inFlight = .allocate(capacity: size)
        inFlight.initialize(repeating: false)
        // Polling: ask the device not to interrupt.
        setInterrupts(enabled: false)
    }

    deinit {
        allocator.release(memory)
        freeStack.deallocate()
        chainNext.deallocate()
        chainCount.deallocate()
        writableCapacity.deallocate()
        inFlight.deallocate()
    }

    @inline(__always) func writeBarrier() { if platformOrdering { cv_dma_write_barrier() } else { cv_write_barrier() } }
    @inline(__always) func readBarrier() { if platformOrdering { cv_dma_read_barrier() } else { cv_read_barrier() } }
    @inline(__always) func fullBarrier() { if platformOrdering { cv_dma_full_barrier() } else { cv_full_barrier() } }

    /// Adds a chain: device-readable buffers first, then device-writable ones. The chain is
    /// visible to the device only after ``publish()``.
    /// - Returns: the head descriptor id, which the completion will carry.
    @discardableResult
    package func add(readable: some Collection<DMABuffer>, writable: some Collection<DMABuffer>) throws(VirtqueueError) -> UInt16 {
        let total = readable.count + writable.count
        guard total > 0, total <= size else { throw .invalidChain(buffers: total, queueSize: size) }
        guard total <= freeTop else { throw .full(needed: total, free: freeTop) }
        // Take `total` descriptors from the top of the free stack (no allocation) and link them in order.
        let base = freeTop - total
        func descriptorID(_ position: Int) -> UInt16 { freeStack[base + total - 1 - position] }
        let head = descriptorID(0)
        var capacity: UInt32 = 0
        var position = 0
        func place(_ buffer: DMABuffer, write: Bool) {
            let id = descriptorID(position)
            let last = position == total - 1
            let next = last ? 0 : descriptorID(position + 1)
            var flags: DescriptorFlags = write ? .write : []
            if !last { flags.insert(.next) }
            ring.writeDescriptor(Int(id), address: buffer.address, length: buffer.length, flags: flags, next: next)
            chainNext[Int(id)] = next
            position += 1
        }
        for buffer in readable { place(buffer, write: false) }
        for buffer in writable {
            capacity &+= buffer.length
            place(buffer, write: true)
        }
        freeTop -= total
        chainCount[Int(head)] = UInt16(total)
        writableCapacity[Int(head)] = capacity
        inFlight[Int(head)] = true
        inFlightCount += 1
        ring.setAvailEntry(Int(availIndex) & (size - 1), head)
        availIndex &+= 1
        return head
    }

    /// Adds a chain of one device-readable and one device-writable buffer (an admin
    /// command: header and data, then status and result) — ``add(readable:writable:)``
    /// without the generic collections, for the per-command path.
    @discardableResult
    package func add(readable: DMABuffer, writable: DMABuffer) throws(VirtqueueError) -> UInt16 {
        guard size >= 2 else { throw .invalidChain(buffers: 2, queueSize: size) }
        guard freeTop >= 2 else { throw .full(needed: 2, free: freeTop) }
        let head = freeStack[freeTop - 1]
        let tail = freeStack[freeTop - 2]
        ring.writeDescriptor(Int(head), address: readable.address, length: readable.length, flags: .next, next: tail)
        ring.writeDescriptor(Int(tail), address: writable.address, length: writable.length, flags: .write, next: 0)
        chainNext[Int(head)] = tail
        chainNext[Int(tail)] = 0
        freeTop -= 2
        chainCount[Int(head)] = 2
        writableCapacity[Int(head)] = writable.length
        inFlight[Int(head)] = true
        inFlightCount += 1
        ring.setAvailEntry(Int(availIndex) & (size - 1), head)
        availIndex &+= 1
        return head
    }

    /// Makes every chain added since the last call visible to the device (one avail->idx
    /// store after a write barrier) and says whether the device wants a notification.
    /// Spec: §2.7.13.3 and §2.7.10 (EVENT_IDX: `vring_need_event(avail_event, new, old)`;
    /// otherwise unless VIRTQ_USED_F_NO_NOTIFY).
    package func publish() -> Bool {
        let old = publishedIndex
        let new = availIndex
        guard old != new else { return false }
        writeBarrier()
        ring.storeAvailIndex(new)
        publishedIndex = new
        // The device's suppression fields must be read after the index store is visible.
        fullBarrier()
        if eventIndex {
            return ringNeedsEvent(eventIndex: ring.availEvent, newIndex: new, oldIndex: old)
        }
        return ring.usedFlags & RingFlags.usedNoNotify == 0
    }

    /// Whether the device has completions not yet taken.
    package var hasCompletions: Bool { ring.loadUsedIndex() != lastUsedIndex }

    /// Takes up to `limit` completions, validating each, and frees their descriptors.
    ///
    /// - Parameter body: called with each valid completion, in used-ring order.
    /// - Returns: how many completions were taken.
    /// - Throws: a device-error ``VirtqueueError`` for the first invalid element; the
    ///   elements before it were delivered, and the queue must be reset.
    @discardableResult
    package func takeCompletions(limit: Int = .max, _ body: (UsedElement) -> Void) throws(VirtqueueError) -> Int {
        let usedIndex = ring.loadUsedIndex()
        let pending = Int(usedIndex &- lastUsedIndex)
        if pending == 0 { return 0 }
        guard pending <= inFlightCount else { throw .usedIndexJump(from: lastUsedIndex, to: usedIndex, inFlight: inFlightCount) }
        readBarrier()
        var taken = 0
        while taken < pending && taken < limit {
            let element = ring.usedEntry(Int(lastUsedIndex) & (size - 1))
            guard element.id < UInt32(size) else { throw .usedIDOutOfRange(id: element.id, queueSize: size) }
            let head = Int(element.id)
            guard inFlight[head] else { throw .usedIDNotInFlight(id: element.id) }
            guard element.length <= writableCapacity[head] else {
                throw .usedLengthTooLarge(id: element.id, length: element.length, capacity: writableCapacity[head])
            }
            release(head: head)
            lastUsedIndex &+= 1
            taken += 1
            body(UsedElement(head: UInt16(head), length: element.length))
        }
        if eventIndex { ring.usedEvent = lastUsedIndex &+ 0x7fff }
        return taken
    }

    private func release(head: Int) {
        inFlight[head] = false
        inFlightCount -= 1
        var id = head
        let count = Int(chainCount[head])
        for index in 0..<count {
            freeStack[freeTop] = UInt16(id)
            freeTop += 1
            if index + 1 < count { id = Int(chainNext[id]) }
        }
    }

    /// Asks the device to interrupt on completions, or not to (polling).
    /// Spec: VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX.
    package func setInterrupts(enabled: Bool) {
        if eventIndex {
            ring.usedEvent = enabled ? lastUsedIndex : lastUsedIndex &+ 0x7fff
        } else {
            ring.availFlags = enabled ? 0 : RingFlags.availNoInterrupt
        }
    }

    /// Forgets every chain in flight (after a device reset, when the device no longer owns
    /// them) and returns their heads, so their owners can be failed.
    package func abandonAll() -> [UInt16] {
        var heads: [UInt16] = []
        for head in 0..<size where inFlight[head] {
            heads.append(UInt16(head))
            release(head: head)
        }
        memory.bytes.initializeMemory(as: UInt8.self, repeating: 0)
        availIndex = 0
        publishedIndex = 0
        lastUsedIndex = 0
        setInterrupts(enabled: false)
        return heads
    }
}
