import PCIConfig
import VirtioProjectCommands
import VirtioSpec

/// Faults the device model can inject. Each makes the model misbehave the way broken or
/// hostile hardware would; the driver must turn each into a typed error.
public enum SimulatedFault: String, CaseIterable, Sendable, Hashable {
    /// Take admin commands but never complete them.
    case neverComplete
    /// Complete with a descriptor id beyond the queue size.
    case outOfRangeID
    /// Complete every command twice (a duplicate used element).
    case duplicateID
    /// Report a used length larger than the writable buffers.
    case usedLengthTooLarge
    /// Set DEVICE_NEEDS_RESET once commands are in flight, and drop them.
    case needsResetMidFlight
    /// Every read returns all ones; writes are lost (the device is gone).
    case surpriseRemoval
    /// Never accept FEATURES_OK.
    case refuseFeaturesOK
    /// Report `admin_queue_num` 0 (an admin-capable device with no admin queue).
    case noAdminQueue
    /// Report queue size 0 for every queue.
    case queueSizeZero
    /// A reset takes long: device_status keeps reading non-zero for
    /// ``SimulatedDeviceConfiguration/slowResetDuration`` after 0 is written (longer than the
    /// driver's bound), and the device keeps working on what it holds meanwhile.
    case slowReset
    /// The device writes a used element for every command it holds after a reset was
    /// attempted (when the reset takes effect, at the next read of device_status or when a
    /// slow reset ends), through the IOMMU: memory the driver released by then is a fault.
    case lateWrite
    /// Answer the next three commands (LIST_QUERY/LIST_USE excepted) with EAGAIN /
    /// Q_TRYAGAIN, without side effects: a device that is briefly busy.
    case transientEAGAIN
}

/// Which device-side rules the model enforces. The default is stricter than the spec;
/// each `false` makes a non-conforming (or, for `listCommandsWithoutVFs`, a lenient but
/// spec-deviating) variant, for the conformance checks and the driver's fallbacks.
public struct SimulatedStrictness: Sendable, Hashable {
    /// Accept LIST_QUERY/LIST_USE for the SR-IOV group while VF Enable is clear (what Linux
    /// needs, fact sheet A8). Spec-strict (`false`): every SR-IOV group command fails with
    /// EINVAL / INVALID_GROUP then.
    public var listCommandsWithoutVFs = false
    /// Refuse commands not enabled by the last LIST_USE (EINVAL / INVALID_OPCODE).
    public var enforceListUse = true
    /// Refuse LIST_USE while another command is outstanding (EINVAL / INVALID_COMMAND).
    public var refuseListUseWhileOutstanding = true
    /// Refuse parts whose lengths are not multiples of 8 bytes (EINVAL / INVALID_COMMAND),
    /// except where the length carries meaning (legacy config accesses 0x2–0x5).
    public var requireMultipleOf8Parts = true
    /// Truncate a result that does not fit the writable part (the spec); `false` fails it.
    public var truncateShortResults = true
    /// The device has a self group (type 0) with its own command list (MSIX_POOL_GET lives
    /// there; without it the owner's pool cannot be queried).
    public var selfGroup = true
    /// VFs can be enabled only after the PF's driver negotiated VIRTIO_F_SR_IOV.
    public var vfEnableNeedsSRIOV = true
    /// Check the group type first (INVALID_GROUP before INVALID_OPCODE/INVALID_MEMBER).
    public var groupCheckedFirst = true
    /// Process the commands of one admin queue in queue order [admin:600-601].
    public var inOrderProcessing = true
    /// Set bits 0 and 1 in every LIST_QUERY result [admin:285-288].
    public var listsListCommands = true
    /// num_queues leaves the admin queues out [transport-pci.tex:352-354].
    public var numQueuesExcludesAdminQueues = true
    /// A device with internal dependencies between its commands: it refuses (EINVAL /
    /// Q_INVALID_FIELD, as it MAY [admin:374-378]) a LIST_USE that enables some but not
    /// all of its listed commands.
    public var listUseAllOrNothing = false
    /// A device reset brings the legal list back to {LIST_QUERY, LIST_USE} [admin:239-242].
    public var resetClearsListUse = true
    /// Accept the self group's capability commands (0x7–0x9) when only the SR-IOV group's
    /// LIST_USE enabled them (what Linux needs: it never sends a self-group LIST_USE, fact
    /// sheet A9). Spec-strict (`false`): the self group's own LIST_USE must enable them.
    public var capabilitiesWithoutSelfListUse = false
    /// The default strictness: every rule enforced.
    public init() {}
    /// The default: stricter than the spec.
    public static let strict = SimulatedStrictness()
}

/// In which order the model returns completions it finishes at the same moment.
public enum CompletionOrder: Sendable, Hashable {
    /// Completions in the order the commands were taken.
    case inOrder
    /// Completions in the reverse of that order (a device may complete out of order).
    case reversed
    /// A seeded shuffle (repeatable).
    case shuffled(seed: UInt64)
}

/// Timing of the device side: how long each command takes and how many it works on at once.
public struct DeviceTiming: Sendable, Hashable {
    /// Service time of one command (0: complete during the notify).
    public var latency: Duration
    /// Commands in service at once (the device's parallelism D).
    public var parallelism: Int
    /// Each command's service time is latency × (1 ± jitter), from a seeded generator.
    public var jitter: Double
    /// The order of completions finished at the same moment.
    public var completionOrder: CompletionOrder
    /// The nice value of the model's thread that delivers completions at their due time
    /// (`nil`: 0). A device does not wait for the host's scheduler: on a small machine a
    /// negative value (CAP_SYS_NICE; refused quietly without it) keeps that thread on time
    /// beside a busy driver (BENCHMARKS.md, P1). Not kept in the state file.
    public var schedulerNice: Int32?

    /// A timing; the defaults are an immediate device that works on one command at a time.
    public init(latency: Duration = .zero, parallelism: Int = 1, jitter: Double = 0, completionOrder: CompletionOrder = .inOrder,
                schedulerNice: Int32? = nil) {
        precondition(parallelism >= 1)
        self.latency = latency
        self.parallelism = parallelism
        self.jitter = jitter
        self.completionOrder = completionOrder
        self.schedulerNice = schedulerNice
    }

    /// Every command completes during the notify that made it available.
    public static let immediate = DeviceTiming()
}

/// How to build a simulated SR-IOV device.
public struct SimulatedDeviceConfiguration: Sendable, Hashable {
    /// The PF's PCI address (`0000:3b:00.0` by default).
    public var pfAddress = PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 0)
    /// The PF's virtio device type.
    public var pfType: VirtioDeviceType = .net
    /// The VFs' virtio device type (the SR-IOV capability's VF device id is 0x1040 + type).
    public var vfType: VirtioDeviceType = .net
    /// SR-IOV TotalVFs: the VFs the PF can have.
    public var totalVFs = 8
    /// SR-IOV NumVFs at start (VF Enable set when not zero).
    public var numVFs = 8
    /// SR-IOV First VF Offset: VF 0's routing id minus the PF's.
    public var firstVFOffset = 1
    /// SR-IOV VF Stride: the routing-id step from one VF to the next.
    public var vfStride = 1
    /// MSI-X vectors of the PF's own table.
    public var pfMSIXVectors = 8
    /// Vectors the PF can hand out to its VFs (sysfs `sriov_vf_total_msix`).
    public var vfMSIXPool = 64
    /// Most and fewest vectors one VF may have.
    public var perVFMaximumVectors = 32
    /// Fewest vectors one VF may have.
    public var perVFMinimumVectors = 1
    /// Vectors each VF starts with.
    public var initialVFVectors = 2
    /// Features a VF can be made to offer.
    public var memberSupportedFeatures: FeatureSet
    /// Features each VF offers at start.
    public var initialMemberFeatures: FeatureSet
    /// Features the PF itself offers (ADMIN_VQ among them).
    public var pfFeatures: FeatureSet
    /// Regular queues of every function (the admin queue comes after them on the PF).
    public var regularQueues = 2
    /// The largest queue size any queue offers (`queue_size` after reset).
    public var maximumQueueSize = 256
    /// Admin queues of the PF (`admin_queue_num`).
    public var adminQueueCount = 1
    package var opcodes: ProjectOpcodeTable = .default
    /// Opcodes the device lists in LIST_QUERY; `nil` = all it implements.
    public var supportedOpcodes: [AdminOpcode]?
    /// How long commands take and how many are in service at once.
    public var timing: DeviceTiming = .immediate
    /// VIRTIO_DEV_PARTS_CAP: how many GET and SET DEV_PARTS objects the device allows.
    public var devicePartsGetLimit: UInt8 = 4
    /// VIRTIO_DEV_PARTS_CAP: how many SET DEV_PARTS objects the device allows.
    public var devicePartsSetLimit: UInt8 = 4
    /// Device-side rules the model enforces (default: all, stricter than the spec).
    public var strictness = SimulatedStrictness()
    /// Driver features the PF needs (of those it offers) before it accepts FEATURES_OK: a
    /// device MAY fail without ORDER_PLATFORM [content:999-1002]; `[.orderPlatform]` models one.
    public var requiredDriverFeatures: FeatureSet = []
    /// How long a reset takes under the `slowReset` fault.
    public var slowResetDuration: Duration = .seconds(2)

    /// The default configuration: a net PF at 0000:3b:00.0 with 8 enabled net VFs.
    public init() {
        let net = { (bit: Int) in FeatureSet(bit: bit) }
        memberSupportedFeatures = [.version1, .accessPlatform, .eventIndex, .ringReset, net(0), net(1), net(3), net(5), net(15),
                                   net(16), net(17), net(18), net(19), net(22), net(23)]
        initialMemberFeatures = [.version1, .accessPlatform, .eventIndex, net(0), net(1), net(5), net(15), net(16)]
        pfFeatures = [.version1, .accessPlatform, .orderPlatform, .eventIndex, .srIOV, .adminVQ, net(5), net(16)]
    }

    /// The default configuration with `vfs` VFs, all enabled, and a VF vector pool of
    /// `vectorsPerVF` for each.
    package init(vfs: Int, vectorsPerVF: Int = 8) {
        self.init()
        totalVFs = vfs
        numVFs = vfs
        vfMSIXPool = vfs * vectorsPerVF
    }

    /// Every admin opcode the model implements.
    public var implementedOpcodes: [AdminOpcode] {
        [.listQuery, .listUse, opcodes.msixGet, opcodes.msixSet, opcodes.msixPoolGet, opcodes.featuresGet,
         opcodes.featuresSet, opcodes.featuresCapsGet, opcodes.macGet, opcodes.macSet] + AdminCommandProcessor.ratifiedSRIOVOpcodes
    }

    /// Opcodes of the SR-IOV group (commands about a VF).
    public var srIOVGroupOpcodes: [AdminOpcode] {
        [.listQuery, .listUse, opcodes.msixGet, opcodes.msixSet, opcodes.featuresGet, opcodes.featuresSet, opcodes.featuresCapsGet,
         opcodes.macGet, opcodes.macSet] + AdminCommandProcessor.ratifiedSRIOVOpcodes
    }

    /// Opcodes of the self group (commands about the owner itself: MSIX_POOL_GET, and the
    /// capability commands 0x7–0x9).
    public var selfGroupOpcodes: [AdminOpcode] { [.listQuery, .listUse, opcodes.msixPoolGet] + AdminCommandProcessor.capabilityOpcodes }

    /// Address of VF `index` (0-based).
    public func vfAddress(_ index: Int) -> PCIAddress {
        PCIAddress(domain: pfAddress.domain, routingID: UInt16(truncatingIfNeeded: Int(pfAddress.routingID) + firstVFOffset + index * vfStride))
    }
}

/// Per-function counters of the model: what the driver cost the device.
public struct SimulatedCounters: Sendable, Hashable {
    /// Register reads by the driver.
    public var mmioReads = 0
    /// Register writes by the driver.
    public var mmioWrites = 0
    /// Queue notifications by the driver.
    public var notifies = 0
    /// Interrupts the model would have raised (suppressed ones are not counted).
    public var interrupts = 0
    /// Admin commands taken from the admin queue.
    public var adminCommands = 0
    /// Admin commands answered with a status other than OK.
    public var adminErrors = 0
    /// Requests taken from regular queues.
    public var queueRequests = 0
    /// Device resets: writes of 0 to device_status.
    public var resets = 0
    /// Admin commands taken from the admin queue, by opcode.
    public var adminCommandsByOpcode: [UInt16: Int] = [:]
    /// Completions the scheduler of a device with a latency handed over when due (to the
    /// used ring, or dropped there when the queue was reset meanwhile). Not kept in the
    /// state file.
    public var scheduledCompletions = 0
    /// How late those completions were in all, past their due time: the model's own delay —
    /// its scheduler's thread not running on time, or waiting for the device's lock (which
    /// the model also holds while it takes a doorbell's commands) — not the driver's. Not
    /// kept in the state file.
    public var completionLatenessNanoseconds: UInt64 = 0
    /// Of that lateness, the part the scheduler's thread spent waiting for the device's lock
    /// (summed per completion). Not kept in the state file.
    public var completionLockWaitNanoseconds: UInt64 = 0
    /// All counters zero.
    public init() {}
}

/// The resources of one group member (VF) as the device holds them.
public struct MemberResources: Sendable, Hashable {
    /// The VF's MSI-X vectors.
    public var msixVectors: Int
    /// The feature bits the VF offers.
    public var features: FeatureSet
    /// The VF's MAC address (six bytes).
    public var mac: [UInt8]
    /// A driver is using the VF (bound or DRIVER_OK): resource changes are refused.
    public var inUse: Bool

    /// A member's resources.
    public init(msixVectors: Int, features: FeatureSet, mac: [UInt8], inUse: Bool = false) {
        self.msixVectors = msixVectors
        self.features = features
        self.mac = mac
        self.inUse = inUse
    }
}

/// Errors of the device model's own controls (what the platform or a test does to it).
public enum SimulatedDeviceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// VFs cannot be enabled before the PF's driver negotiated VIRTIO_F_SR_IOV.
    case sriovNotNegotiated(device: PCIAddress)

    /// One sentence naming what was refused and why.
    public var description: String {
        switch self {
        case .sriovNotNegotiated(let device):
            "\(device): VFs cannot be enabled: the PF's driver has not negotiated VIRTIO_F_SR_IOV (virtio 1.4 §6, content.tex 966-979)."
        }
    }
}
