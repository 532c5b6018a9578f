/// The `cfg_type` of a virtio vendor capability. Spec: §4.1.4 "Virtio Structure PCI Capabilities".
public enum VirtioPCICfgType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Spec: VIRTIO_PCI_CAP_COMMON_CFG.
    case common = 1
    /// Spec: VIRTIO_PCI_CAP_NOTIFY_CFG.
    case notify = 2
    /// Spec: VIRTIO_PCI_CAP_ISR_CFG.
    case isr = 3
    /// Spec: VIRTIO_PCI_CAP_DEVICE_CFG.
    case device = 4
    /// Spec: VIRTIO_PCI_CAP_PCI_CFG (a window to BAR access through config space).
    case pci = 5
    /// Spec: VIRTIO_PCI_CAP_SHARED_MEMORY_CFG (uses the 64-bit capability variant).
    case sharedMemory = 8
    /// Spec: VIRTIO_PCI_CAP_VENDOR_CFG.
    case vendor = 9

    /// The name `show --json` prints.
    public var name: String {
        switch self {
        case .common: "common"
        case .notify: "notify"
        case .isr: "isr"
        case .device: "device"
        case .pci: "pci"
        case .sharedMemory: "sharedMemory"
        case .vendor: "vendor"
        }
    }
    /// The name, as ``name``.
    public var description: String { name }
}

/// Layout of `struct virtio_pci_cap` and its variants. Spec: §4.1.4.
package enum VirtioPCICapLayout {
    package static let capVendor = 0
    package static let capNext = 1
    package static let capLength = 2
    package static let cfgType = 3
    package static let bar = 4
    package static let id = 5
    package static let offset = 8
    package static let length = 12
    /// `sizeof(struct virtio_pci_cap)`.
    package static let size = 16
    /// `struct virtio_pci_notify_cap`: `notify_off_multiplier` le32 @16; 20 bytes.
    package static let notifyOffMultiplier = 16
    package static let notifySize = 20
    /// `struct virtio_pci_cap64`: `offset_hi` @16, `length_hi` @20; 24 bytes.
    package static let offsetHigh = 16
    package static let lengthHigh = 20
    package static let size64 = 24
    /// `struct virtio_pci_cfg_cap`: `pci_cfg_data[4]` @16; 20 bytes.
    package static let pciCfgData = 16
    package static let pciCfgSize = 20
    /// BAR values above this are reserved; a driver ignores such capabilities.
    package static let maximumBAR: UInt8 = 5

    /// The size of the capability structure a `cfg_type` uses (its minimum `cap_len`).
    package static func size(of type: VirtioPCICfgType) -> Int {
        switch type {
        case .notify: notifySize
        case .sharedMemory: size64
        case .pci: pciCfgSize
        default: size
        }
    }
}

/// A register of `struct virtio_pci_common_cfg`: offset and natural width.
///
/// Spec: §4.1.4.3 "Common configuration structure layout"; digest §3. The 64-bit queue
/// addresses are accessed as two 32-bit halves (`…Low`/`…High`).
public enum CommonConfigRegister: Int, CaseIterable, Sendable, CustomStringConvertible {
    case deviceFeatureSelect = 0x00
    case deviceFeature = 0x04
    case driverFeatureSelect = 0x08
    case driverFeature = 0x0c
    case configMSIXVector = 0x10
    case numQueues = 0x12
    case deviceStatus = 0x14
    case configGeneration = 0x15
    case queueSelect = 0x16
    case queueSize = 0x18
    case queueMSIXVector = 0x1a
    case queueEnable = 0x1c
    case queueNotifyOff = 0x1e
    case queueDescLow = 0x20
    case queueDescHigh = 0x24
    case queueDriverLow = 0x28
    case queueDriverHigh = 0x2c
    case queueDeviceLow = 0x30
    case queueDeviceHigh = 0x34
    case queueNotifyData = 0x38
    case queueReset = 0x3a
    case adminQueueIndex = 0x3c
    case adminQueueNum = 0x3e

    /// Byte offset in the common-config region.
    public var offset: Int { rawValue }

    /// Natural access width in bytes (1, 2 or 4).
    public var width: Int {
        switch self {
        case .deviceStatus, .configGeneration: 1
        case .configMSIXVector, .numQueues, .queueSelect, .queueSize, .queueMSIXVector, .queueEnable,
             .queueNotifyOff, .queueNotifyData, .queueReset, .adminQueueIndex, .adminQueueNum: 2
        default: 4
        }
    }

    /// Whether the driver may write it (read-only registers are device-owned).
    public var isDriverWritable: Bool {
        switch self {
        case .deviceFeature, .numQueues, .configGeneration, .queueNotifyOff, .queueNotifyData,
             .adminQueueIndex, .adminQueueNum: false
        default: true
        }
    }

    /// The spec's field name.
    public var specName: String {
        switch self {
        case .deviceFeatureSelect: "device_feature_select"
        case .deviceFeature: "device_feature"
        case .driverFeatureSelect: "driver_feature_select"
        case .driverFeature: "driver_feature"
        case .configMSIXVector: "config_msix_vector"
        case .numQueues: "num_queues"
        case .deviceStatus: "device_status"
        case .configGeneration: "config_generation"
        case .queueSelect: "queue_select"
        case .queueSize: "queue_size"
        case .queueMSIXVector: "queue_msix_vector"
        case .queueEnable: "queue_enable"
        case .queueNotifyOff: "queue_notify_off"
        case .queueDescLow: "queue_desc (low)"
        case .queueDescHigh: "queue_desc (high)"
        case .queueDriverLow: "queue_driver (low)"
        case .queueDriverHigh: "queue_driver (high)"
        case .queueDeviceLow: "queue_device (low)"
        case .queueDeviceHigh: "queue_device (high)"
        case .queueNotifyData: "queue_notify_data"
        case .queueReset: "queue_reset"
        case .adminQueueIndex: "admin_queue_index"
        case .adminQueueNum: "admin_queue_num"
        }
    }

    /// The spec's field name, as ``specName``.
    public var description: String { specName }

    /// Looks a register up by offset.
    public init?(offset: Int) { self.init(rawValue: offset) }
}

/// Sizes and sentinels of the common configuration structure.
package enum CommonConfigLayout {
    /// Length of the structure up to and including `queue_device` (virtio 1.0).
    package static let sizeV1_0 = 0x38
    /// Length including `queue_notify_data` and `queue_reset` (1.2).
    package static let sizeWithQueueReset = 0x3c
    /// Length including `admin_queue_index` and `admin_queue_num` (1.3): a common-cfg
    /// capability shorter than this cannot carry an admin queue.
    package static let sizeWithAdminQueue = 0x40
    /// "No vector" for `config_msix_vector`/`queue_msix_vector`; also what a failed
    /// allocation reads back as. Spec: VIRTIO_MSI_NO_VECTOR.
    package static let noVector: UInt16 = 0xffff
}

/// ISR status bits. Spec: §4.1.4.5. Reading the ISR clears it.
package enum ISRStatus {
    package static let queueInterrupt: UInt8 = 0x1
    package static let configChange: UInt8 = 0x2
}
