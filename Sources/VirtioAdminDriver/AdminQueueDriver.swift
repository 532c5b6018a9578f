import PCIConfig
import Synchronization
import VirtioSystem
import VirtioSpec
import VirtioTransport
import Virtqueue

/// The generic admin-queue driver: it binds a transport, negotiates VIRTIO_F_ADMIN_VQ,
/// sets up the admin virtqueue, negotiates the command set (LIST_QUERY then LIST_USE), and
/// runs admin commands with Swift concurrency — many in flight, each with its own timeout
/// and cancellation, completed out of order by descriptor id.
///
/// Spec: §2.12 "Device groups", §4.1.4.3 (admin_queue_index/num), digest §7. On
/// DEVICE_NEEDS_RESET, surprise removal or a virtqueue protocol violation every command in
/// flight fails with a typed error and the driver stops until ``reinitialize()``.
///
/// The class is split by seam: this file (options, state, queries), `+BringUp`
/// (features, rings, command-set negotiation), `SlotTable` (slots, epochs, waiters,
/// LIST_USE exclusivity), `+Submission` (admission, encoding into the slot, the doorbell),
/// `+Batch` (``submitBatch(_:timeout:)``), `+Completion` (the used ring, timeouts, the
/// poller) and `+Failure` (quiesce, fail-all, quarantine). Time is ``Options/clock``.
public final class AdminQueueDriver: @unchecked Sendable {
    // All mutable state below is guarded by `lock`.
    /// How the admin queue is set up and commands are timed.
    public struct Options: Sendable {
        /// Admin queue size (each command uses two descriptors, so size/2 are on the ring at once).
        public var queueSize = 256
        /// Bytes of a command slot for header + data, and for status + result.
        public var slotBytes = 512
        /// The most bytes of a command's header + data, or of its status + result, when they
        /// do not fit a slot (DEV_PARTS_GET of a device with many parts): such a command gets
        /// DMA memory of its own while it is on the ring, released once the device gave it
        /// back (kept with the rings if they are quarantined).
        public var largeCommandBytes = 1 << 20
        /// Timeout of a command that names none.
        public var defaultTimeout: Duration = .seconds(5)
        /// Opcodes to enable with LIST_USE, in every group that lists them (`nil`: everything
        /// the device lists). The CLI passes what its registered plugins know; when the
        /// device refuses that combination (EINVAL), LIST_USE is sent again with every listed
        /// opcode. LIST_QUERY and LIST_USE are always kept.
        public var wantedOpcodes: [AdminOpcode]?
        /// Group types whose command sets are negotiated at open: SR-IOV (commands about a
        /// VF) and self (commands about the owner, such as MSIX_POOL_GET). A group the
        /// device refuses with INVALID_GROUP (the SR-IOV group while VF Enable is clear) does
        /// not fail `open`; it is negotiated again when a command for it is sent.
        public var groupTypes: [AdminGroupType] = [.srIOV, .selfGroup]
        /// How long a reset may take before the driver stops trusting the device with its
        /// memory (then it clears Bus Master Enable or quarantines the memory).
        public var resetTimeout: Duration = .seconds(1)
        /// Clears Bus Master Enable in the function's command register; returns whether it
        /// did. Used only when a reset is not confirmed.
        public var disableBusMaster: (@Sendable () -> Bool)?
        /// Sets Bus Master Enable; returns whether it did. Called at every bring-up once the
        /// device's reset is confirmed (after ``disableBusMaster`` cleared it, too).
        public var enableBusMaster: (@Sendable () -> Bool)?
        /// How long a command waits for a free command slot (all slots can stay taken by
        /// commands a device never completes).
        public var slotWaitTimeout: Duration = .seconds(60)
        /// DMA addresses are IOVAs (VFIO): the device must translate them, so
        /// VIRTIO_F_ACCESS_PLATFORM is required, not just wanted.
        public var requireAccessPlatform = false
        /// How long a caller waiting for a batch polls the used ring itself after the last
        /// completion of its own batch, before it leaves the wait to the poller (and 40 ×
        /// this in all at most): a fast device is then answered without a task switch, a
        /// slow one costs at most this much spinning (`.zero`: never poll in the caller).
        /// While polling it also expires deadlines and rings deferred doorbells.
        public var callerSpin: Duration = .microseconds(50)
        /// The time source of deadlines, waits and the poller (tests pass a clock they advance).
        public var clock: any AdminClock = ContinuousAdminClock()
        /// The defaults.
        public init() {}
    }

    /// A group type's command set as negotiated with LIST_QUERY/LIST_USE.
    struct GroupCommands {
        var supported = AdminOpcodeBitmap()
        var inUse = AdminOpcodeBitmap()
        /// Why the group cannot be used now (LIST_QUERY or LIST_USE failed), if so.
        var unavailable: AdminError?
    }

    /// The command sets by group type: a few entries, searched in order (no hashing on the
    /// per-command path).
    struct GroupTable {
        private var entries: [(type: UInt16, commands: GroupCommands)] = []

        subscript(type: UInt16) -> GroupCommands? {
            get {
                for entry in entries where entry.type == type { return entry.commands }
                return nil
            }
            set {
                if let index = entries.firstIndex(where: { $0.type == type }) {
                    if let newValue { entries[index].commands = newValue } else { entries.remove(at: index) }
                } else if let newValue {
                    entries.append((type, newValue))
                }
            }
        }

        subscript(type: UInt16, default value: @autoclosure () -> GroupCommands) -> GroupCommands {
            get { self[type] ?? value() }
            set { self[type] = newValue }
        }

        var values: [GroupCommands] { entries.map(\.commands) }

        /// Whether group `type` was negotiated and its LIST_QUERY/LIST_USE failed (without
        /// copying the entry).
        func isUnavailable(_ type: UInt16) -> Bool {
            for index in entries.indices where entries[index].type == type { return entries[index].commands.unavailable != nil }
            return false
        }

        /// Whether group `type` is available and has `opcode` in use (the per-command check,
        /// without copying the entry).
        func admits(_ type: UInt16, _ opcode: AdminOpcode) -> Bool {
            for index in entries.indices where entries[index].type == type {
                return entries[index].commands.unavailable == nil && entries[index].commands.inUse.contains(opcode)
            }
            return false
        }
    }

    enum State { case starting, running, failed(AdminError), closed }

    /// The PF whose admin queue this is.
    public let address: PCIAddress
    package let transport: ModernPCITransport
    let allocator: any DMAAllocator
    /// The options the driver was opened with.
    public let options: Options
    let lock = Lock()
    @exclusivity(unchecked) var state: State = .starting
    @exclusivity(unchecked) var queue: SplitVirtqueue?
    @exclusivity(unchecked) var notifier: QueueNotifier?
    @exclusivity(unchecked) var slab: DMARegion?
    /// Command slots: the DMA buffers of each command, who waits for it, the head on the ring.
    @exclusivity(unchecked) var slotTable = SlotTable()
    /// Tasks waiting for a free slot.
    @exclusivity(unchecked) var waiters: [Waiter] = []
    /// Waiters whose wait for a slot outlasted their timeout.
    var expiredWaiters = Set<UInt64>()
    /// The last token handed out (``newToken()``): taken without the lock, so a caller knows
    /// its command's token (for cancellation) before the one hold that admits and places it.
    let lastToken = Atomic<UInt64>(1)
    @exclusivity(unchecked) var pollerRunning = false
    /// Calls of ``close()`` so far: a bring-up that sees the count change while it runs was
    /// closed under it (its register writes are not under the lock) and does not go on.
    @exclusivity(unchecked) var closes: UInt64 = 0
    /// Bring-ups running (``bringUp()``): while one runs, a close resets the device even
    /// when the driver reads as closed already.
    @exclusivity(unchecked) var bringUps = 0
    /// The poller sleeps on the clock (nothing moved for a while): a new command rings the
    /// doorbell itself instead of leaving it to the poller.
    @exclusivity(unchecked) var pollerSleeping = false
    @exclusivity(unchecked) var poller: Task<Void, Never>?
    /// Chains were published without a notify; the poller sends one.
    @exclusivity(unchecked) var kickPending = false
    /// Callers polling the used ring themselves (``spinWhileProgressing(remaining:)``).
    @exclusivity(unchecked) var spinners = 0
    /// When the clock work (deadlines, the device's health) is next due, for the poller and
    /// polling callers alike: whoever polls when it is due does it.
    @exclusivity(unchecked) var nextClockWork: UInt64 = 0
    /// When a polling caller last reaped a completion: progress, as the poller sees it.
    @exclusivity(unchecked) var lastCallerReap: UInt64 = 0
    /// The hand-off between the poller and the callers it resumes (``handOffToResumedCaller()``):
    /// the poller waiting for a resumed caller to run.
    @exclusivity(unchecked) var handOff = PollerHandOff()
    /// A command's caller was resumed and has not run since: the poller may wait for it.
    /// Written with the lock held, and before the resume; read without it by every caller
    /// after its wait (``callerRuns()``), so that most callers take no lock there.
    let callerResumed = Atomic<Bool>(false)
    @exclusivity(unchecked) var counters = AdminCounters()
    @exclusivity(unchecked) var groups = GroupTable()
    /// A LIST_USE holds the queue alone: no other command is outstanding while it is.
    @exclusivity(unchecked) var exclusive = false
    var exclusiveWaiters: [CheckedContinuation<Void, Never>] = []
    /// The rings and command slots could not be released safely (the device did not
    /// confirm its reset and bus mastering could not be cleared): kept for good.
    package internal(set) var quarantinedBytes = 0
    /// Bus Master Enable was cleared for a device that did not reset (guarded by `lock`):
    /// the next bring-up sets it again.
    var busMasterCleared = false
    var adminQueueIndex = 0
    var opcodeNames: [AdminOpcode: String] = [:]
    @exclusivity(unchecked) var traceHandler: (@Sendable (AdminTraceEvent) -> Void)?

    /// The driver's time source (``Options/clock``).
    public var clock: any AdminClock { options.clock }

    /// Opens the admin queue of the group owner behind `transport`.
    ///
    /// - Throws: ``AdminError/adminVQNotOffered(device:)`` and
    ///   ``AdminError/noAdminQueue(device:reason:)`` (the device is left reset), transport,
    ///   DMA and command errors of the LIST_QUERY/LIST_USE exchange.
    package static func open(transport: ModernPCITransport, allocator: any DMAAllocator, options: Options = Options(),
                            opcodeNames: [AdminOpcode: String] = [:],
                            trace: (@Sendable (AdminTraceEvent) -> Void)? = nil) async throws(AdminError) -> AdminQueueDriver {
        let driver = AdminQueueDriver(transport: transport, allocator: allocator, options: options)
        driver.opcodeNames = opcodeNames
        driver.traceHandler = trace
        // Counted from the driver's creation: from then on an interrupt's close may reach it.
        driver.lock.withLock { driver.bringUps += 1 }
        try await driver.start(closesBefore: 0)
        return driver
    }

    init(transport: ModernPCITransport, allocator: any DMAAllocator, options: Options) {
        self.address = transport.address
        self.transport = transport
        self.allocator = allocator
        self.options = options
        openDrivers.add(self)
    }

    /// Closes every admin-queue driver of this process that is still alive (each PF reset,
    /// or its memory quarantined): what an interrupted program does before it exits, so
    /// that no device keeps writing into memory the process is about to give back.
    /// - Returns: each driver's PF with the quarantine error, if it came to that, and the
    ///   device status read after the close (0 once the reset is confirmed).
    public static func closeAllOpen() -> [(device: PCIAddress, quarantine: AdminError?, status: DeviceStatus)] {
        openDrivers.all().map { driver in
            let quarantine = driver.close()
            return (driver.address, quarantine, driver.transport.status)
        }
    }

    deinit {
        openDrivers.remove(self)
        // Only memory of a device known to be quiet is here (quarantined memory was moved
        // to the quarantine list and is never released).
        if let slab { allocator.release(slab) }
    }

    /// Prints or records every command's bytes (the CLI's `--trace`).
    package func setTrace(_ handler: (@Sendable (AdminTraceEvent) -> Void)?) { lock.withLock { traceHandler = handler } }

    /// The spec or plugin name of an opcode.
    public func name(of opcode: AdminOpcode) -> String { opcodeName(opcode) }

    /// A command's name in errors and logs: the plugin's, else the spec's. `opcodeNames` is
    /// set once by `open`, before any command, and only read after: no lock is needed.
    func opcodeName(_ opcode: AdminOpcode) -> String { opcodeNames[opcode] ?? opcode.specName }

    /// Opcodes the device listed in LIST_QUERY, over all negotiated groups.
    public var supported: AdminOpcodeBitmap {
        lock.withLock { groups.values.reduce(AdminOpcodeBitmap()) { $0.union($1.supported.opcodes) } }
    }
    /// Opcodes enabled with LIST_USE, over all negotiated groups.
    public var inUse: AdminOpcodeBitmap {
        lock.withLock { groups.values.reduce(AdminOpcodeBitmap()) { $0.union($1.inUse.opcodes) } }
    }
    /// Opcodes group `group` lists (empty while it is unavailable).
    public func supported(in group: AdminGroupType) -> AdminOpcodeBitmap { lock.withLock { groups[group.rawValue]?.supported ?? AdminOpcodeBitmap() } }
    /// Opcodes enabled in group `group`.
    public func inUse(in group: AdminGroupType) -> AdminOpcodeBitmap { lock.withLock { groups[group.rawValue]?.inUse ?? AdminOpcodeBitmap() } }
    /// Why group `group` cannot be used now (its LIST_QUERY/LIST_USE failed), if so.
    public func unavailability(of group: AdminGroupType) -> AdminError? { lock.withLock { groups[group.rawValue]?.unavailable } }
    /// What the driver has done so far (commands, timeouts, notifies, peak in flight).
    public var statistics: AdminCounters { lock.withLock { counters } }
    /// The driver stopped after DEVICE_NEEDS_RESET, surprise removal or a protocol
    /// violation, and waits for ``reinitialize()``.
    public var isFailed: Bool {
        lock.withLock {
            if case .failed = state { return true }
            return false
        }
    }
    /// Commands the device can hold at once (queue size / 2).
    package var slotCount: Int { lock.withLock { slotTable.slots.count } }
}
