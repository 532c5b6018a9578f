import VirtioSpec
import Virtqueue

extension SimulatedSRIOVDevice {
    // MARK: Queue processing (lock held)

    /// A chain the device took from a queue: its head, its readable bytes (copied when it
    /// was taken) and its writable buffers, both as ranges of the pass's ``TakenChains``.
    struct TakenChain {
        var head: UInt16
        /// Range of ``TakenChains/bytes``.
        var readable: Range<Int>
        /// Range of ``TakenChains/writable``.
        var writable: Range<Int>
        /// Bytes of the writable buffers.
        var capacity: Int
    }

    /// A writable buffer of a chain: the host address the IOMMU gave when it was taken.
    struct WritableBuffer {
        var pointer: UnsafeMutableRawPointer
        var length: Int
    }

    /// A used element to publish: the chain's head, the bytes written and the chain's capacity.
    struct Completion {
        var head: UInt16
        var length: UInt32
        var capacity: Int
    }

    /// What one pass over a queue took and answered: the chains, their readable bytes back to
    /// back, their writable buffers and their completions. The device keeps one between
    /// passes (``SimulatedSRIOVDevice/passStorage``), so that a pass allocates nothing.
    struct TakenChains {
        var chains: [TakenChain] = []
        var bytes: [UInt8] = []
        var writable: [WritableBuffer] = []
        var completions: [Completion] = []

        mutating func removeAll() {
            if !chains.isEmpty { chains.removeAll(keepingCapacity: true) }
            if !bytes.isEmpty { bytes.removeAll(keepingCapacity: true) }
            if !writable.isEmpty { writable.removeAll(keepingCapacity: true) }
            if !completions.isEmpty { completions.removeAll(keepingCapacity: true) }
        }
    }

    func processNotify(_ function: FunctionModel, queue index: Int) {
        if handOverToModelThread(function, queue: index) { return }
        guard index < function.queues.count else { return }
        let queue = function.queues[index]
        if function.stopped { function.notifiedWhileStopped.insert(index); return }
        guard queue.enabled, function.status.contains(.driverOK), !function.status.contains(.deviceNeedsReset) else { return }
        guard function !== pf || (busMaster && pendingResetAt == nil) else { return }
        // This pass's storage: the device's, or fresh storage for a pass that a command of
        // another pass started (a queue a resumed VF was notified about).
        var taken = TakenChains()
        swap(&taken, &passStorage)
        defer {
            taken.removeAll()
            swap(&taken, &passStorage)
        }
        // Every ring and descriptor access of the take goes through the IOMMU, under one
        // hold of its lock.
        let wellFormed = memory.withTranslator { translator -> Bool in
            guard let ring = ringView(queue, translator) else { return false }
            let availIndex = ring.loadAvailIndex()
            let pending = Int(availIndex &- queue.lastAvail)
            guard pending <= queue.size else { return false }
            taken.chains.reserveCapacity(pending)
            for _ in 0..<pending {
                let head = ring.availEntry(Int(queue.lastAvail) & (queue.size - 1))
                queue.lastAvail &+= 1
                guard takeChain(ring, head: head, queue: queue, translator, into: &taken) else { return false }
                queue.inService.insert(head)
            }
            if function.negotiatedEventIndex { ring.availEvent = queue.lastAvail }
            return true
        }
        guard wellFormed else { function.needsReset(); return }
        if taken.chains.isEmpty { return }

        let isAdmin = function.isAdminQueue(index)
        taken.completions.reserveCapacity(taken.chains.count)
        // A non-conforming variant works on one queue's commands out of order.
        if isAdmin && !configuration.strictness.inOrderProcessing { taken.chains.reverse() }
        for chain in taken.chains {
            let written: Int
            if isAdmin {
                if chain.readable.count >= 2 {
                    function.countAdminCommand(UInt16(taken.bytes[chain.readable.lowerBound]) | UInt16(taken.bytes[chain.readable.lowerBound + 1]) << 8)
                } else {
                    function.counters.adminCommands += 1
                }
                written = executeAdmin(chain, of: taken, function: function, queue: queue)
            } else {
                function.counters.queueRequests += 1
                written = loopback(chain, of: taken)
            }
            taken.completions.append(Completion(head: chain.head, length: UInt32(written), capacity: chain.capacity))
        }
        if isAdmin && function.faults.contains(.neverComplete) { return }
        if isAdmin && function.faults.contains(.needsResetMidFlight) {
            function.needsReset()
            return
        }
        schedule(function, queue: queue, completions: &taken.completions)
    }

    /// The queue's rings through the IOMMU, or `nil` when an area is not mapped.
    func ringView(_ queue: QueueModel) -> SplitRingView? {
        memory.withTranslator { ringView(queue, $0) }
    }

    func ringView(_ queue: QueueModel, _ translator: borrowing SimulatedMemory.Translator) -> SplitRingView? {
        guard let descriptors = translator.translate(queue.descriptorArea, length: queue.size * SplitQueueLayout.descriptorSize),
              let avail = translator.translate(queue.driverArea, length: SplitQueueLayout.availSize(queueSize: queue.size)),
              let used = translator.translate(queue.deviceArea, length: SplitQueueLayout.usedSize(queueSize: queue.size))
        else { return nil }
        return SplitRingView(size: queue.size, descriptors: descriptors, avail: avail, used: used)
    }

    /// Walks a descriptor chain, checking every index, flag and address, and appends it to
    /// `taken`. `false` = malformed.
    func takeChain(_ ring: SplitRingView, head: UInt16, queue: QueueModel, _ translator: borrowing SimulatedMemory.Translator,
                   into taken: inout TakenChains) -> Bool {
        guard Int(head) < queue.size, !queue.inService.contains(head) else { return false }
        let bytesStart = taken.bytes.count
        let writableStart = taken.writable.count
        var capacity = 0
        var index = Int(head)
        var seen = 0
        while true {
            seen += 1
            guard seen <= queue.size else { return false }  // a loop
            let descriptor = DeviceDescriptor(ring, index)
            guard descriptor.flags & DeviceDescriptor.indirect == 0,
                  let pointer = translator.translate(descriptor.address, length: Int(descriptor.length)) else { return false }
            if descriptor.flags & DeviceDescriptor.write != 0 {
                taken.writable.append(WritableBuffer(pointer: pointer, length: Int(descriptor.length)))
                capacity += Int(descriptor.length)
            } else {
                // Device-readable buffers must all come before the writable ones.
                guard taken.writable.count == writableStart else { return false }
                taken.bytes.append(contentsOf: UnsafeRawBufferPointer(start: pointer, count: Int(descriptor.length)))
            }
            guard descriptor.flags & DeviceDescriptor.next != 0 else { break }
            index = Int(descriptor.next)
            guard index < queue.size else { return false }
        }
        taken.chains.append(TakenChain(head: head, readable: bytesStart..<taken.bytes.count, writable: writableStart..<taken.writable.count,
                                       capacity: capacity))
        return true
    }

    /// Writes `bytes` into the chain's writable buffers from byte `offset` of the writable
    /// part on; returns how many fit.
    func fill(_ chain: TakenChain, of taken: borrowing TakenChains, with bytes: UnsafeRawBufferPointer, at offset: Int = 0) -> Int {
        var skip = offset
        var written = 0
        for buffer in taken.writable[chain.writable] where written < bytes.count {
            if skip >= buffer.length { skip -= buffer.length; continue }
            let count = min(buffer.length - skip, bytes.count - written)
            (buffer.pointer + skip).copyMemory(from: bytes.baseAddress! + written, byteCount: count)
            skip = 0
            written += count
        }
        return written
    }

    /// A regular queue echoes its readable bytes into its writable buffers.
    func loopback(_ chain: TakenChain, of taken: borrowing TakenChains) -> Int {
        taken.bytes.withUnsafeBytes { fill(chain, of: taken, with: UnsafeRawBufferPointer(rebasing: $0[chain.readable])) }
    }
}

/// A descriptor as the device reads it from the table: `struct virtq_desc` (virtio 1.4
/// §2.7.5), 16 bytes: le64 addr at 0, le32 len at 8, le16 flags at 12, le16 next at 14.
/// The model reads it with its own layout (not the driver's types), with module-local constants.
struct DeviceDescriptor {
    /// VIRTQ_DESC_F_NEXT.
    static let next: UInt16 = 1
    /// VIRTQ_DESC_F_WRITE: device-writable.
    static let write: UInt16 = 2
    /// VIRTQ_DESC_F_INDIRECT.
    static let indirect: UInt16 = 4

    var address: UInt64
    var length: UInt32
    var flags: UInt16
    var next: UInt16

    /// Entry `index` of the ring's descriptor table.
    @inline(__always)
    init(_ ring: SplitRingView, _ index: Int) {
        let entry = UnsafeRawPointer(ring.descriptors + index &* 16)
        address = UInt64(littleEndian: entry.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        length = UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        flags = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        next = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }
}
