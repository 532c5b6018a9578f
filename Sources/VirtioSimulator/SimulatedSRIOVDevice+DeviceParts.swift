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
    public func vfDriverState(_ index: Int) -> SimulatedDriverState {
        lock.withLock {
            let vf = vfs[index]
            return SimulatedDriverState(driverFeatures: vf.driverFeatures, status: vf.status, configVector: vf.configVector,
                                        queues: vf.queues.map { .init(size: $0.size, vector: $0.msixVector, enabled: $0.enabled,
                                                                       descriptorArea: $0.descriptorArea, driverArea: $0.driverArea,
                                                                       deviceArea: $0.deviceArea) })
        }
    }

    /// The parts of VF `index` as DEV_PARTS_GET ALL would return them, and the stopped flag:
    /// what the state file keeps so that a VF's state persists across invocations.
    func vfPersistentState(_ index: Int) -> (stopped: Bool, parts: [UInt8])? {
        lock.withLock {
            let vf = vfs[index]
            guard vf.stopped || !vf.status.isEmpty || !vf.driverFeatures.isEmpty || vf.queues.contains(where: { $0.enabled || $0.descriptorArea != 0 })
            else { return nil }
            var bytes: [UInt8] = []
            for part in admin.currentParts(vf) { part.encode(into: &bytes) }
            return (vf.stopped, bytes)
        }
    }

    /// Restores what ``vfPersistentState(_:)`` returned; `false` when the parts do not decode.
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
public struct SimulatedDriverState: Sendable, Hashable {
    public struct Queue: Sendable, Hashable {
        public var size: Int
        public var vector: UInt16
        public var enabled: Bool
        public var descriptorArea: UInt64
        public var driverArea: UInt64
        public var deviceArea: UInt64
    }
    public var driverFeatures: FeatureSet
    public var status: DeviceStatus
    public var configVector: UInt16
    public var queues: [Queue]
}

extension SimulatedSRIOVDevice {
    /// The DEV_PARTS_CAP limits the driver set with DRIVER_CAP_SET (0 when never set).
    public var driverDevicePartsLimits: (get: Int, set: Int) {
        lock.withLock { (Int(admin.ratified.driverGetLimit), Int(admin.ratified.driverSetLimit)) }
    }
    /// DEV_PARTS resource objects that exist now.
    public var devicePartsObjectCount: Int { lock.withLock { admin.ratified.objects.count } }
}
