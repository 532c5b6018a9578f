import Testing
@testable import VirtioSpec

/// Every number here is copied from `shared/spec/virtio-admin-digest.md`, row by row, so
/// that the spec layer is checked against the digest rather than against itself.
struct SpecTablesTests {
    // Digest §3: (offset, width in bits, field).
    static let commonConfigRows: [(Int, Int, String)] = [
        (0x00, 32, "device_feature_select"), (0x04, 32, "device_feature"), (0x08, 32, "driver_feature_select"),
        (0x0c, 32, "driver_feature"), (0x10, 16, "config_msix_vector"), (0x12, 16, "num_queues"),
        (0x14, 8, "device_status"), (0x15, 8, "config_generation"), (0x16, 16, "queue_select"),
        (0x18, 16, "queue_size"), (0x1a, 16, "queue_msix_vector"), (0x1c, 16, "queue_enable"),
        (0x1e, 16, "queue_notify_off"), (0x20, 32, "queue_desc (low)"), (0x24, 32, "queue_desc (high)"),
        (0x28, 32, "queue_driver (low)"), (0x2c, 32, "queue_driver (high)"), (0x30, 32, "queue_device (low)"),
        (0x34, 32, "queue_device (high)"), (0x38, 16, "queue_notify_data"), (0x3a, 16, "queue_reset"),
        (0x3c, 16, "admin_queue_index"), (0x3e, 16, "admin_queue_num"),
    ]

    @Test("common config register map matches digest §3", arguments: commonConfigRows)
    func commonConfigRegister(row: (Int, Int, String)) throws {
        let register = try #require(CommonConfigRegister(offset: row.0), "no register at \(row.0)")
        #expect(register.width * 8 == row.1)
        #expect(register.specName == row.2)
    }

    @Test func commonConfigCoversEveryRegister() {
        #expect(CommonConfigRegister.allCases.count == Self.commonConfigRows.count)
        #expect(CommonConfigLayout.sizeWithAdminQueue == 0x40)
        #expect(CommonConfigLayout.sizeV1_0 == 0x38)
        #expect(CommonConfigLayout.noVector == 0xffff)
    }

    @Test func deviceStatusBits() {
        #expect(DeviceStatus.acknowledge.rawValue == 0x01)
        #expect(DeviceStatus.driver.rawValue == 0x02)
        #expect(DeviceStatus.driverOK.rawValue == 0x04)
        #expect(DeviceStatus.featuresOK.rawValue == 0x08)
        #expect(DeviceStatus.deviceNeedsReset.rawValue == 0x40)
        #expect(DeviceStatus.failed.rawValue == 0x80)
        #expect(DeviceStatus(rawValue: 0x0b).description == "0x0b (ACKNOWLEDGE|DRIVER|FEATURES_OK)")
    }

    // Digest §5.
    static let featureRows: [(Int, String)] = [
        (24, "NOTIFY_ON_EMPTY"), (27, "ANY_LAYOUT"), (28, "INDIRECT_DESC"), (29, "EVENT_IDX"), (32, "VERSION_1"),
        (33, "ACCESS_PLATFORM"), (34, "RING_PACKED"), (35, "IN_ORDER"), (36, "ORDER_PLATFORM"), (37, "SR_IOV"),
        (38, "NOTIFICATION_DATA"), (39, "NOTIF_CONFIG_DATA"), (40, "RING_RESET"), (41, "ADMIN_VQ"),
    ]

    @Test("reserved feature bits match digest §5", arguments: featureRows)
    func featureBit(row: (Int, String)) {
        #expect(FeatureSet.reservedNames[row.0] == row.1)
        #expect(FeatureSet.bit(named: row.1) == row.0)
        #expect(FeatureSet.bit(named: "VIRTIO_F_" + row.1) == row.0)
    }

    @Test func namedFeatureConstants() {
        #expect(FeatureSet.version1 == FeatureSet(bit: 32))
        #expect(FeatureSet.adminVQ == FeatureSet(bit: 41))
        #expect(FeatureSet.eventIndex == FeatureSet(bit: 29))
        #expect(FeatureSet.indirectDescriptors == FeatureSet(bit: 28))
        #expect(FeatureSet.ringPacked == FeatureSet(bit: 34))
        #expect(FeatureSet.srIOV == FeatureSet(bit: 37))
    }

    @Test func featureWindowsSplitAndJoin() {
        var features: FeatureSet = [.version1, .adminVQ, FeatureSet(bit: 5), FeatureSet(bit: 100)]
        #expect(features.window(0) == 1 << 5)
        #expect(features.window(1) == (1 << 0) | (1 << 9))
        #expect(features.window(2) == 0)
        #expect(features.window(3) == 1 << 4)
        features.setWindow(1, to: 0)
        #expect(features.bits == [5, 100])
    }

    @Test func featureNamesPerDeviceType() {
        let features: FeatureSet = [FeatureSet(bit: 5), .version1, FeatureSet(bit: 45)]
        #expect(features.names(for: .net) == ["MAC", "VERSION_1", "BIT_45"])
        #expect(features.names(for: .block) == ["RO", "VERSION_1", "BIT_45"])
        #expect(FeatureSet.bit(named: "mac", for: .net) == 5)
        #expect(FeatureSet.bit(named: "VIRTIO_NET_F_MQ", for: .net) == 22)
        #expect(FeatureSet.bit(named: "MAC", for: .block) == nil)
        #expect(FeatureSet.bit(named: "BIT_127") == 127)
        #expect(FeatureSet.bit(named: "BIT_128") == nil)
        #expect(FeatureSet.bit(named: "NOT_A_FEATURE") == nil)
        #expect(FeatureSet(mask: "0x100000020")?.bits == [5, 32])
        #expect(FeatureSet(mask: "0xzz") == nil)
        #expect(FeatureSet(bits: [5, 32]).hexMask == "0x100000020")
    }

    // Digest §1.
    @Test func deviceTypesAndPCIIDs() {
        #expect(VirtioDeviceType(pciDeviceID: 0x1041) == .net)
        #expect(VirtioDeviceType(pciDeviceID: 0x1042) == .block)
        #expect(VirtioDeviceType(pciDeviceID: 0x1044) == .entropy)
        #expect(VirtioDeviceType(pciDeviceID: 0x1045) == .balloon)
        #expect(VirtioDeviceType(pciDeviceID: 0x1053) == .vsock)
        #expect(VirtioDeviceType(pciDeviceID: 0x1000) == .net)
        #expect(VirtioDeviceType(pciDeviceID: 0x1001) == .block)
        #expect(VirtioDeviceType(pciDeviceID: 0x1005) == .entropy)
        #expect(VirtioDeviceType(pciDeviceID: 0x1009) == .ninep)
        #expect(VirtioDeviceType(pciDeviceID: 0x1006) == nil)
        #expect(VirtioDeviceType(pciDeviceID: 0x0d57) == nil)
        let names: [(UInt16, String)] = [(1, "net"), (2, "block"), (3, "console"), (4, "entropy"), (5, "balloon"), (8, "scsi"),
                                         (9, "9p"), (16, "gpu"), (18, "input"), (19, "vsock"), (20, "crypto"), (26, "fs")]
        for (id, name) in names {
            #expect(VirtioDeviceType(id).name == name)
            #expect(VirtioDeviceType(name: name) == VirtioDeviceType(id))
            #expect(VirtioDeviceType(id).modernPCIDeviceID == 0x1040 + id)
        }
        #expect(PCIIdentity.isVirtio(vendorID: 0x1af4, deviceID: 0x1041))
        #expect(!PCIIdentity.isVirtio(vendorID: 0x1af4, deviceID: 0x1100))
        #expect(!PCIIdentity.isVirtio(vendorID: 0x8086, deviceID: 0x1041))
    }

    // Digest §2.
    @Test func virtioCapabilityLayout() {
        #expect(VirtioPCICfgType.allCases.map(\.rawValue) == [1, 2, 3, 4, 5, 8, 9])
        #expect(VirtioPCICfgType.allCases.map(\.name) == ["common", "notify", "isr", "device", "pci", "sharedMemory", "vendor"])
        #expect(VirtioPCICapLayout.cfgType == 3 && VirtioPCICapLayout.bar == 4 && VirtioPCICapLayout.id == 5)
        #expect(VirtioPCICapLayout.offset == 8 && VirtioPCICapLayout.length == 12 && VirtioPCICapLayout.size == 16)
        #expect(VirtioPCICapLayout.notifyOffMultiplier == 16 && VirtioPCICapLayout.notifySize == 20)
        #expect(VirtioPCICapLayout.offsetHigh == 16 && VirtioPCICapLayout.lengthHigh == 20 && VirtioPCICapLayout.size64 == 24)
        #expect(PCICapabilityID.vendorSpecific.rawValue == 0x09)
        #expect(PCICapabilityID.msix.rawValue == 0x11)
        #expect(PCICapabilityID.pciExpress.rawValue == 0x10)
        #expect(PCIExtendedCapabilityID.srIOV.rawValue == 0x0010)
    }

    // Digest §9.
    @Test func sriovAndMSIXLayout() {
        let sriovRows: [(Int, Int)] = [
            (SRIOVLayout.capabilities, 0x04), (SRIOVLayout.control, 0x08), (SRIOVLayout.status, 0x0a),
            (SRIOVLayout.initialVFs, 0x0c), (SRIOVLayout.totalVFs, 0x0e), (SRIOVLayout.numVFs, 0x10),
            (SRIOVLayout.functionDependencyLink, 0x12), (SRIOVLayout.firstVFOffset, 0x14), (SRIOVLayout.vfStride, 0x16),
            (SRIOVLayout.vfDeviceID, 0x1a), (SRIOVLayout.supportedPageSizes, 0x1c), (SRIOVLayout.systemPageSize, 0x20),
            (SRIOVLayout.vfBAR0, 0x24), (SRIOVLayout.vfMigrationState, 0x3c),
        ]
        for (ours, digest) in sriovRows { #expect(ours == digest) }
        #expect(MSIXLayout.messageControl == 2 && MSIXLayout.tableOffsetBIR == 4 && MSIXLayout.pbaOffsetBIR == 8)
        #expect(MSIXLayout.tableSizeMask == 0x7ff && MSIXLayout.functionMask == 1 << 14 && MSIXLayout.enable == 1 << 15)
    }

    // Digest §6.
    @Test func splitQueueLayout() {
        #expect(SplitQueueLayout.descriptorSize == 16)
        #expect(SplitQueueLayout.descriptorLength == 8 && SplitQueueLayout.descriptorFlags == 12 && SplitQueueLayout.descriptorNext == 14)
        #expect(DescriptorFlags.next.rawValue == 1 && DescriptorFlags.write.rawValue == 2 && DescriptorFlags.indirect.rawValue == 4)
        #expect(SplitQueueLayout.availSize(queueSize: 16) == 2 + 2 + 32 + 2)
        #expect(SplitQueueLayout.usedSize(queueSize: 16) == 2 + 2 + 128 + 2)
        #expect(SplitQueueLayout.usedEventOffset(queueSize: 8) == 20)
        #expect(SplitQueueLayout.availEventOffset(queueSize: 8) == 68)
        // vring_need_event: an event index inside (old, new] fires, outside does not.
        #expect(ringNeedsEvent(eventIndex: 5, newIndex: 6, oldIndex: 5))
        #expect(!ringNeedsEvent(eventIndex: 7, newIndex: 6, oldIndex: 5))
        #expect(ringNeedsEvent(eventIndex: 0xffff, newIndex: 1, oldIndex: 0xfffe))
    }
}

extension FeatureSet {
    init(bits: [Int]) {
        self = []
        for bit in bits { insert(FeatureSet(bit: bit)) }
    }
}
