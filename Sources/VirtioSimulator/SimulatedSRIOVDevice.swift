import PCIConfig
import VirtioSystem
import VirtioSpec
import VirtioTransport
import Virtqueue

#if canImport(Glibc)
import Glibc
#endif

/// A simulated virtio SR-IOV device: a PF (the admin group owner, with an admin virtqueue)
/// and its VFs, each a virtio PCI function behind the same ``RegisterSpace`` protocol the
/// real transport uses.
///
/// It is written from the device side of the spec: common-config registers with their
/// side effects (feature windows, status rules, FEATURES_OK acceptance, queue enable
/// rules, reset), notify handling that reads the rings from DMA memory through its own
/// address translation, the admin command set with per-VF resources and the device's own
/// validation, configurable latency and parallelism, fault injection, and counters.
public final class SimulatedSRIOVDevice: @unchecked Sendable {
    // All mutable state is guarded by `lock`; the completion worker takes it too.
    let lock = Lock()
    public let configuration: SimulatedDeviceConfiguration
    public let memory: SimulatedMemory
    let pf: FunctionModel
    var vfs: [FunctionModel]
    var admin: AdminCommandProcessor
    var timing: DeviceTiming
    var random: SplitMix64
    var workerFreeAt: [UInt64]
    let scheduler: CompletionScheduler
    /// The PF's driver negotiated VIRTIO_F_SR_IOV (and reached FEATURES_OK) at least once:
    /// VFs may be enabled, also again after a reset [content:966-979].
    var srIOVNegotiated: Bool
    /// Bus Master Enable of the PF's command register: clear = the device starts no DMA.
    var busMaster = true
    /// Commands still to be answered EAGAIN under `transientEAGAIN`.
    var eagainRemaining = 0
    /// A reset written while the device still works: when it takes effect (ns).
    var pendingResetAt: UInt64?

    /// Creates the device.
    /// - Parameters:
    ///   - members: resources of each VF; `nil` = the configuration's initial values.
    public init(configuration: SimulatedDeviceConfiguration = SimulatedDeviceConfiguration(), members: [MemberResources]? = nil,
                memory: SimulatedMemory = SimulatedMemory()) {
        precondition(configuration.numVFs <= configuration.totalVFs)
        self.configuration = configuration
        self.memory = memory
        let resources = members ?? (0..<configuration.totalVFs).map { index in
            MemberResources(msixVectors: configuration.initialVFVectors, features: configuration.initialMemberFeatures,
                            mac: [0x52, 0x54, 0x00, 0x3b, UInt8(truncatingIfNeeded: index >> 8), UInt8(truncatingIfNeeded: index)])
        }
        precondition(resources.count == configuration.totalVFs)
        pf = FunctionModel(address: configuration.pfAddress, type: configuration.pfType, isOwner: true, features: configuration.pfFeatures,
                           queues: configuration.regularQueues, adminQueues: configuration.adminQueueCount,
                           maximumQueueSize: configuration.maximumQueueSize, msixTableSize: configuration.pfMSIXVectors,
                           mac: [0x52, 0x54, 0x00, 0x3b, 0xff, 0xff])
        pf.requiredDriverFeatures = configuration.requiredDriverFeatures.intersection(configuration.pfFeatures)
        pf.countsAdminQueues = !configuration.strictness.numQueuesExcludesAdminQueues
        vfs = []
        admin = AdminCommandProcessor(configuration: configuration, members: resources)
        timing = configuration.timing
        random = SplitMix64(seed: 0x5eed)
        workerFreeAt = [UInt64](repeating: 0, count: configuration.timing.parallelism)
        scheduler = CompletionScheduler()
        // VFs enabled at creation stand for VFs an earlier PF driver enabled.
        srIOVNegotiated = configuration.numVFs > 0
        vfs = (0..<configuration.totalVFs).map { makeVF($0, resources[$0]) }
        admin.vfFunctions = vfs
        scheduler.start(device: self)
    }

    deinit { scheduler.stop() }

    func makeVF(_ index: Int, _ resources: MemberResources) -> FunctionModel {
        FunctionModel(address: configuration.vfAddress(index), type: configuration.vfType, isOwner: false, features: resources.features,
                      queues: configuration.regularQueues, adminQueues: 0, maximumQueueSize: configuration.maximumQueueSize,
                      msixTableSize: resources.msixVectors, mac: resources.mac)
    }

    /// Stops the completion worker (also done on deinit).
    public func stop() { scheduler.stop() }

    // MARK: Identity and config space

    public var pfAddress: PCIAddress { configuration.pfAddress }
    public var numVFs: Int { lock.withLock { admin.numVFs } }

    /// The PF's identity as its config space describes it.
    var pfIdentity: SimulatedFunctionIdentity {
        SimulatedFunctionIdentity(address: pfAddress, type: configuration.pfType, bar0Address: SimulatedSysfsTree.pfBAR0,
                                  msixTableSize: configuration.pfMSIXVectors)
    }

    /// The PF's config space bytes (with the SR-IOV capability).
    public func pfConfigBytes() -> [UInt8] {
        let numVFs = self.numVFs
        return simulatedConfigSpace(pfIdentity, sriov: SimulatedSRIOV(
            totalVFs: configuration.totalVFs, numVFs: numVFs, firstVFOffset: configuration.firstVFOffset,
            vfStride: configuration.vfStride, vfType: configuration.vfType, vfBAR0Base: SimulatedSysfsTree.vfBAR0Base))
    }

    /// The PF's decoded config space.
    public func pfConfigSpace() -> PCIConfigSpace {
        // SAFETY of `try!`: the model's own layout always decodes (checked by its tests).
        try! PCIConfigSpace(decoding: pfConfigBytes(), address: pfAddress, barSizes: [SimulatedBARLayout.size, 0, 0, 0, 0, 0])
    }

    /// VF `index`'s decoded config space (its MSI-X table size follows its provisioned vectors).
    public func vfConfigSpace(_ index: Int) -> PCIConfigSpace {
        let vectors = lock.withLock { admin.members[index].msixVectors }
        let identity = SimulatedFunctionIdentity(address: configuration.vfAddress(index), type: configuration.vfType,
                                                 bar0Address: SimulatedSysfsTree.vfBAR0Base + UInt64(index) * SimulatedBARLayout.size,
                                                 msixTableSize: max(vectors, 1))
        return try! PCIConfigSpace(decoding: simulatedConfigSpace(identity), address: identity.address,
                                   barSizes: [SimulatedBARLayout.size, 0, 0, 0, 0, 0])
    }

    /// The PF's BAR 0.
    public func pfBAR() -> any RegisterSpace { SimulatedBAR(device: self, function: nil) }
    /// VF `index`'s BAR 0.
    public func vfBAR(_ index: Int) -> any RegisterSpace {
        precondition(index < configuration.totalVFs)
        return SimulatedBAR(device: self, function: index)
    }

    /// The fake sysfs tree of this device's current state.
    public func sysfsTree() -> SimulatedSysfsTree {
        lock.withLock {
            var tree = SimulatedSysfsTree(totalVFs: configuration.totalVFs, numVFs: admin.numVFs)
            tree.pfAddress = configuration.pfAddress
            tree.pfType = configuration.pfType
            tree.vfType = configuration.vfType
            tree.pfMSIXVectors = configuration.pfMSIXVectors
            tree.vfMSIXCounts = admin.members.map { max($0.msixVectors, 1) }
            tree.vfTotalMSIX = admin.pool
            tree.firstVFOffset = configuration.firstVFOffset
            tree.vfStride = configuration.vfStride
            return tree
        }
    }

    // MARK: Test and benchmark controls

    /// Injects or clears a fault on the PF.
    public func setFault(_ fault: SimulatedFault, _ enabled: Bool = true) {
        lock.withLock {
            if enabled { pf.faults.insert(fault) } else { pf.faults.remove(fault) }
            if fault == .transientEAGAIN { eagainRemaining = enabled ? 3 : 0 }
        }
    }
    public var faults: Set<SimulatedFault> { lock.withLock { pf.faults } }

    /// Changes latency and parallelism.
    public func setTiming(_ timing: DeviceTiming) {
        lock.withLock {
            self.timing = timing
            workerFreeAt = [UInt64](repeating: 0, count: timing.parallelism)
        }
    }

    /// PF counters (MMIO reads/writes, notifies, interrupts, admin commands).
    public var counters: SimulatedCounters { lock.withLock { pf.counters } }
    public func vfCounters(_ index: Int) -> SimulatedCounters { lock.withLock { vfs[index].counters } }
    public func resetCounters() { lock.withLock { pf.counters = SimulatedCounters() } }
    /// Restores the PF's counters (a state file carries them across processes).
    public func restoreCounters(_ counters: SimulatedCounters) { lock.withLock { pf.counters = counters } }
    /// The timing the model runs with.
    public var currentTiming: DeviceTiming { lock.withLock { timing } }

    /// The PF's device status (what the driver left it in).
    public var pfStatus: DeviceStatus { lock.withLock { pf.status } }

    /// Resources of VF `index` as the device holds them.
    public func member(_ index: Int) -> MemberResources { lock.withLock { admin.members[index] } }
    public var members: [MemberResources] { lock.withLock { admin.members } }
    /// Vectors of the VF pool not given to a VF.
    public var availableVectors: Int { lock.withLock { admin.availableVectors } }

    /// Marks VF `index` as used by a driver (bound) or free.
    public func setInUse(_ index: Int, _ inUse: Bool) { lock.withLock { admin.members[index].inUse = inUse } }

    /// Changes NumVFs and VF Enable (sysfs `sriov_numvfs`): VFs beyond it stop existing as
    /// members; 0 clears VF Enable, and the SR-IOV group ceases to exist [admin:62-65].
    /// - Throws: ``SimulatedDeviceError/sriovNotNegotiated(device:)`` when VFs are enabled
    ///   before the PF's driver negotiated VIRTIO_F_SR_IOV [content:966-979].
    public func setNumVFs(_ count: Int) throws(SimulatedDeviceError) {
        precondition(count >= 0 && count <= configuration.totalVFs)
        try lock.withLock { () throws(SimulatedDeviceError) in
            if count > 0 && !srIOVNegotiated && configuration.strictness.vfEnableNeedsSRIOV {
                throw .sriovNotNegotiated(device: pfAddress)
            }
            admin.numVFs = count
        }
    }

    /// Whether the PF's driver negotiated VIRTIO_F_SR_IOV (since the device was created).
    public var sriovNegotiated: Bool { lock.withLock { srIOVNegotiated } }

    /// Sets or clears Bus Master Enable in the PF's command register (what a driver does
    /// through config space to stop a device that does not reset): cleared, the device
    /// reads and writes no memory.
    public func setBusMaster(_ enabled: Bool) { lock.withLock { busMaster = enabled } }

    /// Lets a pending (slow or late) reset take effect now if its time has come, as any
    /// register access does.
    public func settle() { lock.withLock { settleResetLocked() } }

    // MARK: Register access (called by SimulatedBAR)

    func function(_ index: Int?) -> FunctionModel { index.map { vfs[$0] } ?? pf }

    func read(_ index: Int?, offset: Int, width: Int) -> UInt32 {
        lock.withLock {
            if index == nil { settleResetLocked() }
            let function = function(index)
            function.counters.mmioReads += 1
            if function.faults.contains(.surpriseRemoval) { return width == 4 ? UInt32.max : (width == 2 ? 0xffff : 0xff) }
            typealias L = SimulatedBARLayout
            switch offset {
            case Int(L.commonOffset)..<Int(L.commonOffset + L.commonLength):
                return function.readCommon(offset - Int(L.commonOffset), width: width)
            case Int(L.isrOffset):
                let value = function.isr
                function.isr = 0  // reading the ISR clears it
                return UInt32(value)
            case Int(L.deviceOffset)..<Int(L.deviceOffset + L.deviceLength):
                let start = offset - Int(L.deviceOffset)
                guard start + width <= function.deviceConfig.count else { return 0 }
                var value: UInt32 = 0
                for byte in 0..<width { value |= UInt32(function.deviceConfig[start + byte]) << (8 * byte) }
                return value
            default:
                return 0
            }
        }
    }

    func write(_ index: Int?, offset: Int, width: Int, value: UInt32) {
        lock.withLock {
            if index == nil { settleResetLocked() }
            let function = function(index)
            function.counters.mmioWrites += 1
            if function.faults.contains(.surpriseRemoval) { return }
            typealias L = SimulatedBARLayout
            switch offset {
            case Int(L.commonOffset)..<Int(L.commonOffset + L.commonLength):
                let common = offset - Int(L.commonOffset)
                if function.isOwner, common == CommonConfigRegister.deviceStatus.rawValue, width == 1, value == 0, !function.status.isEmpty,
                   function.faults.contains(.slowReset) || function.faults.contains(.lateWrite) {
                    // The reset takes effect later: at once under lateWrite alone (on the
                    // next access), after slowResetDuration under slowReset.
                    function.counters.resets += 1
                    if pendingResetAt == nil {
                        let delay = function.faults.contains(.slowReset) ? configuration.slowResetDuration.nanoseconds : 0
                        pendingResetAt = monotonicNanoseconds() + delay
                    }
                    return
                }
                let wasReset = function.writeCommon(common, width: width, value: value)
                if wasReset { function.counters.resets += 1 }
                if wasReset && function.isOwner { admin.deviceReset() }
                if function.isOwner && function.status.contains(.featuresOK) && function.driverFeatures.contains(.srIOV) {
                    srIOVNegotiated = true
                }
                if let index, function.status.contains(.driverOK) != admin.members[index].inUse, !wasReset || admin.members[index].inUse {
                    // A VF whose driver reached DRIVER_OK is in use; a reset frees it.
                    admin.members[index].inUse = function.status.contains(.driverOK)
                }
            case Int(L.notifyOffset)..<Int(L.notifyOffset + L.notifyLength) where width == 2:
                function.counters.notifies += 1
                let queue = (offset - Int(L.notifyOffset)) / Int(L.notifyOffMultiplier)
                processNotify(function, queue: queue)
            default:
                break
            }
        }
    }

    /// Applies a pending reset whose time has come (lock held). Under `lateWrite` the device
    /// first writes a used element for every command it still holds, through the IOMMU.
    func settleResetLocked() {
        guard let due = pendingResetAt, monotonicNanoseconds() >= due else { return }
        pendingResetAt = nil
        if pf.faults.contains(.lateWrite) && busMaster {
            for queue in pf.queues where queue.enabled && !queue.inService.isEmpty {
                guard let ring = ringView(queue) else { continue }
                for head in queue.inService.sorted() {
                    ring.setUsedEntry(Int(queue.usedIndex) & (queue.size - 1), id: UInt32(head), length: 0)
                    queue.usedIndex &+= 1
                }
                ring.storeUsedIndex(queue.usedIndex)
            }
        }
        pf.reset()
        admin.deviceReset()
    }

    // MARK: Queue processing (lock held)

    /// A chain the device took from a queue: its head, and where to write results.
    struct TakenChain {
        var head: UInt16
        var readable: [UInt8]
        var writable: [(pointer: UnsafeMutableRawPointer, length: Int)]
        var capacity: Int
    }

    func processNotify(_ function: FunctionModel, queue index: Int) {
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

    func executeAdmin(_ chain: TakenChain, function: FunctionModel, queue: QueueModel) -> Int {
        guard chain.capacity >= AdminCommandLayout.resultHeaderSize else { return 0 }
        if function.faults.contains(.transientEAGAIN), eagainRemaining > 0, chain.readable.count >= 2, chain.readable[0] > 1 || chain.readable[1] != 0 {
            eagainRemaining -= 1
            function.counters.adminErrors += 1
            return fill(chain, with: AdminResultHeader(status: .eagain, qualifier: .tryAgain).encode())
        }
        let outcome = admin.execute(chain.readable, resultCapacity: chain.capacity, othersOutstanding: queue.inService.count > 1)
        if outcome.status != .ok { function.counters.adminErrors += 1 }
        // The changed member's VF function now shows its new resources.
        if let index = admin.changedMember, index < vfs.count {
            let resources = admin.members[index]
            vfs[index].msixTableSize = resources.msixVectors
            vfs[index].offeredFeatures = resources.features
            if Array(vfs[index].deviceConfig.prefix(6)) != resources.mac {
                for (byte, value) in resources.mac.enumerated() { vfs[index].deviceConfig[byte] = value }
                // Device config changed: a driver reading it across the change must retry.
                vfs[index].configGeneration &+= 1
            }
        }
        syncRestoredQueues()
        for (vf, queue) in admin.pendingNotifications { processNotify(vf, queue: queue) }
        admin.pendingNotifications = []
        return fill(chain, with: AdminResultHeader(status: outcome.status, qualifier: outcome.qualifier).encode() + outcome.result)
    }

    // MARK: Completion (lock held)

    func schedule(_ function: FunctionModel, queue: QueueModel, completions: [(head: UInt16, length: UInt32)], capacities: [Int]) {
        var ordered = Array(zip(completions, capacities))
        switch timing.completionOrder {
        case .inOrder: break
        case .reversed: ordered.reverse()
        case .shuffled(let seed):
            var generator = SplitMix64(seed: seed &+ UInt64(queue.usedIndex))
            ordered.shuffle(using: &generator)
        }
        let latency = timing.latency.nanoseconds
        if latency == 0 {
            complete(function, queue: queue, ordered.map { ($0.0.head, $0.0.length, $0.1) })
            return
        }
        let now = monotonicNanoseconds()
        var due: [CompletionScheduler.Item] = []
        for (completion, capacity) in ordered {
            // The worker that frees first takes the next command.
            var worker = 0
            for candidate in workerFreeAt.indices where workerFreeAt[candidate] < workerFreeAt[worker] { worker = candidate }
            let start = max(now, workerFreeAt[worker])
            var service = Double(latency)
            if timing.jitter > 0 { service *= 1 + timing.jitter * (Double(random.next() % 2001) / 1000 - 1) }
            let finish = start + UInt64(max(service, 0))
            workerFreeAt[worker] = finish
            due.append(.init(due: finish, function: function, queue: queue, head: completion.head, length: completion.length,
                             capacity: capacity, epoch: function.epoch))
        }
        scheduler.add(due)
    }

    /// Publishes completions on the used ring, applying completion faults, and decides
    /// whether an interrupt would be raised.
    func complete(_ function: FunctionModel, queue: QueueModel, _ items: [(head: UInt16, length: UInt32, capacity: Int)]) {
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
    func deliver(_ items: [CompletionScheduler.Item]) {
        lock.withLock {
            var groups: [ObjectIdentifier: [CompletionScheduler.Item]] = [:]
            var order: [ObjectIdentifier] = []
            for item in items where item.epoch == item.function.epoch {
                let key = ObjectIdentifier(item.queue)
                if groups[key] == nil { order.append(key) }
                groups[key, default: []].append(item)
            }
            for key in order {
                let batch = groups[key]!
                complete(batch[0].function, queue: batch[0].queue, batch.map { ($0.head, $0.length, $0.capacity) })
            }
        }
    }
}

extension FunctionModel {
    var negotiatedEventIndex: Bool { driverFeatures.contains(.eventIndex) && status.contains(.featuresOK) }
}


func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// A small seeded generator (SplitMix64) for repeatable jitter and shuffles.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// A BAR of a simulated function, as a ``RegisterSpace``.
final class SimulatedBAR: RegisterSpace, @unchecked Sendable {
    let device: SimulatedSRIOVDevice
    let function: Int?
    let length = Int(SimulatedBARLayout.size)

    init(device: SimulatedSRIOVDevice, function: Int?) {
        self.device = device
        self.function = function
    }

    func check(_ offset: Int, _ width: Int) {
        precondition(offset >= 0 && offset <= length - width && offset % width == 0, "register access outside BAR or misaligned")
    }
    func read8(at offset: Int) -> UInt8 { check(offset, 1); return UInt8(truncatingIfNeeded: device.read(function, offset: offset, width: 1)) }
    func read16(at offset: Int) -> UInt16 { check(offset, 2); return UInt16(truncatingIfNeeded: device.read(function, offset: offset, width: 2)) }
    func read32(at offset: Int) -> UInt32 { check(offset, 4); return device.read(function, offset: offset, width: 4) }
    func write8(_ value: UInt8, at offset: Int) { check(offset, 1); device.write(function, offset: offset, width: 1, value: UInt32(value)) }
    func write16(_ value: UInt16, at offset: Int) { check(offset, 2); device.write(function, offset: offset, width: 2, value: UInt32(value)) }
    func write32(_ value: UInt32, at offset: Int) { check(offset, 4); device.write(function, offset: offset, width: 4, value: value) }
}
