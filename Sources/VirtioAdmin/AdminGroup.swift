import CapabilitiesResourceManager
import Logging
import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioSystem
import VirtioSpec
import VirtioTransport

/// The one owner of a PF's admin queue (virtio spec §2.12: the SR-IOV group owner).
///
/// Opened once — lock, sysfs view, reset, feature negotiation, LIST_QUERY/LIST_USE — and
/// kept open for its lifetime; re-initialised only when the device needs a reset; closed
/// once. A simulated and a real PF differ only in their ``PFOpener``: after opening,
/// everything here is the same code.
public final class AdminGroup: @unchecked Sendable {
    /// How a PF is opened and its commands are sent.
    public struct Options: Sendable {
        /// Per-command timeout.
        public var timeout: Duration = .seconds(5)
        /// How long to wait for another owner to let go (`nil`: as long as it takes).
        public var lockWait: Duration? = .seconds(10)
        /// The clock the lock wait goes by (a test's manual clock moves it on).
        public var clock: any ServiceClock = SystemServiceClock()
        /// Refuse to open (and so reset) a PF whose VFs have drivers. The service, which
        /// opens each PF once and keeps it open, turns this off.
        public var refuseWhenVFsInUse = true
        /// `--trace`: every command's bytes each way.
        public var trace: (@Sendable (AdminTraceEvent) -> Void)?
        /// Admin-queue driver options (queue size, slot size).
        public var driver = AdminQueueDriver.Options()
        /// Counts the sysfs files and links opening reads (tests and benchmarks).
        package var sysfsReads: SysfsReadCounter?
        /// Names of opcodes no registered plugin names (for errors and traces).
        public var opcodeNames: [AdminOpcode: String] = [:]
        /// The defaults: 5 s per command, 10 s for the lock, PFs with bound VFs refused.
        public init() {}
    }

    /// The PF.
    public let address: PCIAddress
    /// How the PF was reached.
    public let opener: any PFOpener
    /// The plugins whose opcodes were enabled with LIST_USE.
    public let registry: PluginRegistry
    /// The options the group was opened with.
    public let options: Options
    /// How the PF was reached (``PFAccess/mode``).
    public let access: PFAccess
    /// The admin-queue driver: the one way to the PF's admin queue while the group is open.
    public let driver: AdminQueueDriver
    /// The device type of the VFs (from the SR-IOV capability's VF device id).
    public let memberType: VirtioDeviceType?
    package let sysfs: SysfsEnumerator
    let lock = Lock()
    var members: [Int: PCIAddress] = [:]
    var numVFsNow = 0
    var closed = false
    var recoveries = 0
    var handshakeFailure: AdminError?

    /// Why the capability handshake after bring-up failed, if it did (the queue is open all the same).
    public var handshakeError: AdminError? { lock.withLock { handshakeFailure } }

    /// Opens the PF's admin queue through `opener`.
    public static func open(opener: any PFOpener, registry: PluginRegistry, options: Options = Options()) async throws(VirtioAdminError) -> AdminGroup {
        try await opener.lock(wait: options.lockWait, clock: options.clock)
        do {
            try opener.prepare()
            let sysfs = SysfsEnumerator(root: opener.sysfsRoot)
            let pf: VirtioFunction
            do { pf = try sysfs.function(at: opener.address, counter: options.sysfsReads, vfsByLayout: true) } catch { throw VirtioAdminError.notInSysfs(pf: opener.address, root: opener.sysfsRoot, error) }
            if options.refuseWhenVFsInUse {
                // One link read per VF (`virtfnN/driver` under the PF's directory).
                let busy = sysfs.vfDrivers(of: pf, counter: options.sysfsReads).sorted { $0.key < $1.key }.map { "VF \($0.key) bound to \($0.value)" }
                guard busy.isEmpty else { throw VirtioAdminError.vfsInUse(pf: opener.address, busy: busy) }
            }
            // A group owner need not have SR-IOV (its self group); the driver refuses a
            // device without an admin queue, and leaves it reset.
            let access = try opener.open()
            let transport: ModernPCITransport
            do { transport = try ModernPCITransport(config: access.config, bars: access.bars) } catch {
                throw VirtioAdminError.transport(pf: opener.address, error.description)
            }
            var driverOptions = options.driver
            driverOptions.defaultTimeout = options.timeout
            // LIST_USE enables what the registered plugins know (issue 13), and VFIO's IOVAs
            // need a device that translates them.
            if driverOptions.wantedOpcodes == nil, !registry.plugins.isEmpty { driverOptions.wantedOpcodes = registry.plugins.flatMap { $0.opcodes.map(\.0) } }
            if access.iovaDMA { driverOptions.requireAccessPlatform = true }
            if driverOptions.disableBusMaster == nil { driverOptions.disableBusMaster = access.disableBusMaster }
            if driverOptions.enableBusMaster == nil { driverOptions.enableBusMaster = access.enableBusMaster }
            let driver: AdminQueueDriver
            do {
                driver = try await AdminQueueDriver.open(transport: transport, allocator: access.allocator, options: driverOptions,
                                                         opcodeNames: registry.opcodeNames.merging(options.opcodeNames) { plugin, _ in plugin }, trace: options.trace)
            } catch { throw VirtioAdminError.admin(error) }
            let group = AdminGroup(opener: opener, registry: registry, options: options, access: access, driver: driver, sysfs: sysfs)
            group.update(from: pf)
            // As Linux does after LIST_QUERY/LIST_USE: the capability handshake, when the
            // device lists it in the self group. Like Linux, a refused handshake does not
            // fail the open: it is kept for the caller to report (``handshakeError``).
            do throws(AdminError) { _ = try await CapabilitiesResourceManager.handshake(driver: driver) } catch {
                group.lock.withLock { group.handshakeFailure = error }
            }
            return group
        } catch let error as VirtioAdminError {
            opener.release()
            throw error
        } catch {
            opener.release()
            throw VirtioAdminError.transport(pf: opener.address, "\(error)")
        }
    }

    init(opener: any PFOpener, registry: PluginRegistry, options: Options, access: PFAccess, driver: AdminQueueDriver, sysfs: SysfsEnumerator) {
        address = opener.address
        self.opener = opener
        self.registry = registry
        self.options = options
        self.access = access
        self.driver = driver
        self.sysfs = sysfs
        memberType = access.config.sriov.flatMap { VirtioDeviceType(pciDeviceID: $0.vfDeviceID) } ?? access.config.virtioDeviceType
    }

    func update(from pf: VirtioFunction) {
        lock.withLock {
            members = pf.virtfns
            numVFsNow = pf.sriov?.numVFs ?? pf.virtfns.count
        }
    }

    /// Reads the PF's VFs again from the sysfs view (VFs come and go with `sriov_numvfs`).
    public func refreshMembers() throws(VirtioAdminError) {
        do { update(from: try sysfs.function(at: address)) } catch { throw .notInSysfs(pf: address, root: sysfs.root, error) }
    }

    /// VFs enabled now (sysfs `sriov_numvfs`).
    public var numVFs: Int { lock.withLock { numVFsNow } }
    /// VF addresses by index (sysfs `virtfnN`).
    public var vfAddresses: [Int: PCIAddress] { lock.withLock { members } }

    /// The index (`virtfnN`) of the VF at `vf`, or `nil` when it is not one of this PF's VFs.
    public func vfIndex(of vf: PCIAddress) -> Int? { lock.withLock { members.first { $0.value == vf }?.key } }

    /// The VF `--vf` names: an index as it is (checked against NumVFs by the plugin), or the
    /// index of the VF at a PCI address under this PF.
    package func vf(_ selector: VFSelector) throws(VirtioAdminError) -> VFNumber {
        switch selector {
        case .index(let vf): return vf
        case .address(let address):
            guard let index = vfIndex(of: address), let vf = VFNumber(index: index) else { throw .notAVF(address: address, pf: self.address) }
            return vf
        }
    }

    /// The context plugin operations run in.
    public var context: PluginContext { PluginContext(driver: driver, numVFs: numVFs, memberType: memberType, timeout: options.timeout) }

    /// Re-initialises the admin queue when the device asked for a reset (DEVICE_NEEDS_RESET)
    /// or the driver failed; returns whether it did. The only reset an open group makes.
    @discardableResult
    public func recoverIfNeeded() async throws(VirtioAdminError) -> Bool {
        guard driver.isFailed else { return false }
        // Only if still failed: a close since (an interrupt's) is not undone.
        do { guard try await driver.reinitialize(ifFailed: true) else { return false } } catch { throw .admin(error) }
        // A reset cleared the driver's capabilities: the handshake again (kept, not thrown, as at open).
        var failure: AdminError?
        do throws(AdminError) { _ = try await CapabilitiesResourceManager.handshake(driver: driver) } catch { failure = error }
        lock.withLock {
            recoveries += 1
            handshakeFailure = failure
        }
        return true
    }

    /// Times the queue was re-initialised after a failure.
    public var recoveryCount: Int { lock.withLock { recoveries } }

    /// Saves what the device keeps by itself (after a batch; see ``PFOpener/checkpoint()``).
    public func checkpoint() throws(VirtioAdminError) { try opener.checkpoint() }

    /// Closes the admin queue and lets the PF go, as ``close()``, and says whether what the
    /// device keeps was kept (the model's state saved, atomically, once, after the reset).
    /// A caller that closes right after its last batch needs no ``checkpoint()`` before.
    public func closeKeepingState() throws(VirtioAdminError) {
        close()
        if let error = opener.releaseError { throw error }
    }

    /// Closes the admin queue (the device is reset so it lets go of the rings) and lets the PF go.
    public func close() {
        let first = lock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        driver.close()
        opener.release()
    }

    deinit { close() }
}

extension AdminGroup {
    /// Opens the PF, runs `body`, and closes it again, whatever happens.
    public static func with<T>(opener: any PFOpener, registry: PluginRegistry, options: Options = Options(),
                               _ body: (AdminGroup) async throws -> T) async throws -> T {
        let group = try await open(opener: opener, registry: registry, options: options)
        do {
            let result = try await body(group)
            group.close()
            return result
        } catch {
            group.close()
            throw error
        }
    }
}
