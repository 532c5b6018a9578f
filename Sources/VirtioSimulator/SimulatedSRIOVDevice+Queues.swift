import VirtioSpec
import Virtqueue

extension SimulatedSRIOVDevice {
    // MARK: Queue processing (lock held)

    /// A chain the device took from a queue: its head, and where to write results.
    struct TakenChain {
        var head: UInt16
        var readable: [UInt8]
        var writable: [(pointer: UnsafeMutableRawPointer, length: Int)]
        var capacity: Int
    }

    func processNotify(_ function: FunctionModel, queue index: Int) {
        if handOverToModelThread(function, queue: index) { return }
        guard index < function.queues.count else { return }
        let queue = function.queues[index]
        if function.stopped { function.notifiedWhileStopped.insert(index); return }
        guard queue.enabled, function.status.contains(.driverOK), !function.status.contains(.deviceNeedsReset) else { return }
        guard function !== pf || (busMaster && pendingResetAt == nil) else { return }
        guard let ring = ringView(queue) else { function.needsReset(); return }
        let availIndex = ring.loadAvailIndex()
        let pending = Int(availIndex &- queue.lastAvail)
        guard pending <= queue.size else { function.needsReset(); return }
        var chains: [TakenChain] = []
        chains.reserveCapacity(pending)
        for _ in 0..<pending {
            let head = ring.availEntry(Int(queue.lastAvail) & (queue.size - 1))
            queue.lastAvail &+= 1
            guard let chain = takeChain(ring, head: head, queue: queue) else { function.needsReset(); return }
            queue.inService.insert(head)
            chains.append(chain)
        }
        if function.negotiatedEventIndex { ring.availEvent = queue.lastAvail }
        if chains.isEmpty { return }

        let isAdmin = function.isAdminQueue(index)
        var completions: [(head: UInt16, length: UInt32)] = []
        completions.reserveCapacity(chains.count)
        // A non-conforming variant works on one queue's commands out of order.
        if isAdmin && !configuration.strictness.inOrderProcessing { chains.reverse() }
        for chain in chains {
            let written: Int
            if isAdmin {
                function.counters.adminCommands += 1
                if chain.readable.count >= 2 {
                    function.counters.adminCommandsByOpcode[UInt16(chain.readable[0]) | UInt16(chain.readable[1]) << 8, default: 0] += 1
                }
                written = executeAdmin(chain, function: function, queue: queue)
            } else {
                function.counters.queueRequests += 1
                written = loopback(chain)
            }
            completions.append((chain.head, UInt32(written)))
        }
        if isAdmin && function.faults.contains(.neverComplete) { return }
        if isAdmin && function.faults.contains(.needsResetMidFlight) {
            function.needsReset()
            return
        }
        schedule(function, queue: queue, completions: completions, capacities: chains.map(\.capacity))
    }

    func ringView(_ queue: QueueModel) -> SplitRingView? {
        guard let descriptors = memory.translate(queue.descriptorArea, length: queue.size * SplitQueueLayout.descriptorSize),
              let avail = memory.translate(queue.driverArea, length: SplitQueueLayout.availSize(queueSize: queue.size)),
              let used = memory.translate(queue.deviceArea, length: SplitQueueLayout.usedSize(queueSize: queue.size))
        else { return nil }
        return SplitRingView(size: queue.size, descriptors: descriptors, avail: avail, used: used)
    }

    /// Walks a descriptor chain, checking every index, flag and address. `nil` = malformed.
    func takeChain(_ ring: SplitRingView, head: UInt16, queue: QueueModel) -> TakenChain? {
        guard Int(head) < queue.size, !queue.inService.contains(head) else { return nil }
        var chain = TakenChain(head: head, readable: [], writable: [], capacity: 0)
        var index = Int(head)
        var seen = 0
        while true {
            seen += 1
            guard seen <= queue.size else { return nil }  // a loop
            let descriptor = ring.readDescriptor(index)
            guard !descriptor.flags.contains(.indirect),
                  let pointer = memory.translate(descriptor.address, length: Int(descriptor.length)) else { return nil }
            if descriptor.flags.contains(.write) {
                chain.writable.append((pointer, Int(descriptor.length)))
                chain.capacity += Int(descriptor.length)
            } else {
                // Device-readable buffers must all come before the writable ones.
                guard chain.writable.isEmpty else { return nil }
                chain.readable.append(contentsOf: UnsafeRawBufferPointer(start: pointer, count: Int(descriptor.length)))
            }
            guard descriptor.flags.contains(.next) else { break }
            index = Int(descriptor.next)
            guard index < queue.size else { return nil }
        }
        return chain
    }

    /// Writes `bytes` into the chain's writable buffers; returns how many fit.
    func fill(_ chain: TakenChain, with bytes: [UInt8]) -> Int {
        var written = 0
        for buffer in chain.writable where written < bytes.count {
            let count = min(buffer.length, bytes.count - written)
            bytes.withUnsafeBytes { source in
                buffer.pointer.copyMemory(from: source.baseAddress! + written, byteCount: count)
            }
            written += count
        }
        return written
    }

    /// A regular queue echoes its readable bytes into its writable buffers.
    func loopback(_ chain: TakenChain) -> Int { fill(chain, with: chain.readable) }
}
