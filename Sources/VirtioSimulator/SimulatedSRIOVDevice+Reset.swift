import VirtioSpec
import Virtqueue
import VirtioSystem

extension SimulatedSRIOVDevice {
    // MARK: Device status, SR-IOV enable and reset

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
    /// Whether the PF's bus mastering is on (``setBusMaster(_:)``).
    public var isBusMaster: Bool { lock.withLock { busMaster } }

    /// Lets a pending (slow or late) reset take effect now if its time has come, as any
    /// register access does.
    public func settle() { lock.withLock { settleResetLocked() } }

    /// Lets a pending slow reset take effect now, before its time (a test that has seen the
    /// driver give up on it need not wait it out).
    package func finishPendingReset() {
        lock.withLock {
            if pendingResetAt != nil { pendingResetAt = 0 }
            settleResetLocked()
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
}
