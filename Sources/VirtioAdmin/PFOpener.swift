import PCIConfig
import VirtioLinux
import VirtioSimulator
import VirtioSystem
import VirtioTransport

/// What an opener hands the admin-queue owner: the PF's config space, its BARs as
/// register spaces, DMA memory the device can reach, and how that was done, in words.
public struct PFAccess: @unchecked Sendable {
    package var config: PCIConfigSpace
    package var bars: [Int: any RegisterSpace]
    package var allocator: any DMAAllocator
    /// How the PF was reached, in words, as `probe` prints it.
    public var mode: String
    /// DMA addresses are IOVAs the device must translate (VFIO): the admin driver then
    /// requires VIRTIO_F_ACCESS_PLATFORM.
    public var iovaDMA: Bool
    /// Clears the PF's Bus Master Enable (real PFs), for a device that does not reset.
    public var disableBusMaster: (@Sendable () -> Bool)?
    /// Sets it; the admin driver calls it at every bring-up once the PF's reset is confirmed.
    public var enableBusMaster: (@Sendable () -> Bool)?
    package init(config: PCIConfigSpace, bars: [Int: any RegisterSpace], allocator: any DMAAllocator, mode: String, iovaDMA: Bool = false,
                disableBusMaster: (@Sendable () -> Bool)? = nil, enableBusMaster: (@Sendable () -> Bool)? = nil) {
        self.config = config
        self.bars = bars
        self.allocator = allocator
        self.mode = mode
        self.iovaDMA = iovaDMA
        self.disableBusMaster = disableBusMaster
        self.enableBusMaster = enableBusMaster
    }
}

/// How a PF's registers and DMA memory are reached: the only place where a real PF and
/// the device model differ. Everything above it — the sysfs view, the in-use check, the
/// admin queue, provisioning, logging and counters — is one code path (``AdminGroup``).
public protocol PFOpener: AnyObject, Sendable {
    /// The PF this opener reaches.
    var address: PCIAddress { get }
    /// The sysfs root whose tree shows the PF and its VFs (`/sys` on a host).
    var sysfsRoot: String { get }
    /// Takes the PF's ownership lock, waiting at most `wait` on `clock` (`nil`: as long as it
    /// takes), without blocking a thread of the cooperative pool. One process at a time owns a
    /// PF's admin queue.
    func lock(wait: Duration?, clock: any ServiceClock) async throws(VirtioAdminError)
    /// Makes the sysfs view current (the model writes its tree when there is none). Touches no device.
    func prepare() throws(VirtioAdminError)
    /// Reaches the PF's registers and DMA memory.
    func open() throws(VirtioAdminError) -> PFAccess
    /// Keeps what a device keeps by itself. Called after each batch, not per command:
    /// the model saves its state file atomically; hardware needs nothing.
    func checkpoint() throws(VirtioAdminError)
    /// Lets the PF go (after the admin queue was closed) and drops the lock.
    func release()
    /// Why keeping what the device keeps failed on the last ``release()``, if it did
    /// (release cannot throw); `nil` when nothing failed or there is nothing to keep.
    var releaseError: VirtioAdminError? { get }
}

extension PFOpener {
    /// Nothing to keep, so nothing failed.
    public var releaseError: VirtioAdminError? { nil }
}

/// An exclusive `flock` on a file (``FileLock``), taken without blocking a thread.
final class LockFile: @unchecked Sendable {
    let file: FileLock
    var path: String { file.path }

    init(path: String) { file = FileLock(path: path) }

    /// Waits at most `wait` on `clock` (`nil`: forever), sleeping 5 ms between tries (never
    /// blocking a thread); `pf` names the device in the error.
    func lock(wait: Duration?, pf: PCIAddress, clock: any ServiceClock) async throws(VirtioAdminError) {
        let start = clock.nowNanoseconds
        while true {
            do { if try file.tryLock() { return } } catch { throw .system(error) }
            guard wait.map({ clock.elapsed(since: start) < $0 }) ?? true else { throw .pfBusy(pf: pf, lockPath: path, waited: wait ?? .zero) }
            await clock.sleep(for: .milliseconds(5))
        }
    }

    func unlock() { file.unlock() }
}

/// A real PF on a Linux host, bound to vfio-pci (VFIO, type-1 IOMMU DMA) or to
/// uio_pci_generic / no driver (sysfs `resourceN`, pagemap DMA). A PF a kernel driver owns
/// is always refused. The ownership lock is `LOCKDIR/<PF>.pf.lock`.
public final class LinuxPFOpener: PFOpener, @unchecked Sendable {
    /// The PF this opener reaches.
    public let address: PCIAddress
    /// The sysfs root whose tree shows the PF (`/sys` on a host).
    public let sysfsRoot: String
    let lockFile: LockFile
    var opened: OpenedFunction?

    /// An opener of the real PF at `address`; its ownership lock is
    /// `lockDirectory/<PF>.pf.lock`. Nothing is touched before
    /// ``AdminGroup/open(opener:registry:options:)``.
    public init(address: PCIAddress, sysfsRoot: String = "/sys", lockDirectory: String = "/run/virtio-admin") {
        self.address = address
        self.sysfsRoot = sysfsRoot
        lockFile = LockFile(path: lockDirectory + "/\(address).pf.lock")
    }

    /// Takes `LOCKDIR/<PF>.pf.lock`, waiting at most `wait`.
    public func lock(wait: Duration?, clock: any ServiceClock) async throws(VirtioAdminError) {
        Sys.makeParentDirectory(of: lockFile.path, permissions: .ownerReadWriteExecute)
        try await lockFile.lock(wait: wait, pf: address, clock: clock)
    }

    /// Nothing to prepare: the host's sysfs is always current.
    public func prepare() throws(VirtioAdminError) {}

    /// Maps the PF's BARs and sets up DMA: VFIO when the PF is bound to vfio-pci, else sysfs
    /// `resourceN` and pagemap DMA. A PF a kernel driver owns is refused.
    public func open() throws(VirtioAdminError) -> PFAccess {
        let function: OpenedFunction
        // Bus mastering is left to the admin driver, which sets it once its reset is confirmed.
        do { function = try RealDeviceOpener(sysfsRoot: sysfsRoot).open(address, busMaster: false) } catch { throw .access(pf: address, error) }
        opened = function
        return PFAccess(config: function.config, bars: function.bars, allocator: function.allocator, mode: function.mode, iovaDMA: function.vfio != nil,
                        disableBusMaster: function.disableBusMaster, enableBusMaster: function.enableBusMaster)
    }

    /// Nothing to keep: hardware keeps its own state.
    public func checkpoint() throws(VirtioAdminError) {}

    /// Lets the opened function go (its BAR mappings and DMA memory with it) and drops the lock.
    public func release() {
        opened = nil
        lockFile.unlock()
    }
}

/// The device model as a PF. Its sysfs view is a tree that plays `/sys` (by default
/// `STATE.sys`), written from the model when missing (`simulate sysfs --from STATE` and
/// `simulate numvfs` write it anew; until then it shows the VFs' MSI-X counts as they were).
///
/// With a state file (`virtio-admin simulate create`) the model is loaded when the PF is
/// taken and stays in memory while the opener holds it; its state is saved atomically at
/// each ``checkpoint()`` (after each batch) and on release, and the ownership lock is
/// `STATE.lock`. Without one (an appliance's self-test, the test kit) the model lives only
/// in memory.
public final class SimulatedPFOpener: PFOpener, @unchecked Sendable {
    /// The simulated PF's address (the model's `pfAddress`).
    public let address: PCIAddress
    /// The model's state file, when there is one (`simulate create`).
    public let statePath: String?
    /// The model's sysfs view.
    public let sysfsRoot: String
    let lockFile: LockFile?
    /// The model while the opener holds it (with a state file: `nil` before ``open()`` and
    /// after ``release()``).
    public private(set) var device: SimulatedSRIOVDevice?
    /// State files written so far (tests: a run saves once per batch and on release, not more).
    package private(set) var saves = 0
    /// Why the save on release failed, if it did (release cannot throw).
    public private(set) var lastSaveError: VirtioAdminError?
    /// Why the save on the last ``release()`` failed, if it did (``lastSaveError``).
    public var releaseError: VirtioAdminError? { lastSaveError }
    /// Held while the state is saved and while the model is let go: the interrupt handler
    /// (``saveAllHeldForExit()``) may save from another thread.
    let saveLock = ConditionLock()

    /// The sysfs root that goes with a state file when none is named.
    public static func defaultSysfsRoot(forState path: String) -> String { path + ".sys" }

    /// The model whose state lives in `statePath`.
    public init(address: PCIAddress, statePath: String, sysfsRoot: String? = nil) {
        self.address = address
        self.statePath = statePath
        self.sysfsRoot = sysfsRoot ?? Self.defaultSysfsRoot(forState: statePath)
        lockFile = LockFile(path: statePath + ".lock")
    }

    /// A model in memory, with its sysfs view under `sysfsRoot`.
    public init(device: SimulatedSRIOVDevice, sysfsRoot: String) {
        address = device.pfAddress
        statePath = nil
        self.sysfsRoot = sysfsRoot
        lockFile = nil
        self.device = device
    }

    /// Takes `STATE.lock` (nothing to take without a state file).
    public func lock(wait: Duration?, clock: any ServiceClock) async throws(VirtioAdminError) {
        try await lockFile?.lock(wait: wait, pf: address, clock: clock)
    }

    /// Loads the model from its state file if needed, and writes its sysfs view when there is none.
    public func prepare() throws(VirtioAdminError) {
        if device == nil, let statePath {
            let loaded: SimulatedSRIOVDevice
            do { loaded = try SimulatedDeviceStore.load(statePath) } catch { throw .simulatedState(error) }
            guard loaded.pfAddress == address else {
                loaded.stop()
                throw .wrongSimulatedPF(path: statePath, simulates: loaded.pfAddress, asked: address)
            }
            saveLock.withLock { device = loaded }
            heldSimulatedPFs.add(self)
        }
        guard let device else { throw .closed(pf: address) }
        try Self.ensureSysfsTree(of: device, at: sysfsRoot)
    }

    /// Writes the sysfs view of the PF simulated in state file `statePath` under `root`
    /// unless the view already shows that PF: the state file is decoded (and the device
    /// rebuilt) only when the view is missing, so a command on a large simulated PF does
    /// not pay for it twice.
    public static func ensureSysfsTree(forState statePath: String, at root: String) throws(VirtioAdminError) {
        let pf: PCIAddress
        do { pf = try SimulatedDeviceStore.pfAddress(inState: statePath) } catch { throw .simulatedState(error) }
        guard !Sys.exists(root + "/bus/pci/devices/\(pf)/config") else { return }
        let device: SimulatedSRIOVDevice
        do { device = try SimulatedDeviceStore.load(statePath) } catch { throw .simulatedState(error) }
        defer { device.stop() }
        try ensureSysfsTree(of: device, at: root)
    }

    /// Writes the model's sysfs tree under `root` unless it already shows the PF.
    public static func ensureSysfsTree(of device: SimulatedSRIOVDevice, at root: String) throws(VirtioAdminError) {
        guard !Sys.exists(root + "/bus/pci/devices/\(device.pfAddress)/config") else { return }
        do { try device.sysfsTree().write(to: root) } catch { throw .system(error) }
    }

    /// Reaches the model's registers and DMA memory in process.
    public func open() throws(VirtioAdminError) -> PFAccess {
        if device == nil { try prepare() }
        guard let device else { throw .closed(pf: address) }
        let mode = statePath.map { "the device model in \($0) (in-process; state saved after each batch)" } ?? "the device model (in memory)"
        // Bus mastering as a real PF's opener gives it (the model stops its DMA while it is off).
        return PFAccess(config: device.pfConfigSpace(), bars: [0: device.pfBAR()], allocator: device.memory, mode: mode,
                        disableBusMaster: { device.setBusMaster(false); return true }, enableBusMaster: { device.setBusMaster(true); return true })
    }

    /// Saves the model's state file atomically (nothing to do without one).
    public func checkpoint() throws(VirtioAdminError) {
        try saveLock.withLock { () throws(VirtioAdminError) in try checkpointLocked() }
    }

    func checkpointLocked() throws(VirtioAdminError) {
        guard let device else { return }
        if let statePath {
            do { try SimulatedDeviceStore.save(device, to: statePath) } catch { throw .simulatedState(error) }
            saves += 1
        }
    }

    /// Saves the state (with a state file), lets the model go and drops the lock.
    public func release() {
        guard let lockFile else { return }  // an in-memory model stays with its owner
        saveLock.withLock {
            if let device {
                do throws(VirtioAdminError) {
                    try checkpointLocked()
                    lastSaveError = nil
                } catch { lastSaveError = error }
                device.stop()
            }
            device = nil
            // Out of the list only once saved: an interrupt finds the PF either still held
            // or saved.
            heldSimulatedPFs.remove(self)
        }
        lockFile.unlock()
    }

    /// For an interrupted one-shot command, after its admin queues were closed and just
    /// before the process exits: saves the state of every model with a state file that this
    /// process holds — what the device did up to now, as a real device keeps it — and keeps
    /// each one's save lock for good, so that no later save (the command's own release, on
    /// another thread) is cut short by the exit. Each PF with its state file, and why its save
    /// failed, if it did (a PF released meanwhile: its release's save).
    package static func saveAllHeldForExit() -> [(pf: PCIAddress, statePath: String, error: VirtioAdminError?)] {
        heldSimulatedPFs.all().compactMap { opener -> (pf: PCIAddress, statePath: String, error: VirtioAdminError?)? in
            guard let statePath = opener.statePath else { return nil }
            opener.saveLock.lock()  // never unlocked: the process exits
            guard opener.device != nil else { return (opener.address, statePath, opener.lastSaveError) }
            do throws(VirtioAdminError) { try opener.checkpointLocked() } catch { return (opener.address, statePath, error) }
            return (opener.address, statePath, nil)
        }
    }
}

/// The simulated PFs whose model this process holds from a state file (between loading and
/// release), for ``SimulatedPFOpener/saveAllHeldForExit()``.
let heldSimulatedPFs = WeakRegistry<SimulatedPFOpener>()
