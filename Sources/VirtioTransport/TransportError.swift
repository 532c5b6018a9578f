import PCIConfig
import VirtioSpec

/// Errors of the modern virtio-PCI transport. Each names the device; `description` is one sentence.
public enum TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The function lacks a virtio capability the transport needs.
    case missingCapability(device: PCIAddress, VirtioPCICfgType)
    /// A capability's structure is shorter than the transport needs.
    case capabilityTooSmall(device: PCIAddress, VirtioPCICfgType, length: UInt64, minimum: UInt64)
    /// No register space was supplied for a BAR a capability points into, or it is too small.
    case barNotMapped(device: PCIAddress, bar: Int)
    case regionOutsideBAR(device: PCIAddress, VirtioPCICfgType, bar: Int, end: UInt64, barLength: Int)
    /// The device did not read back 0 after a reset within the deadline.
    case resetTimeout(device: PCIAddress, status: DeviceStatus)
    /// The device lacks features the caller requires.
    case missingFeatures(device: PCIAddress, missing: FeatureSet, names: [String])
    /// FEATURES_OK did not stick: the device refused the feature set.
    case featuresRefused(device: PCIAddress, written: FeatureSet, status: DeviceStatus)
    /// VERSION_1 is not offered: legacy-only devices are not supported.
    case legacyOnly(device: PCIAddress)
    /// A queue index at or beyond `num_queues`.
    case noSuchQueue(device: PCIAddress, queue: Int, numQueues: Int)
    /// The device reports queue size 0 (queue unavailable) or a size that is not a power of two.
    case queueUnavailable(device: PCIAddress, queue: Int)
    case invalidQueueSize(device: PCIAddress, queue: Int, size: Int, maximum: Int)
    /// A queue is already enabled.
    case queueAlreadyEnabled(device: PCIAddress, queue: Int)
    /// An MSI-X vector write read back as NO_VECTOR (0xffff) or another value.
    case vectorNotAccepted(device: PCIAddress, register: CommonConfigRegister, queue: Int?, written: UInt16, readBack: UInt16)
    /// The notify offset of a queue lies outside the notify region.
    case notifyOutOfRange(device: PCIAddress, queue: Int, offset: UInt64, regionLength: UInt64)
    /// The device set DEVICE_NEEDS_RESET.
    case deviceNeedsReset(device: PCIAddress)
    /// Every register reads as all ones: the device is gone.
    case surpriseRemoval(device: PCIAddress)
    /// Device config kept changing while it was read.
    case configUnstable(device: PCIAddress, attempts: Int)
    /// A device-config read outside the device-config region.
    case deviceConfigOutOfRange(device: PCIAddress, offset: Int, length: Int, regionLength: Int)
    /// A device-config read whose offset or length is not a multiple of its field width (1, 2, 4 or 8).
    case deviceConfigMisaligned(device: PCIAddress, offset: Int, length: Int, fieldWidth: Int)
    /// The device is in a state the operation cannot run in.
    case invalidState(device: PCIAddress, operation: String, status: DeviceStatus)

    /// One sentence naming the device (or file) and what was expected and found.
    public var description: String {
        switch self {
        case let .missingCapability(device, type):
            "\(device): the function has no virtio \(type.name) capability; it is not a modern virtio device."
        case let .capabilityTooSmall(device, type, length, minimum):
            "\(device): the virtio \(type.name) structure is \(hex(length)) bytes long; at least \(hex(minimum)) are needed."
        case let .barNotMapped(device, bar):
            "\(device): BAR \(bar) is not mapped."
        case let .regionOutsideBAR(device, type, bar, end, barLength):
            "\(device): the virtio \(type.name) structure ends at \(hex(end)), past the end of BAR \(bar) (\(hex(barLength)) bytes)."
        case let .resetTimeout(device, status):
            "\(device): device_status reads \(status) after reset; expected 0 (the device did not finish resetting)."
        case let .missingFeatures(device, _, names):
            "\(device): the device does not offer required feature\(names.count == 1 ? "" : "s") \(names.joined(separator: ", "))."
        case let .featuresRefused(device, written, status):
            "\(device): device_status reads \(status) after FEATURES_OK; the device refused the features \(written.names().joined(separator: "|"))."
        case let .legacyOnly(device):
            "\(device): the device does not offer VERSION_1; legacy-only devices are not supported."
        case let .noSuchQueue(device, queue, numQueues):
            "\(device): queue \(queue) does not exist (num_queues is \(numQueues))."
        case let .queueUnavailable(device, queue):
            "\(device): queue \(queue) is unavailable (queue_size reads 0)."
        case let .invalidQueueSize(device, queue, size, maximum):
            "\(device): queue size \(size) for queue \(queue) is not a power of two between 1 and \(maximum)."
        case let .queueAlreadyEnabled(device, queue):
            "\(device): queue \(queue) is already enabled; reset the device to reconfigure it."
        case let .vectorNotAccepted(device, register, queue, written, readBack):
            "\(device): \(register.specName)\(queue.map { " of queue \($0)" } ?? "") reads back \(hex(readBack, width: 4)) after writing \(hex(written, width: 4))\(readBack == CommonConfigLayout.noVector ? " (the device could not allocate the vector)" : "")."
        case let .notifyOutOfRange(device, queue, offset, regionLength):
            "\(device): notify offset \(hex(offset)) of queue \(queue) is outside the notify region (\(hex(regionLength)) bytes)."
        case let .deviceNeedsReset(device):
            "\(device): the device set DEVICE_NEEDS_RESET; it must be reset before further use."
        case let .surpriseRemoval(device):
            "\(device): every register reads all ones; the device was removed or is not responding."
        case let .configUnstable(device, attempts):
            "\(device): device config kept changing (config_generation moved) over \(attempts) reads."
        case let .deviceConfigMisaligned(device, offset, length, fieldWidth):
            "\(device): a device-config read of \(length) bytes at \(hex(offset)) does not consist of whole \(fieldWidth)-byte fields."
        case let .deviceConfigOutOfRange(device, offset, length, regionLength):
            "\(device): device-config read of \(length) bytes at \(hex(offset)) is outside the \(hex(regionLength))-byte region."
        case let .invalidState(device, operation, status):
            "\(device): cannot \(operation) while device_status is \(status)."
        }
    }
}
