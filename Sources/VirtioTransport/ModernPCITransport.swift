import CVolatile
import PCIConfig
import VirtioSpec

/// Where a queue's notifications go: a 16-bit write of the queue index (or notify data) at
/// an offset in the notify region. Spec: §4.1.4.4.
package struct QueueNotifier: Sendable {
    let window: RegisterWindow
    let offset: Int
    package let queue: UInt16

    /// Notifies the device that queue `queue` has new buffers. The ring stores before it are
    /// ordered against the doorbell with a DMA-strength write barrier (as Linux's writel()
    /// does; on arm64 `dmb oshst`), whatever ORDER_PLATFORM says.
    @inline(__always) package func notify() {
        cv_dma_write_barrier()
        window.write16(queue, offset)
    }
}

/// The modern (virtio 1.0+) PCI transport over a ``RegisterSpace`` per BAR.
///
/// It owns the register protocol — reset, the device-status sequence, feature negotiation
/// through the select registers, queue programming, MSI-X vectors, notify addresses and
/// device-config reads under the generation loop — and nothing else: no virtqueues, no
/// admin logic. Spec: §4.1 "Virtio Over PCI Bus", §3.1 "Device Initialization".
package final class ModernPCITransport: @unchecked Sendable {
    // Not thread-safe: one owner drives the registers (the admin driver serialises access).
    package let address: PCIAddress
    let common: RegisterWindow
    let notifyRegion: RegisterWindow
    let notifyMultiplier: UInt32
    let isr: RegisterWindow?
    let deviceConfig: RegisterWindow?
    /// Features negotiated by the last successful ``negotiate(required:wanted:)``.
    package private(set) var negotiatedFeatures: FeatureSet = []
    /// The function has a PCI SR-IOV capability (a PF that can enable VFs).
    package let hasSRIOVCapability: Bool

    /// Locates the common, notify, ISR and device structures from the decoded capabilities.
    ///
    /// - Parameters:
    ///   - config: the function's decoded config space.
    ///   - bars: a register space for each BAR the capabilities use.
    /// - Throws: ``TransportError/missingCapability(device:_:)`` without common or notify
    ///   structures, ``TransportError/barNotMapped(device:bar:)``,
    ///   ``TransportError/regionOutsideBAR(device:_:bar:end:barLength:)``, and
    ///   ``TransportError/capabilityTooSmall(device:_:length:minimum:)`` for a common
    ///   structure shorter than virtio 1.0's.
    package init(config: PCIConfigSpace, bars: [Int: any RegisterSpace]) throws(TransportError) {
        hasSRIOVCapability = config.sriov != nil
        address = config.address
        func window(_ type: VirtioPCICfgType, required: Bool) throws(TransportError) -> RegisterWindow? {
            guard let cap = config.virtioCapability(type) else {
                if required { throw .missingCapability(device: config.address, type) }
                return nil
            }
            guard let space = bars[cap.bar] else { throw .barNotMapped(device: config.address, bar: cap.bar) }
            let (end, overflow) = cap.offset.addingReportingOverflow(cap.length)
            guard !overflow, end <= UInt64(space.length) else {
                throw .regionOutsideBAR(device: config.address, type, bar: cap.bar, end: overflow ? .max : end, barLength: space.length)
            }
            return RegisterWindow(space: space, base: Int(cap.offset), length: Int(cap.length))
        }
        guard let common = try window(.common, required: true), let notify = try window(.notify, required: true) else {
            throw .missingCapability(device: config.address, .common)
        }
        guard common.length >= CommonConfigLayout.sizeV1_0 else {
            throw .capabilityTooSmall(device: config.address, .common, length: UInt64(common.length), minimum: UInt64(CommonConfigLayout.sizeV1_0))
        }
        self.common = common
        notifyRegion = notify
        notifyMultiplier = config.virtioCapability(.notify)?.notifyOffMultiplier ?? 0
        isr = try window(.isr, required: false)
        deviceConfig = try window(.device, required: false)
    }

    // MARK: Registers

    @inline(__always) func read8(_ register: CommonConfigRegister) -> UInt8 { common.read8(register.offset) }
    @inline(__always) func read16(_ register: CommonConfigRegister) -> UInt16 { common.read16(register.offset) }
    @inline(__always) func read32(_ register: CommonConfigRegister) -> UInt32 { common.read32(register.offset) }
    @inline(__always) func write8(_ register: CommonConfigRegister, _ value: UInt8) { precondition(register.isDriverWritable); common.write8(value, register.offset) }
    @inline(__always) func write16(_ register: CommonConfigRegister, _ value: UInt16) { precondition(register.isDriverWritable); common.write16(value, register.offset) }
    @inline(__always) func write32(_ register: CommonConfigRegister, _ value: UInt32) { precondition(register.isDriverWritable); common.write32(value, register.offset) }

    /// Whether the common structure carries `admin_queue_index`/`admin_queue_num`.
    package var hasAdminQueueFields: Bool { common.length >= CommonConfigLayout.sizeWithAdminQueue }

    /// The current device status.
    package var status: DeviceStatus { DeviceStatus(rawValue: read8(.deviceStatus)) }

    /// Throws when the device is gone or asks for a reset.
    package func checkHealth() throws(TransportError) {
        let raw = read8(.deviceStatus)
        if raw == 0xff && read32(.deviceFeatureSelect) == UInt32.max { throw .surpriseRemoval(device: address) }
        if DeviceStatus(rawValue: raw).contains(.deviceNeedsReset) { throw .deviceNeedsReset(device: address) }
    }

    /// Adds bits to device_status (it is written whole; the device sees old | new).
    package func addStatus(_ bits: DeviceStatus) {
        write8(.deviceStatus, status.union(bits).rawValue)
    }

    /// Sets FAILED: the driver gives up on the device. Spec: §3.1.1 step 8 note.
    package func fail() { addStatus(.failed) }

    /// Resets the device: writes 0, then waits until device_status reads 0. Spec: §4.1.4.3.2
    /// "the driver MUST wait for the read of device_status to return 0 before reinitializing".
    /// - Parameter timeout: how long to wait (spinning on the register read).
    package func reset(timeout: Duration = .seconds(1)) throws(TransportError) {
        write8(.deviceStatus, 0)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            let raw = read8(.deviceStatus)
            if raw == 0 { break }
            if raw == 0xff && read32(.deviceFeatureSelect) == UInt32.max { throw .surpriseRemoval(device: address) }
            if clock.now >= deadline { throw .resetTimeout(device: address, status: DeviceStatus(rawValue: raw)) }
        }
        negotiatedFeatures = []
    }

    /// The features the device offers (all four 32-bit windows).
    package func deviceFeatures() -> FeatureSet {
        var features = FeatureSet()
        for window in 0..<FeatureSet.windowCount {
            write32(.deviceFeatureSelect, UInt32(window))
            features.setWindow(window, to: read32(.deviceFeature))
        }
        return features
    }

    /// Writes the driver's accepted features (all four windows).
    func writeDriverFeatures(_ features: FeatureSet) {
        for window in 0..<FeatureSet.windowCount {
            write32(.driverFeatureSelect, UInt32(window))
            write32(.driverFeature, features.window(window))
        }
    }

    /// Resets the device and runs initialisation up to FEATURES_OK: ACKNOWLEDGE, DRIVER,
    /// feature negotiation, FEATURES_OK and its read-back. Spec: §3.1.1 steps 1–6.
    ///
    /// - Parameters:
    ///   - required: features the caller cannot work without (VERSION_1 is always required).
    ///   - wanted: features the caller uses when offered.
    /// - Returns: the negotiated set (`offered ∩ (required ∪ wanted)`).
    /// - Throws: ``TransportError/legacyOnly(device:)``,
    ///   ``TransportError/missingFeatures(device:missing:names:)`` (the device is left with
    ///   FAILED set), ``TransportError/featuresRefused(device:written:status:)``.
    @discardableResult
    package func negotiate(required: FeatureSet, wanted: FeatureSet = [], deviceType: VirtioDeviceType? = nil) throws(TransportError) -> FeatureSet {
        try reset()
        addStatus(.acknowledge)
        addStatus(.driver)
        let offered = deviceFeatures()
        if offered.rawValue == UInt128.max { throw .surpriseRemoval(device: address) }
        guard offered.contains(.version1) else {
            fail()
            throw .legacyOnly(device: address)
        }
        let needed = required.union(.version1)
        let missing = needed.subtracting(offered)
        guard missing.isEmpty else {
            fail()
            throw .missingFeatures(device: address, missing: missing, names: missing.names(for: deviceType))
        }
        let accepted = offered.intersection(needed.union(wanted))
        writeDriverFeatures(accepted)
        addStatus(.featuresOK)
        let after = status
        guard after.contains(.featuresOK) else {
            fail()
            if after.rawValue == 0xff { throw .surpriseRemoval(device: address) }
            throw .featuresRefused(device: address, written: accepted, status: after)
        }
        negotiatedFeatures = accepted
        return accepted
    }

    /// Sets DRIVER_OK: the device is live. Spec: §3.1.1 step 8.
    package func driverOK() throws(TransportError) {
        addStatus(.driverOK)
        try checkHealth()
    }

    // MARK: Queues

    package var numQueues: Int { Int(read16(.numQueues)) }

    /// `admin_queue_index` and `admin_queue_num`, or `nil` when the common structure is too
    /// short to carry them.
    package var adminQueues: (index: Int, count: Int)? {
        guard hasAdminQueueFields else { return nil }
        return (Int(read16(.adminQueueIndex)), Int(read16(.adminQueueNum)))
    }

    /// Selects `queue` and returns the largest size the device allows (0 = unavailable).
    package func queueMaximumSize(_ queue: Int) -> Int {
        write16(.queueSelect, UInt16(queue))
        return Int(read16(.queueSize))
    }

    /// Programs and enables a split virtqueue.
    ///
    /// - Parameters:
    ///   - queue: the queue index (an admin queue index is checked against `admin_queue_index`
    ///     by the caller; other indices against `num_queues`).
    ///   - size: the size to use: a power of two no larger than the device's maximum.
    ///   - descriptorArea/driverArea/deviceArea: device addresses of the ring parts.
    ///   - msixVector: the vector to use, or `nil` for none (polling).
    /// - Returns: the queue's notifier.
    package func setUpQueue(_ queue: Int, size: Int, descriptorArea: UInt64, driverArea: UInt64, deviceArea: UInt64,
                           msixVector: UInt16? = nil, checkIndex: Bool = true) throws(TransportError) -> QueueNotifier {
        try checkHealth()
        if checkIndex {
            let count = numQueues
            guard queue < count else { throw .noSuchQueue(device: address, queue: queue, numQueues: count) }
        }
        let maximum = queueMaximumSize(queue)
        // A queue the driver cannot set up is fatal for this initialisation: FAILED (spec §3.1.1).
        guard maximum > 0 else { fail(); throw .queueUnavailable(device: address, queue: queue) }
        guard size > 0, size <= maximum, size & (size - 1) == 0 else {
            fail()
            throw .invalidQueueSize(device: address, queue: queue, size: size, maximum: maximum)
        }
        guard read16(.queueEnable) == 0 else { throw .queueAlreadyEnabled(device: address, queue: queue) }
        write16(.queueSize, UInt16(size))
        write32(.queueDescLow, UInt32(truncatingIfNeeded: descriptorArea))
        write32(.queueDescHigh, UInt32(truncatingIfNeeded: descriptorArea >> 32))
        write32(.queueDriverLow, UInt32(truncatingIfNeeded: driverArea))
        write32(.queueDriverHigh, UInt32(truncatingIfNeeded: driverArea >> 32))
        write32(.queueDeviceLow, UInt32(truncatingIfNeeded: deviceArea))
        write32(.queueDeviceHigh, UInt32(truncatingIfNeeded: deviceArea >> 32))
        if let msixVector {
            write16(.queueMSIXVector, msixVector)
            let readBack = read16(.queueMSIXVector)
            guard readBack == msixVector else {
                fail()
                throw .vectorNotAccepted(device: address, register: .queueMSIXVector, queue: queue, written: msixVector, readBack: readBack)
            }
        }
        let notifyOff = UInt64(read16(.queueNotifyOff))
        let offset = notifyOff * UInt64(notifyMultiplier)
        guard offset + 2 <= UInt64(notifyRegion.length) else {
            fail()
            throw .notifyOutOfRange(device: address, queue: queue, offset: offset, regionLength: UInt64(notifyRegion.length))
        }
        write16(.queueEnable, 1)
        try checkHealth()
        return QueueNotifier(window: notifyRegion, offset: Int(offset), queue: UInt16(queue))
    }

    /// Sets the configuration-change MSI-X vector and checks that it reads back.
    package func setConfigVector(_ vector: UInt16) throws(TransportError) {
        write16(.configMSIXVector, vector)
        let readBack = read16(.configMSIXVector)
        guard readBack == vector else {
            throw .vectorNotAccepted(device: address, register: .configMSIXVector, queue: nil, written: vector, readBack: readBack)
        }
    }

    /// Reads and clears the ISR status (a read has a side effect). Spec: §4.1.4.5.
    package func readISR() -> UInt8 { isr?.read8(0) ?? 0 }

    // MARK: Device configuration

    /// `config_generation`: changes whenever the device changes its device config.
    package var configGeneration: UInt8 { read8(.configGeneration) }

    /// Reads `length` bytes of device config at `offset`, repeating until
    /// `config_generation` is the same before and after. Spec: §2.5.1 / §4.1.4.3.1.
    /// - Parameter fieldWidth: width of the fields read (1 for byte arrays such as a MAC, 2
    ///   for le16 fields, …): every access has exactly that width.
    package func readDeviceConfig(offset: Int, length: Int, fieldWidth: Int = 1, maximumAttempts: Int = 16) throws(TransportError) -> [UInt8] {
        guard let deviceConfig, offset >= 0, length >= 0, offset + length <= deviceConfig.length else {
            throw .deviceConfigOutOfRange(device: address, offset: offset, length: length, regionLength: deviceConfig?.length ?? 0)
        }
        guard [1, 2, 4, 8].contains(fieldWidth), offset % fieldWidth == 0, length % fieldWidth == 0 else {
            throw .deviceConfigMisaligned(device: address, offset: offset, length: length, fieldWidth: fieldWidth)
        }
        for _ in 0..<maximumAttempts {
            let before = read8(.configGeneration)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(length)
            // Each field with its natural width (spec 4.1.3.1), never one access spanning
            // several narrower fields; a 64-bit field as two 32-bit reads.
            for position in stride(from: offset, to: offset + length, by: min(fieldWidth, 4)) {
                switch fieldWidth {
                case 1: bytes.append(deviceConfig.read8(position))
                case 2: bytes.appendLE(deviceConfig.read16(position))
                default: bytes.appendLE(deviceConfig.read32(position))
                }
            }
            if read8(.configGeneration) == before { return bytes }
        }
        throw .configUnstable(device: address, attempts: maximumAttempts)
    }
}
