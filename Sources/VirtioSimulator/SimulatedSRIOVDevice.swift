import VirtioSystem
import VirtioSpec

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
    // All mutable state is guarded by `lock`; the completion worker takes it too. That lock
    // also keeps accesses exclusive: the hot state skips the run-time exclusivity check
    // (`@exclusivity(unchecked)`), which cost more than the admin command itself (issue 16).
    let lock = Lock()
    /// What the model was built with.
    public let configuration: SimulatedDeviceConfiguration
    package let memory: SimulatedMemory
    let pf: FunctionModel
    @exclusivity(unchecked) var vfs: [FunctionModel]
    @exclusivity(unchecked) var admin: AdminCommandProcessor
    @exclusivity(unchecked) var timing: DeviceTiming { didSet { latencyNanoseconds = timing.latency.nanoseconds } }
    /// `timing.latency` in nanoseconds (read on every pass).
    @exclusivity(unchecked) var latencyNanoseconds: UInt64
    @exclusivity(unchecked) var random: SplitMix64
    @exclusivity(unchecked) var workerFreeAt: [UInt64]
    let scheduler: CompletionScheduler
    /// The PF's driver negotiated VIRTIO_F_SR_IOV (and reached FEATURES_OK) at least once:
    /// VFs may be enabled, also again after a reset [content:966-979].
    var srIOVNegotiated: Bool
    /// Bus Master Enable of the PF's command register: clear = the device starts no DMA.
    @exclusivity(unchecked) var busMaster = true
    /// Commands still to be answered EAGAIN under `transientEAGAIN`.
    @exclusivity(unchecked) var eagainRemaining = 0
    /// A reset written while the device still works: when it takes effect (ns).
    @exclusivity(unchecked) var pendingResetAt: UInt64?
    /// Queue processing on a thread of its own (``processQueuesOnOwnThread()``), if set.
    @exclusivity(unchecked) var modelThread: ModelThread?
    /// Storage of a pass over a queue, kept between passes (``processNotify(_:queue:)``).
    @exclusivity(unchecked) var passStorage = TakenChains()

    /// Creates the device model: an SR-IOV PF (the owner of the SR-IOV group, virtio 1.4
    /// §2.12.1.1) with `configuration.totalVFs` VFs and an admin virtqueue (§2.12).
    /// - Parameters:
    ///   - configuration: what the model offers and how strictly it checks the driver.
    ///   - members: resources of each VF; `nil` = the configuration's initial values.
    ///   - memory: the model's DMA memory (a fresh one by default).
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
        latencyNanoseconds = configuration.timing.latency.nanoseconds
        random = SplitMix64(seed: 0x5eed)
        workerFreeAt = [UInt64](repeating: 0, count: configuration.timing.parallelism)
        scheduler = CompletionScheduler()
        // VFs enabled at creation stand for VFs an earlier PF driver enabled.
        srIOVNegotiated = configuration.numVFs > 0
        vfs = (0..<configuration.totalVFs).map { makeVF($0, resources[$0]) }
        admin.vfFunctions = vfs
        scheduler.start(device: self)
    }

    deinit {
        scheduler.stop()
        modelThread?.stop()
    }

    func makeVF(_ index: Int, _ resources: MemberResources) -> FunctionModel {
        FunctionModel(address: configuration.vfAddress(index), type: configuration.vfType, isOwner: false, features: resources.features,
                      queues: configuration.regularQueues, adminQueues: 0, maximumQueueSize: configuration.maximumQueueSize,
                      msixTableSize: resources.msixVectors, mac: resources.mac)
    }

    /// Stops the completion worker (also done on deinit).
    public func stop() {
        scheduler.stop()
        lock.withLock { modelThread }?.stop()
    }
}

// The device is split by aspect: +Identity (config space, BARs, sysfs tree), +Controls
// (faults, timing, counters, members), +Reset (status, SR-IOV enable, reset), +Registers
// (BAR access), +Queues (notify, rings, chains), +AdminDispatch, +Completion, and
// +DeviceParts (VF state kept and restored).
