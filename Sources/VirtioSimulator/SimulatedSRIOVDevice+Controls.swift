import VirtioSpec

extension SimulatedSRIOVDevice {

    // MARK: Test and benchmark controls

    /// Injects or clears a fault on the PF.
    public func setFault(_ fault: SimulatedFault, _ enabled: Bool = true) {
        lock.withLock {
            if enabled { pf.faults.insert(fault) } else { pf.faults.remove(fault) }
            if fault == .transientEAGAIN { eagainRemaining = enabled ? 3 : 0 }
        }
    }
    /// The faults injected now.
    public var faults: Set<SimulatedFault> { lock.withLock { pf.faults.asSet } }

    /// Changes latency and parallelism.
    public func setTiming(_ timing: DeviceTiming) {
        lock.withLock {
            self.timing = timing
            workerFreeAt = [UInt64](repeating: 0, count: timing.parallelism)
        }
    }

    /// PF counters (MMIO reads/writes, notifies, interrupts, admin commands).
    public var counters: SimulatedCounters { lock.withLock { pf.currentCounters } }
    /// The counters of VF `index` (0-based).
    public func vfCounters(_ index: Int) -> SimulatedCounters { lock.withLock { vfs[index].currentCounters } }
    /// Sets the PF's counters to zero (to measure one phase of a test).
    public func resetCounters() { lock.withLock { pf.setCounters(SimulatedCounters()) } }
    /// Restores the PF's counters (a state file carries them across processes).
    public func restoreCounters(_ counters: SimulatedCounters) { lock.withLock { pf.setCounters(counters) } }
    /// The timing the model runs with.
    public var currentTiming: DeviceTiming { lock.withLock { timing } }

    /// The PF's device status (what the driver left it in).
    public var pfStatus: DeviceStatus { lock.withLock { pf.status } }

    /// Resources of VF `index` as the device holds them.
    public func member(_ index: Int) -> MemberResources { lock.withLock { admin.members[index] } }
    /// Every VF's resources as the device holds them, by 0-based index.
    public var members: [MemberResources] { lock.withLock { admin.members } }
    /// Vectors of the VF pool not given to a VF.
    public var availableVectors: Int { lock.withLock { admin.availableVectors } }

    /// Marks VF `index` as used by a driver (bound) or free.
    public func setInUse(_ index: Int, _ inUse: Bool) { lock.withLock { admin.members[index].inUse = inUse } }
}
