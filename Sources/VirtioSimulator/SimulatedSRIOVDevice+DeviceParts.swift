import VirtioSpec
import Virtqueue

extension SimulatedSRIOVDevice {
    /// A restored queue goes on where the ring in guest memory stands: every buffer the
    /// device had seen was written back when it stopped [dpcmds:377-383], so the next
    /// available entry is the used index (lock held).
    func syncRestoredQueues() {
        for queue in admin.restoredQueues where queue.enabled {
            guard let ring = ringView(queue) else { continue }
            queue.usedIndex = ring.loadUsedIndex()
            queue.lastAvail = queue.usedIndex
        }
        admin.restoredQueues = []
    }

    /// Whether VF `index` is stopped (DEV_MODE_SET).
    public func vfStopped(_ index: Int) -> Bool { lock.withLock { vfs[index].stopped } }

    /// The driver-visible state of VF `index`: driver features, device status, and each
    /// queue's size, vector, enable and ring addresses.
    package func vfDriverState(_ index: Int) -> SimulatedDriverState {
        lock.withLock {
            let vf = vfs[index]
            return SimulatedDriverState(driverFeatures: vf.driverFeatures, status: vf.status, configVector: vf.configVector,
                                        queues: vf.queues.map { .init(size: $0.size, vector: $0.msixVector, enabled: $0.enabled,
                                                                       descriptorArea: $0.descriptorArea, driverArea: $0.driverArea,
                                                                       deviceArea: $0.deviceArea) })
        }
    }

    /// The parts of VF `index` as DEV_PARTS_GET ALL would return them, and the stopped flag:
    /// what the state file keeps so that a VF's state persists across invocations (lock held).
    func vfPersistentStateLocked(_ index: Int) -> (stopped: Bool, parts: [UInt8])? {
        let vf = vfs[index]
        guard vf.stopped || !vf.status.isEmpty || !vf.driverFeatures.isEmpty || vf.queues.contains(where: { $0.enabled || $0.descriptorArea != 0 })
        else { return nil }
        var bytes: [UInt8] = []
        for part in admin.currentParts(vf) { part.encode(into: &bytes) }
        return (vf.stopped, bytes)
    }

    /// What the state file keeps, taken in one hold of the model's lock: a save of a model
    /// at work (the service's checkpoints, an interrupt's save) is the model at one instant,
    /// its counters in step with its VFs' resources.
    func persistentSnapshot() -> SimulatedPersistentSnapshot {
        lock.withLock {
            var states: [(index: Int, stopped: Bool, parts: [UInt8])] = []
            for index in vfs.indices {
                if let state = vfPersistentStateLocked(index) { states.append((index, state.stopped, state.parts)) }
            }
            return SimulatedPersistentSnapshot(numVFs: admin.numVFs, sriovNegotiated: srIOVNegotiated, timing: timing,
                                               counters: pf.currentCounters, members: admin.members, vfStates: states)
        }
    }

    /// Restores what ``vfPersistentStateLocked(_:)`` returned; `false` when the parts do not decode.
    func restoreVFState(_ index: Int, stopped: Bool, parts: [UInt8]) -> Bool {
        lock.withLock {
            // The model's own record, applied as kept (not a driver's DEV_PARTS_SET: nothing to verify).
            guard let decoded = ModelPart.decode(parts) else { return false }
            let vf = vfs[index]
            var pending = PendingParts()
            for part in decoded {
                switch part.type {
                case ModelPartType.drvFeatures where part.value.count == 16:
                    pending.driverFeatures = FeatureSet(low64: part.value.readLE(UInt64.self, at: 0), high64: part.value.readLE(UInt64.self, at: 8))
                case ModelPartType.deviceStatus where part.value.count == 1:
                    pending.status = part.value[0]
                case ModelPartType.vqCfg where part.value.count == 32 && part.selector < UInt64(vf.queues.count):
                    pending.queues[Int(part.selector)] = part.value
                default:
                    break
                }
            }
            admin.apply(pending, to: vf)
            syncRestoredQueues()
            admin.members[index].inUse = admin.members[index].inUse || vf.status.contains(.driverOK)
            vf.stopped = stopped
            return true
        }
    }
}

/// A VF's driver-visible state (for tests: save → restore must reproduce it).
package struct SimulatedDriverState: Sendable, Hashable {
    package struct Queue: Sendable, Hashable {
        package var size: Int
        package var vector: UInt16
        package var enabled: Bool
        package var descriptorArea: UInt64
        package var driverArea: UInt64
        package var deviceArea: UInt64
    }
    package var driverFeatures: FeatureSet
    package var status: DeviceStatus
    package var configVector: UInt16
    package var queues: [Queue]
}

extension SimulatedSRIOVDevice {
    /// The DEV_PARTS_CAP limits the driver set with DRIVER_CAP_SET (0 when never set).
    public var driverDevicePartsLimits: (get: Int, set: Int) {
        lock.withLock { (Int(admin.ratified.driverGetLimit), Int(admin.ratified.driverSetLimit)) }
    }
    /// DEV_PARTS resource objects that exist now.
    public var devicePartsObjectCount: Int { lock.withLock { admin.ratified.objects.count } }
}

/// The model's persistent state at one instant (``SimulatedSRIOVDevice/persistentSnapshot()``).
struct SimulatedPersistentSnapshot {
    var numVFs: Int
    var sriovNegotiated: Bool
    var timing: DeviceTiming
    var counters: SimulatedCounters
    var members: [MemberResources]
    /// VFs with driver-visible state or a stopped mode, by index.
    var vfStates: [(index: Int, stopped: Bool, parts: [UInt8])]
}
