import Logging
import MSIXResourceManager
import CapabilitiesResourceManager
import DevicePartsResourceManager
import FeatureBitsResourceManager
import LegacyAccessResourceManager
import ResourceObjectsResourceManager
import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioSystem
import VirtioProvisioning
import VirtioSpec

/// The built-in plugins (statically registered, as an appliance links them).
public func builtInPlugins() -> [any AdminCommandHandler] {
    [MSIXResourceManager(), FeatureBitsResourceManager(), CapabilitiesResourceManager(), DevicePartsResourceManager(),
     ResourceObjectsResourceManager(), LegacyAccessResourceManager()]
}

/// What handling one event did, as the helper logs it and the service answers it.
public struct EventOutcome: Sendable {
    /// One line: what was done to which function, or why not.
    public var summary: String
    /// Whether the event was handled as the policy says (the helper's exit status).
    public var succeeded: Bool
    /// An outcome with this summary.
    public init(summary: String, succeeded: Bool) {
        self.summary = summary
        self.succeeded = succeeded
    }
}

extension EventOutcome {
    /// This outcome after the VF's driver was let go: a failed `drivers_probe` write fails
    /// the event (the VF is left without its driver) and says why.
    func probed(_ address: PCIAddress, _ failure: SystemCallError?) -> EventOutcome {
        guard let failure else { return self }
        let summary = String(self.summary.dropLast(self.summary.hasSuffix(".") ? 1 : 0))
        return EventOutcome(summary: summary + "; but letting \(address) go to its driver failed (drivers_probe: \(failure)), so it has none", succeeded: false)
    }
}

/// Handles udev events for virtio functions by a provisioning policy: a PF that appears
/// gets `sriov_drivers_autoprobe = 0` (its VFs wait for provisioning); a VF that appears is
/// provisioned through its PF's admin queue, then let go to its driver (`drivers_probe`).
///
/// As the service (`keepOpen`), it holds one ``AdminGroup`` per PF for its lifetime — the
/// PF is reset once, when first opened, and again only to recover from
/// DEVICE_NEEDS_RESET — and VF events that arrive while a batch runs are coalesced into the
/// next batch, whose commands go in flight together (as many VFs at once as the queue
/// holds commands). Without `keepOpen` (the helper when no service runs) each event opens
/// the PF under its lock and closes it again, and a PF whose VFs have drivers is refused,
/// since opening would reset it.
public final class ProvisioningService: @unchecked Sendable {
    /// Where functions are found and how PFs are held.
    public struct Options: Sendable {
        /// The sysfs view events are resolved in.
        public var sysfsRoot = "/sys"
        /// Hold each PF's admin queue open for the service's lifetime (`false`: open and close it per event, as the helper does).
        public var keepOpen = true
        /// How each PF is opened.
        public var groupOptions = AdminGroup.Options()
        /// The clock of the lock wait and the timings in log lines (a test's manual clock
        /// moves it on); it replaces `groupOptions.clock`.
        public var clock: any ServiceClock = SystemServiceClock()
        /// How many `drivers_probe` writes run at once, at most (each on a thread of the
        /// service's own, since the kernel probes the driver inside the write). Events that
        /// come together queue for these threads instead of starting one each.
        public var probeThreads = 2
        /// The service's defaults: `/sys`, PFs kept open.
        public init() {}
    }

    /// The policy events are handled by.
    public let policy: ProvisioningPolicy
    /// The options the service was made with.
    public let options: Options
    /// Where each event's outcome is logged (swift-log).
    public let logger: Logger
    let opener: @Sendable (PCIAddress) -> any PFOpener
    let registry: @Sendable () -> PluginRegistry
    /// Guards the state below; its condition wakes events waiting for a PF being read.
    let lock = ConditionLock()
    var workers: [PCIAddress: PFWorker] = [:]
    var pfCache: [PCIAddress: PFInfo] = [:]
    /// PFs being read (``pfInfo(_:)``), and how many PF reads there were.
    var pfReading: Set<PCIAddress> = []
    var pfReads = 0
    var eventReads = (byLink: 0, inFull: 0)
    /// Where `drivers_probe` is written: at most ``Options/probeThreads`` writes at once, each
    /// thread holding the file open for the writes it runs in a row.
    let prober: BlockingQueue<AttributeFile>

    /// A service of `policy`; `opener` reaches a PF, `registry` gives the plugins each PF is opened with.
    public init(policy: ProvisioningPolicy, options: Options, logger: Logger,
                opener: @escaping @Sendable (PCIAddress) -> any PFOpener,
                registry: @escaping @Sendable () -> PluginRegistry = { PluginRegistry(builtInPlugins()) }) {
        self.policy = policy
        self.options = options
        self.logger = logger
        self.opener = opener
        self.registry = registry
        let probePath = options.sysfsRoot + "/bus/pci/drivers_probe"
        prober = BlockingQueue(maxThreads: options.probeThreads, open: { AttributeFile(path: probePath) }, close: { $0.close() })
    }

    var enumerator: SysfsEnumerator { SysfsEnumerator(root: options.sysfsRoot) }

    /// Handles one validated event and calls `answer` with its outcome once the work is done
    /// (for a VF: provisioned, the state saved, its driver probed). The `add` of a VF of a PF
    /// the service has read is queued for its PF's next batch on the caller's thread, with no
    /// task of its own (a thousand events at once would queue a thousand tasks ahead of the
    /// batch that serves them); any other event is handled in a task.
    package func handle(_ event: UdevEvent, answer: @escaping @Sendable (EventOutcome) -> Void) {
        if event.action == .add, let (pf, index) = knownVF(event.address) {
            lock.withLock { eventReads.byLink += 1 }
            provisionVF(event.address, pf: pf, index: index, start: options.clock.nowNanoseconds, answer: answer)
            return
        }
        Task { answer(await self.handle(event)) }
    }

    /// Handles one validated event.
    public func handle(_ event: UdevEvent) async -> EventOutcome {
        let clock = options.clock
        let start = clock.nowNanoseconds
        switch event.action {
        case .remove:
            let worker = lock.withLock { () -> PFWorker? in
                pfCache[event.address] = nil
                return workers.removeValue(forKey: event.address)
            }
            if let worker { await worker.close() }
            logger.info("forgot \(event.address) (removed)")
            return EventOutcome(summary: "forgot \(event.address)", succeeded: true)
        case .bind, .unbind, .change:
            // A PF's `change` (NumVFs written) may move its VFs: read its layout again.
            if event.action == .change { lock.withLock { pfCache[event.address] = nil } }
            logger.debug("ignored \(event.action.rawValue) of \(event.address)")
            return EventOutcome(summary: "ignored \(event.action.rawValue)", succeeded: true)
        case .add:
            break
        }
        // A VF of a PF already read: one link read instead of the VF's attributes.
        if let (pf, index) = knownVF(event.address) {
            lock.withLock { eventReads.byLink += 1 }
            return await provisionVF(event.address, pf: pf, index: index, start: start)
        }
        lock.withLock { eventReads.inFull += 1 }
        let function: VirtioFunction
        do { function = try enumerator.function(at: event.address) } catch {
            if case .notVirtio = error { return EventOutcome(summary: "ignored: \(event.address) is not a virtio function", succeeded: true) }
            logger.error("\(error.description)")
            return EventOutcome(summary: error.description, succeeded: false)
        }
        switch function.role {
        case .pf:
            lock.withLock { pfCache[function.address] = nil }
            return preparePF(function)
        case .function:
            return EventOutcome(summary: "ignored: \(event.address) has no SR-IOV role", succeeded: true)
        case .vf:
            guard let pfAddress = function.physfn else { return EventOutcome(summary: "\(function.address): VF without physfn", succeeded: false) }
            var pf: PFInfo
            do { pf = try pfInfo(pfAddress) } catch { return EventOutcome(summary: error.description, succeeded: false) }
            // A PF read before its VFs moved (NumVFs written again): read it once more.
            if let index = vfIndex(of: function.address, under: pf), !virtfnLink(of: pf, index, names: function.address) {
                lock.withLock { pfCache[pfAddress] = nil }
                do { pf = try pfInfo(pfAddress) } catch { return EventOutcome(summary: error.description, succeeded: false) }
            }
            guard let index = vfIndex(of: function.address, under: pf), virtfnLink(of: pf, index, names: function.address) else {
                return EventOutcome(summary: "\(function.address): not a VF of PF \(pfAddress) by its VF layout and virtfn links", succeeded: false)
            }
            return await provisionVF(function.address, pf: pf, index: index, start: start)
        }
    }

    /// The PF and index of `address` when it is a VF of a PF the service has read (and
    /// kept): by the PF's VF layout, within its VFs, and confirmed by the PF's `virtfnN`
    /// link alone (one link read, not the VF's attributes: a VF has its PF's vendor id and
    /// the PF's `sriov_vf_device`, checked once with the PF). Nil sends the event the long way.
    func knownVF(_ address: PCIAddress) -> (PFInfo, Int)? {
        guard options.keepOpen else { return nil }
        let candidates = lock.withLock { pfCache.values.filter { $0.vfsAreVirtio && $0.layout != nil && $0.function.address.domain == address.domain } }
        for pf in candidates {
            // The PF's own `virtfnN` link names the VF: both the PF and the index are
            // confirmed (a layout read before NumVFs changed cannot send commands to another VF).
            guard let index = vfIndex(of: address, under: pf), index < pf.function.virtfns.count, virtfnLink(of: pf, index, names: address)
            else { continue }
            return (pf, index)
        }
        return nil
    }

    /// Whether the PF's `virtfn<index>` link names `address` (one link read).
    func virtfnLink(of pf: PFInfo, _ index: Int, names address: PCIAddress) -> Bool {
        Sys.readLink(enumerator.directory(of: pf.function.address) + "/virtfn\(index)")?.split(separator: "/").last.map(String.init) == address.description
    }

    /// The PFs the service keeps read (for tests).
    package var cachedPFs: [PCIAddress] { lock.withLock { Array(pfCache.keys) } }

    /// A PF appeared: hold its future VFs' drivers back (`sriov_drivers_autoprobe = 0`).
    func preparePF(_ pf: VirtioFunction) -> EventOutcome {
        guard let rule = policy.rule(for: pf) else { return EventOutcome(summary: "no policy matches PF \(pf.address)", succeeded: true) }
        guard rule.holdVFDrivers else { return EventOutcome(summary: "PF \(pf.address): VF drivers not held (hold-vf-drivers = false)", succeeded: true) }
        let path = enumerator.directory(of: pf.address) + "/" + SysfsAttribute.sriovDriversAutoprobe
        do { try Sys.writeSmallFile(path, "0") } catch {
            logger.error("PF \(pf.address): \(error)")
            return EventOutcome(summary: "cannot hold VF drivers of \(pf.address)", succeeded: false)
        }
        logger.info("prepared PF \(pf.address): sriov_drivers_autoprobe=0 (VFs wait for provisioning)")
        return EventOutcome(summary: "prepared PF \(pf.address)", succeeded: true)
    }

    /// What the service keeps of a PF between its VFs' events (read once, not per event:
    /// a PF with 1024 VFs has 1024 `virtfn` links).
    struct PFInfo: Sendable {
        var function: VirtioFunction
        var rule: PFRule?
        var layout: (offset: Int, stride: Int)?
        /// The PF's `sriov_vf_device` is a virtio device id (its VFs are virtio functions).
        var vfsAreVirtio = false
    }

    /// The PF as the service keeps it, read once: the first events of its VFs that come
    /// together (each in a task of its own) wait for one read rather than each reading the
    /// PF (a PF with 1024 VFs has 1024 `virtfn` links). A read that fails is not kept: each
    /// waiter then reads for itself. The wait blocks its thread only while another thread
    /// reads sysfs, which needs no task to finish.
    func pfInfo(_ address: PCIAddress) throws(LinuxError) -> PFInfo {
        let cached = lock.withLock { () -> PFInfo? in
            while true {
                if let cached = pfCache[address] { return cached }
                guard pfReading.contains(address) else {
                    pfReading.insert(address)
                    pfReads += 1
                    return nil
                }
                lock.wait()
            }
        }
        if let cached { return cached }
        defer {
            lock.withLock {
                pfReading.remove(address)
                lock.broadcast()
            }
        }
        let function = try enumerator.function(at: address)
        let vfDevice = (try? Sys.readText(enumerator.directory(of: address) + "/" + SysfsAttribute.sriovVFDevice))
            .flatMap { UInt16($0.trimmingPrefix("0x").prefix { $0.isHexDigit }, radix: 16) }
        let info = PFInfo(function: function, rule: policy.rule(for: function), layout: enumerator.vfLayout(of: address),
                          vfsAreVirtio: vfDevice.map { PCIIdentity.isVirtio(vendorID: function.vendorID, deviceID: $0) } ?? false)
        lock.withLock { pfCache[address] = info }
        return info
    }

    /// The VF's index (`virtfnN`) under its PF: from the PF's VF layout (the kernel's own
    /// rule), or, without one, from the PF's `virtfn` links.
    func vfIndex(of vf: PCIAddress, under pf: PFInfo) -> Int? {
        if let layout = pf.layout, vf.domain == pf.function.address.domain {
            let distance = Int(vf.routingID) - Int(pf.function.address.routingID) - layout.offset
            if distance >= 0, distance % layout.stride == 0 { return distance / layout.stride }
            return nil
        }
        return pf.function.virtfns.first { $0.value == vf }?.key
            ?? (try? enumerator.function(at: pf.function.address))?.virtfns.first { $0.value == vf }?.key
    }

    /// Provisions VF `index` (at `address`) of `pf` and logs the outcome with the time since `start`.
    func provisionVF(_ address: PCIAddress, pf: PFInfo, index: Int, start: UInt64) async -> EventOutcome {
        await withCheckedContinuation { continuation in
            provisionVF(address, pf: pf, index: index, start: start) { continuation.resume(returning: $0) }
        }
    }

    /// Provisions VF `index` (at `address`) of `pf`, probes its driver and logs the outcome
    /// with the time since `start`; then calls `answer` (on the thread that finished the
    /// work: the prober's after a probe, else the one that saved the batch's state).
    func provisionVF(_ address: PCIAddress, pf: PFInfo, index: Int, start: UInt64, answer: @escaping @Sendable (EventOutcome) -> Void) {
        let finish: @Sendable (EventOutcome) -> Void = { [self] outcome in
            let metadata: Logger.Metadata = ["ms": "\(options.clock.elapsed(since: start).milliseconds)"]
            if outcome.succeeded { logger.info("\(outcome.summary)", metadata: metadata) } else { logger.error("\(outcome.summary)", metadata: metadata) }
            answer(outcome)
        }
        let pfAddress = pf.function.address
        let rule = pf.rule
        guard let rule, let desired = policy.desired(for: index, under: rule) else {
            probe(address, hold: rule?.holdVFDrivers ?? false) { failure in
                finish(EventOutcome(summary: "no policy for PF \(pfAddress) VF \(index); nothing to do", succeeded: true).probed(address, failure))
            }
            return
        }
        let worker = worker(for: pfAddress)
        let name = "\(address) (PF \(pfAddress) VF \(index))"
        worker.submit(VFRequest(vf: index, desired: desired)) { [self] result in
            finishVF(address, result: result, name: name, desired: desired, rule: rule, worker: worker, finish: finish)
        }
    }

    /// The rest of a VF's event once its batch is done: its outcome in words, its driver
    /// probed (unless it failed and the policy says otherwise), the one-shot helper's PF let go.
    func finishVF(_ address: PCIAddress, result: Result<VFOutcome, VirtioAdminError>, name: String, desired: DesiredResources, rule: PFRule,
                  worker: PFWorker, finish: @escaping @Sendable (EventOutcome) -> Void) {
        let outcome: EventOutcome
        switch result {
        case .success(let vf):
            if let error = vf.error {
                outcome = EventOutcome(summary: "provisioning \(name) failed: \(error)\(vf.partialDescription)", succeeded: false)
            } else {
                let text = vf.changes.isEmpty ? "already as the policy says (no change)" : vf.changes.map(\.what).joined(separator: "; ")
                outcome = EventOutcome(summary: "provisioned \(name): \(text)", succeeded: true)
            }
        case .failure(let error):
            outcome = EventOutcome(summary: "provisioning \(name) failed: \(error)", succeeded: false)
        }
        // The one-shot helper lets the PF go only after the VF's driver was probed, so that
        // the next helper's in-use check sees it.
        let done: @Sendable (EventOutcome) -> Void
        if options.keepOpen {
            done = finish
        } else {
            done = { outcome in Task { await worker.close(); finish(outcome) } }
        }
        if outcome.succeeded || desired.onFailure == .bindAnyway {
            probe(address, hold: rule.holdVFDrivers) { failure in done(outcome.probed(address, failure)) }
        } else if desired.onFailure == .keepUnbound {
            let summary = String(outcome.summary.dropLast(outcome.summary.hasSuffix(".") ? 1 : 0))
            done(EventOutcome(summary: summary + "; the VF is left without a driver (on-failure = keep-unbound).", succeeded: false))
        } else {
            done(outcome)
        }
    }

    /// Lets the VF's driver bind now that it is provisioned (it was held back), then calls
    /// `then` with why the write failed, if it did (the device is gone, or the kernel refused:
    /// the VF is left without a driver). The kernel probes the driver inside this write, so it
    /// runs on one of the prober's threads (at most ``Options/probeThreads`` at once), and so
    /// does `then`.
    func probe(_ address: PCIAddress, hold: Bool, then: @escaping @Sendable (SystemCallError?) -> Void) {
        guard hold else { return then(nil) }
        prober.submit { [self] (file: AttributeFile) in
            do throws(SystemCallError) { try file.write(address.description) } catch {
                logger.warning("drivers_probe for \(address): \(error)")
                return then(error)
            }
            then(nil)
        }
    }

    func worker(for pf: PCIAddress) -> PFWorker {
        lock.withLock {
            if let worker = workers[pf] { return worker }
            let worker = PFWorker(service: self, pf: pf)
            if options.keepOpen { workers[pf] = worker }
            return worker
        }
    }

    /// Batches run on `pf`'s admin queue so far (0 when the service holds no queue for it).
    public func batchCount(pf: PCIAddress) async -> Int {
        guard let worker = lock.withLock({ workers[pf] }) else { return 0 }
        return worker.batches
    }

    /// VF requests waiting for `pf`'s next batch, and the events waiting on them (tests
    /// watch a batch form).
    func queued(pf: PCIAddress) async -> (requests: Int, events: Int) {
        guard let worker = lock.withLock({ workers[pf] }) else { return (0, 0) }
        return worker.queued
    }

    /// How `add` events found their function so far: by the PF's `virtfnN` link alone (a VF
    /// of a PF the service has read), or by reading the function's attributes in full.
    package var addEventReads: (byLink: Int, inFull: Int) { lock.withLock { eventReads } }

    /// Reads of a PF's attributes and links so far (``pfInfo(_:)``).
    package var pfReadCount: Int { lock.withLock { pfReads } }

    /// `drivers_probe` writes so far: the threads started for them and the most at once.
    package var probeThreads: (started: Int, peakConcurrency: Int) { (prober.threadsStarted, prober.peakConcurrency) }

    /// PFs whose admin queue is open now.
    public var openPFs: [PCIAddress] { lock.withLock { Array(workers.keys) } }

    /// Finishes what is in flight, saves and closes every PF's admin queue.
    public func shutDown() async {
        let all = lock.withLock { () -> [PFWorker] in
            defer { workers = [:] }
            return Array(workers.values)
        }
        for worker in all { await worker.close() }
    }
}

extension ProvisioningChange {
    /// The change without the VF (the log line names the VF already).
    var what: String {
        switch kind {
        case let .msixVectors(from, to): "MSI-X vectors \(from) -> \(to)"
        case let .features(from, to): "features \(from.hexMask) -> \(to.hexMask)"
        }
    }
}

extension VFOutcome {
    /// For a failed VF: what was changed before the failure and what it holds now.
    package var partialDescription: String {
        var parts: [String] = []
        if !changes.isEmpty { parts.append("changed before the failure: " + changes.map(\.what).joined(separator: "; ")) }
        if let holding {
            parts.append("it now holds " + [holding.msixVectors.map { "\($0) MSI-X vectors" } ?? "unknown MSI-X vectors",
                                            holding.features.map { "features \($0.hexMask)" } ?? "unknown features"].joined(separator: ", "))
        }
        return parts.isEmpty ? "" : " (" + parts.joined(separator: "; ") + ")"
    }
}

extension Duration {
    /// Milliseconds with one decimal, for log lines.
    var milliseconds: String {
        let tenths = (components.seconds * 10_000 + components.attoseconds / 100_000_000_000_000)
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// One PF's admin queue and its batches. VF requests that arrive while a batch runs wait
/// for the next one (a VF already waiting is not queued twice); each batch has its commands
/// in flight together (as many VFs at once as the queue holds commands) and is followed by
/// one checkpoint (the model saves its state once per batch, not per command), which runs while the next batch's commands are in
/// flight: the snapshot it saves may already hold some of that batch's changes. Requests
/// are queued under a lock from any thread (``submit(_:_:)``, no task per request); one task
/// at a time runs the batches.
final class PFWorker: @unchecked Sendable {
    typealias Completion = @Sendable (Result<VFOutcome, VirtioAdminError>) -> Void
    unowned let service: ProvisioningService
    let pf: PCIAddress
    let lock = Lock()
    // Guarded by `lock`: the next batch's requests (and where each VF's is), whether the
    // batch task runs, who waits for it to fall idle, whether the worker is closed.
    var pending: [(request: VFRequest, waiters: [Completion])] = []
    var position: [Int: Int] = [:]
    var running = false
    var idleWaiters: [CheckedContinuation<Void, Never>] = []
    var closed = false
    var batchCount = 0
    /// Touched only by the batch task, and by ``close()`` once the worker is idle.
    var group: AdminGroup?
    /// Where batches' states are saved and their events answered, in batch order.
    let saver = BlockingQueue<Void>(maxThreads: 1, open: {}, close: { _ in })
    /// The last batch's save (guarded by `lock`): the next save and ``close()`` wait for it.
    var lastSave: Task<Void, Never>?

    init(service: ProvisioningService, pf: PCIAddress) {
        self.service = service
        self.pf = pf
    }

    /// Queues `request` for the next batch; `completion` is called with its outcome once the
    /// batch is done and its state saved (on the thread that saved it), or at once when the
    /// worker is closed.
    func submit(_ request: VFRequest, _ completion: @escaping Completion) {
        let start = lock.withLock { () -> Bool? in
            guard !closed else { return nil }
            if let index = position[request.vf], pending[index].request == request {
                pending[index].waiters.append(completion)
            } else {
                position[request.vf] = pending.count
                pending.append((request, [completion]))
            }
            guard !running else { return false }
            running = true
            return true
        }
        switch start {
        case nil: completion(.failure(.closed(pf: pf)))
        case true?: Task { await self.drain() }
        case false?: break
        }
    }

    func provision(_ request: VFRequest) async throws(VirtioAdminError) -> VFOutcome {
        try await withCheckedContinuation { (continuation: CheckedContinuation<Result<VFOutcome, VirtioAdminError>, Never>) in
            submit(request) { continuation.resume(returning: $0) }
        }.get()
    }

    var batches: Int { lock.withLock { batchCount } }
    var queued: (requests: Int, events: Int) { lock.withLock { (pending.count, pending.reduce(0) { $0 + $1.waiters.count }) } }

    func drain() async {
        while true {
            let batch = lock.withLock { () -> [(request: VFRequest, waiters: [Completion])] in
                defer {
                    pending = []
                    position = [:]
                }
                return pending
            }
            if batch.isEmpty {
                let waiters = lock.withLock { () -> [CheckedContinuation<Void, Never>]? in
                    // A request that came since the batch was taken runs in the next one.
                    guard pending.isEmpty else { return nil }
                    running = false
                    defer { idleWaiters = [] }
                    return idleWaiters
                }
                guard let waiters else { continue }
                for waiter in waiters { waiter.resume() }
                return
            }
            let provisioned = await provision(batch.map(\.request))
            // A batch's state is saved, and its events answered, while the next batch's
            // commands are in flight: the admin queue does not stand idle during a save. One
            // save at a time, in batch order (an earlier snapshot never overwrites a later one);
            // the save is file I/O, so it runs on a thread of its own, not the pool's.
            await lock.withLock { lastSave }?.value
            let save = Task { [saver] in
                await saver.run { _ in
                    let results = self.save(provisioned)
                    for (item, result) in zip(batch, results) { for waiter in item.waiters { waiter(result) } }
                }
            }
            lock.withLock { lastSave = save }
        }
    }

    /// A batch's outcomes before its state is saved.
    struct ProvisionedBatch {
        var requests: [VFRequest]
        var outcomes: Result<[VFOutcome], VirtioAdminError>
        var group: AdminGroup?
        var start: UInt64
        var number: Int
    }

    /// Runs a batch's commands, in flight together, on the PF's queue (opened first if need be).
    func provision(_ requests: [VFRequest]) async -> ProvisionedBatch {
        let clock = service.options.clock
        let start = clock.nowNanoseconds
        let group: AdminGroup
        do { group = try await openGroup() } catch { return ProvisionedBatch(requests: requests, outcomes: .failure(error), start: start, number: 0) }
        do { try await group.recoverIfNeeded() } catch { return ProvisionedBatch(requests: requests, outcomes: .failure(error), start: start, number: 0) }
        let number = lock.withLock { () -> Int in
            batchCount += 1
            return batchCount
        }
        let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
        var outcomes = await provisioner.apply(requests)
        // The device asked for a reset mid-batch: recover once and run the failed VFs again;
        // a VF's changes are those of both attempts.
        if outcomes.contains(where: { $0.error?.needsRecovery == true }), (try? await group.recoverIfNeeded()) == true {
            let again = outcomes.indices.filter { outcomes[$0].error?.needsRecovery == true }
            let retried = await provisioner.apply(again.map { requests[$0] })
            for (index, outcome) in zip(again, retried) {
                var merged = outcome
                merged.changes = outcomes[index].changes + outcome.changes
                outcomes[index] = merged
            }
        }
        return ProvisionedBatch(requests: requests, outcomes: .success(outcomes), group: group, start: start, number: number)
    }

    /// Saves the state after `batch` (the model's state file; nothing for hardware) and
    /// gives each VF's result: a batch whose state was not saved fails as a whole.
    func save(_ batch: ProvisionedBatch) -> [Result<VFOutcome, VirtioAdminError>] {
        guard case .success(let outcomes) = batch.outcomes, let group = batch.group else {
            guard case .failure(let error) = batch.outcomes else { return [] }
            return batch.requests.map { _ in .failure(error) }
        }
        var saved = "state saved"
        var saveError: VirtioAdminError?
        do { try group.checkpoint() } catch {
            service.logger.error("PF \(pf): \(error)")
            saved = "state NOT saved"
            saveError = error
        }
        let failed = outcomes.filter { !$0.succeeded }.count
        let message: Logger.Message = "batch \(batch.number) on PF \(pf): \(batch.requests.count) VFs, \(failed) failed, \(saved)"
        let metadata: Logger.Metadata = ["ms": "\(service.options.clock.elapsed(since: batch.start).milliseconds)", "peakInFlight": "\(group.driver.statistics.peakInFlight)"]
        if service.options.keepOpen { service.logger.info(message, metadata: metadata) } else { service.logger.debug(message, metadata: metadata) }
        // An event is answered "ok" only when its batch was saved.
        if let saveError { return batch.requests.map { _ in .failure(saveError) } }
        return outcomes.map { .success($0) }
    }

    func openGroup() async throws(VirtioAdminError) -> AdminGroup {
        if let group { return group }
        var options = service.options.groupOptions
        // The service opens each PF once and keeps it: that one reset is the point. The
        // one-shot helper must not reset a PF whose VFs are in use.
        options.refuseWhenVFsInUse = !service.options.keepOpen
        options.lockWait = service.options.keepOpen ? .seconds(30) : nil
        options.clock = service.options.clock
        let opened = try await AdminGroup.open(opener: service.opener(pf), registry: service.registry(), options: options)
        if service.options.keepOpen { service.logger.info("opened the admin queue of PF \(pf) (kept open)", metadata: ["mode": "\(opened.access.mode)"]) }
        if let error = opened.handshakeError { service.logger.warning("PF \(pf): the capability handshake after bring-up failed (the queue is open all the same): \(error)") }
        group = opened
        return opened
    }

    /// Refuses new requests, waits for the batch in flight (and those queued behind it) and
    /// the last save, then closes the queue.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = lock.withLock { () -> Bool in
                closed = true
                guard running || !pending.isEmpty else { return true }
                idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
        await lock.withLock { lastSave }?.value
        group?.close()
        if let error = (group?.opener as? SimulatedPFOpener)?.lastSaveError { service.logger.error("PF \(pf): \(error)") }
        group = nil
    }
}

extension AdminError {
    /// The driver stopped and the queue must be re-initialised before the next command.
    var needsRecovery: Bool {
        switch self {
        case .deviceNeedsReset, .notRunning: true
        default: false
        }
    }
}
