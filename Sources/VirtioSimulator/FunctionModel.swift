import PCIConfig
import VirtioSpec
import Virtqueue

/// Device-side state of one virtqueue.
final class QueueModel {
    let index: Int
    let maximumSize: Int
    @exclusivity(unchecked) var size: Int
    @exclusivity(unchecked) var enabled = false
    var descriptorArea: UInt64 = 0
    var driverArea: UInt64 = 0
    var deviceArea: UInt64 = 0
    var msixVector: UInt16 = CommonConfigLayout.noVector
    /// Next avail index the device will read.
    @exclusivity(unchecked) var lastAvail: UInt16 = 0
    /// The device's used index (what it has published).
    @exclusivity(unchecked) var usedIndex: UInt16 = 0
    /// Heads taken from the avail ring and not yet completed.
    @exclusivity(unchecked) var inService = HeadSet()

    init(index: Int, maximumSize: Int) {
        self.index = index
        self.maximumSize = maximumSize
        size = maximumSize
    }

    func reset() {
        size = maximumSize
        enabled = false
        descriptorArea = 0
        driverArea = 0
        deviceArea = 0
        msixVector = CommonConfigLayout.noVector
        lastAvail = 0
        usedIndex = 0
        inService.removeAll()
    }
}

/// Device-side state of one virtio PCI function (the PF or a VF). Guarded by the device's lock.
final class FunctionModel {
    let address: PCIAddress
    let type: VirtioDeviceType
    let isOwner: Bool
    var offeredFeatures: FeatureSet
    /// A non-conforming variant: num_queues includes the admin queues.
    var countsAdminQueues = false
    /// Driver features this function needs before it accepts FEATURES_OK.
    var requiredDriverFeatures: FeatureSet = []
    @exclusivity(unchecked) var driverFeatures: FeatureSet = []
    @exclusivity(unchecked) var status: DeviceStatus = []
    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    var configVector: UInt16 = CommonConfigLayout.noVector
    var queueSelect: UInt16 = 0
    let queues: [QueueModel]
    var msixTableSize: Int
    var configGeneration: UInt8 = 0
    var deviceConfig: [UInt8]
    @exclusivity(unchecked) var isr: UInt8 = 0
    @exclusivity(unchecked) var faults = FaultSet()
    /// The counters, except admin commands by opcode below ``OpcodeTally/directCount``,
    /// which are in `opcodeTally` (``currentCounters`` has them all).
    @exclusivity(unchecked) var counters = SimulatedCounters()
    @exclusivity(unchecked) var opcodeTally = OpcodeTally()
    let adminQueueCount: Int
    /// Bumped on every reset: completions scheduled before it are dropped.
    @exclusivity(unchecked) var epoch: UInt64 = 0
    /// DEV_MODE_SET STOPPED: the function touches no queue (RatifiedCommands.swift); the
    /// queues notified meanwhile are served on resume.
    @exclusivity(unchecked) var stopped = false
    var notifiedWhileStopped = Set<Int>()

    init(address: PCIAddress, type: VirtioDeviceType, isOwner: Bool, features: FeatureSet, queues: Int, adminQueues: Int,
         maximumQueueSize: Int, msixTableSize: Int, mac: [UInt8]) {
        self.address = address
        self.type = type
        self.isOwner = isOwner
        offeredFeatures = features
        adminQueueCount = adminQueues
        self.queues = (0..<(queues + adminQueues)).map { QueueModel(index: $0, maximumSize: maximumQueueSize) }
        self.msixTableSize = msixTableSize
        // virtio-net config: mac[6], status le16, max_virtqueue_pairs le16, mtu le16.
        var config = [UInt8](repeating: 0, count: Int(SimulatedBARLayout.deviceLength))
        for (index, byte) in mac.prefix(6).enumerated() { config[index] = byte }
        config.writeLE(UInt16(1), at: 6)  // VIRTIO_NET_S_LINK_UP
        config.writeLE(UInt16(1), at: 8)
        config.writeLE(UInt16(1500), at: 10)
        deviceConfig = config
    }

    var adminQueueIndex: Int { queues.count - adminQueueCount }

    /// The counters with admin commands by opcode complete (what the public API returns).
    var currentCounters: SimulatedCounters {
        var merged = counters
        opcodeTally.add(into: &merged.adminCommandsByOpcode)
        return merged
    }

    /// Replaces every counter (zero, or values a state file carried).
    func setCounters(_ new: SimulatedCounters) {
        counters = new
        opcodeTally = OpcodeTally()
    }

    /// Counts one admin command with `opcode`.
    @inline(__always)
    func countAdminCommand(_ opcode: UInt16) {
        counters.adminCommands += 1
        if !opcodeTally.count(opcode) { counters.adminCommandsByOpcode[opcode, default: 0] += 1 }
    }
    var reportedAdminQueueCount: Int { faults.contains(.noAdminQueue) ? 0 : adminQueueCount }

    /// Whether queue `index` is an admin queue (what the device is, not what a fault makes it report).
    func isAdminQueue(_ index: Int) -> Bool {
        isOwner && adminQueueCount > 0 && index >= adminQueueIndex && index < queues.count
    }

    func reset() {
        driverFeatures = []
        status = []
        deviceFeatureSelect = 0
        driverFeatureSelect = 0
        configVector = CommonConfigLayout.noVector
        queueSelect = 0
        isr = 0
        for queue in queues { queue.reset() }
        epoch &+= 1
    }

    /// Sets DEVICE_NEEDS_RESET and raises a config-change interrupt: the device gives up
    /// on its queues until the driver resets it.
    func needsReset() {
        status.insert(.deviceNeedsReset)
        isr |= ISRStatus.configChange
        configGeneration &+= 1
        epoch &+= 1
        for queue in queues { queue.inService.removeAll() }
    }

    var selectedQueue: QueueModel? { Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil }

    func acceptsVector(_ vector: UInt16) -> Bool {
        vector == CommonConfigLayout.noVector || Int(vector) < msixTableSize
    }

    // MARK: Common configuration

    func readCommon(_ offset: Int, width: Int) -> UInt32 {
        guard let register = CommonConfigRegister(offset: offset), register.width == width else {
            // 64-bit queue addresses may be read as 32-bit halves; anything else misaligned reads 0.
            return 0
        }
        let queue = selectedQueue
        switch register {
        case .deviceFeatureSelect: return deviceFeatureSelect
        case .deviceFeature: return deviceFeatureSelect < UInt32(FeatureSet.windowCount) ? offeredFeatures.window(Int(deviceFeatureSelect)) : 0
        case .driverFeatureSelect: return driverFeatureSelect
        case .driverFeature: return driverFeatureSelect < UInt32(FeatureSet.windowCount) ? driverFeatures.window(Int(driverFeatureSelect)) : 0
        case .configMSIXVector: return UInt32(configVector)
        // num_queues excludes the admin queues, which come after it [transport-pci.tex:352-354,491-496].
        case .numQueues: return UInt32(queues.count - (countsAdminQueues ? 0 : adminQueueCount))
        case .deviceStatus: return UInt32(status.rawValue)
        case .configGeneration: return UInt32(configGeneration)
        case .queueSelect: return UInt32(queueSelect)
        case .queueSize: return faults.contains(.queueSizeZero) ? 0 : UInt32(queue?.size ?? 0)
        case .queueMSIXVector: return UInt32(queue?.msixVector ?? CommonConfigLayout.noVector)
        case .queueEnable: return queue?.enabled == true ? 1 : 0
        case .queueNotifyOff: return UInt32(queue?.index ?? 0)
        case .queueDescLow: return UInt32(truncatingIfNeeded: queue?.descriptorArea ?? 0)
        case .queueDescHigh: return UInt32(truncatingIfNeeded: (queue?.descriptorArea ?? 0) >> 32)
        case .queueDriverLow: return UInt32(truncatingIfNeeded: queue?.driverArea ?? 0)
        case .queueDriverHigh: return UInt32(truncatingIfNeeded: (queue?.driverArea ?? 0) >> 32)
        case .queueDeviceLow: return UInt32(truncatingIfNeeded: queue?.deviceArea ?? 0)
        case .queueDeviceHigh: return UInt32(truncatingIfNeeded: (queue?.deviceArea ?? 0) >> 32)
        case .queueNotifyData: return UInt32(queue?.index ?? 0)
        case .queueReset: return 0
        case .adminQueueIndex: return isOwner ? UInt32(adminQueueIndex) : 0
        case .adminQueueNum: return isOwner ? UInt32(reportedAdminQueueCount) : 0
        }
    }

    /// Applies a driver write. Returns `true` when the write was a reset.
    @discardableResult
    func writeCommon(_ offset: Int, width: Int, value: UInt32) -> Bool {
        guard let register = CommonConfigRegister(offset: offset), register.width == width, register.isDriverWritable else { return false }
        let queue = selectedQueue
        // Queue registers are frozen once the queue is enabled (spec §4.1.4.3.2).
        let queueWritable = queue.map { !$0.enabled } ?? false
        switch register {
        case .deviceFeatureSelect: deviceFeatureSelect = value
        case .driverFeatureSelect: driverFeatureSelect = value
        case .driverFeature:
            // Features may change only before FEATURES_OK.
            if driverFeatureSelect < UInt32(FeatureSet.windowCount) && !status.contains(.featuresOK) {
                driverFeatures.setWindow(Int(driverFeatureSelect), to: value)
            }
        case .configMSIXVector:
            let vector = UInt16(truncatingIfNeeded: value)
            configVector = acceptsVector(vector) ? vector : CommonConfigLayout.noVector
        case .deviceStatus:
            let written = DeviceStatus(rawValue: UInt8(truncatingIfNeeded: value))
            if written.rawValue == 0 {
                reset()
                return true
            }
            writeStatus(written)
        case .queueSelect: queueSelect = UInt16(truncatingIfNeeded: value)
        case .queueSize: if queueWritable { queue!.size = Int(UInt16(truncatingIfNeeded: value)) }
        case .queueMSIXVector:
            if let queue, queueWritable {
                let vector = UInt16(truncatingIfNeeded: value)
                queue.msixVector = acceptsVector(vector) ? vector : CommonConfigLayout.noVector
            }
        case .queueEnable:
            if let queue, queueWritable, value == 1 { enable(queue) }
        case .queueDescLow: if queueWritable { queue!.descriptorArea = (queue!.descriptorArea & ~0xffff_ffff) | UInt64(value) }
        case .queueDescHigh: if queueWritable { queue!.descriptorArea = (queue!.descriptorArea & 0xffff_ffff) | UInt64(value) << 32 }
        case .queueDriverLow: if queueWritable { queue!.driverArea = (queue!.driverArea & ~0xffff_ffff) | UInt64(value) }
        case .queueDriverHigh: if queueWritable { queue!.driverArea = (queue!.driverArea & 0xffff_ffff) | UInt64(value) << 32 }
        case .queueDeviceLow: if queueWritable { queue!.deviceArea = (queue!.deviceArea & ~0xffff_ffff) | UInt64(value) }
        case .queueDeviceHigh: if queueWritable { queue!.deviceArea = (queue!.deviceArea & 0xffff_ffff) | UInt64(value) << 32 }
        default: break
        }
        return false
    }

    /// The device-status rules of spec §2.1 and §3.1: bits are only added; FEATURES_OK is
    /// accepted only for a subset of the offered features that includes VERSION_1.
    func writeStatus(_ written: DeviceStatus) {
        var added = written.subtracting(status)
        added.remove(.deviceNeedsReset)  // device-owned
        if added.contains(.featuresOK) {
            let acceptable = driverFeatures.isSubset(of: offeredFeatures) && driverFeatures.contains(.version1)
                && !faults.contains(.refuseFeaturesOK) && status.contains(.driver)
                && driverFeatures.isSuperset(of: requiredDriverFeatures)
            if !acceptable { added.remove(.featuresOK) }
        }
        if added.contains(.driverOK) && !(status.union(added)).contains(.featuresOK) {
            // DRIVER_OK before FEATURES_OK is a driver error: the device needs a reset.
            added.remove(.driverOK)
            status.formUnion(added)
            needsReset()
            return
        }
        status.formUnion(added)
    }

    /// Queue enable rules: features negotiated, a power-of-two size within the maximum,
    /// aligned non-zero ring addresses. An invalid setup leaves the queue disabled.
    func enable(_ queue: QueueModel) {
        guard status.contains(.featuresOK), queue.size > 0, queue.size <= queue.maximumSize, queue.size & (queue.size - 1) == 0,
              queue.descriptorArea != 0, queue.descriptorArea % UInt64(SplitQueueLayout.descriptorAlignment) == 0,
              queue.driverArea != 0, queue.driverArea % UInt64(SplitQueueLayout.availAlignment) == 0,
              queue.deviceArea != 0, queue.deviceArea % UInt64(SplitQueueLayout.usedAlignment) == 0
        else { return }
        queue.enabled = true
        queue.lastAvail = 0
        queue.usedIndex = 0
    }
}
