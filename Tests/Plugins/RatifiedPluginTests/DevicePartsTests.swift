import DevicePartsResourceManager
import PCIConfig
import ResourceManager
import ResourceObjectsResourceManager
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import Virtqueue

struct DevicePartsTests {
    /// Brings VF `index` up as its driver would: features, two queues, DRIVER_OK.
    func bringUpVF(_ group: SimulatedAdminGroup, _ index: Int) throws {
        let transport = try ModernPCITransport(config: group.device.vfConfigSpace(index), bars: [0: group.device.vfBAR(index)])
        try transport.reset()
        _ = try transport.negotiate(required: [.version1], wanted: [.eventIndex, FeatureSet(bit: 5)])
        let rings = try group.device.memory.allocate(length: 0x20000, alignment: 4096)
        for queue in 0..<2 {
            let area = rings.deviceAddress + UInt64(queue) * 0x10000
            _ = try transport.setUpQueue(queue, size: 64, descriptorArea: area, driverArea: area + 0x1000, deviceArea: area + 0x2000,
                                         msixVector: UInt16(queue))
        }
        try transport.driverOK()
    }

    @Test func saveThenRestoreIntoAnotherVFReproducesItsDriverVisibleState() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        try bringUpVF(group, 0)
        let before = group.device.vfDriverState(0)
        #expect(before.status.contains(.driverOK) && before.queues[1].enabled && before.queues[1].size == 64)
        let path = temporaryPath("parts")
        let saved = try await group.run("parts", "save", ["vf": ["0"], "file": [path]])
        #expect(saved["parts"] == .int(8), "DEV_FEATURES, DRV_FEATURES, PCI_COMMON_CFG, DEVICE_STATUS, 2 VQ_CFG, 2 VQ_NOTIFY_CFG")
        #expect(!group.device.vfStopped(0), "resumed after the save")
        #expect(group.device.vfDriverState(3) != before)
        _ = try await group.run("parts", "restore", ["vf": ["3"], "file": [path]])
        #expect(group.device.vfDriverState(3) == before, "driver features, status and every queue as VF 0 had them")
        #expect(group.device.member(3).inUse, "restored to DRIVER_OK, VF 3 is in use (resource changes get EBUSY)")
        #expect(!group.device.vfStopped(3))
        #expect(group.device.devicePartsObjectCount == 0, "both objects destroyed")
        let file = try DevicePartsResourceManager.readFile(path)
        #expect(file.pf == "0000:3b:00.0" && file.vf == 0 && file.deviceType == .net)
    }

    /// A VF with 32 queues has parts of more than a command slot (512 bytes): DEV_PARTS_GET
    /// and DEV_PARTS_SET go with DMA memory of their own, and the VF's state round-trips.
    @Test func partsLargerThanACommandSlotRoundTrip() async throws {
        let group = try await ratifiedGroup { $0.regularQueues = 32 }
        defer { group.shutDown() }
        let transport = try ModernPCITransport(config: group.device.vfConfigSpace(0), bars: [0: group.device.vfBAR(0)])
        try transport.reset()
        _ = try transport.negotiate(required: [.version1], wanted: [.eventIndex])
        let rings = try group.device.memory.allocate(length: 32 * 0x4000, alignment: 4096)
        for queue in 0..<32 {
            let area = rings.deviceAddress + UInt64(queue) * 0x4000
            _ = try transport.setUpQueue(queue, size: 16, descriptorArea: area, driverArea: area + 0x1000, deviceArea: area + 0x2000,
                                         msixVector: UInt16(queue % 2))
        }
        try transport.driverOK()
        let before = group.device.vfDriverState(0)
        let path = temporaryPath("parts")
        let saved = try await group.run("parts", "save", ["vf": ["0"], "file": [path]])
        #expect(saved["parts"] == .int(4 + 2 * 32), "DEV_FEATURES, DRV_FEATURES, PCI_COMMON_CFG, DEVICE_STATUS, 32 VQ_CFG, 32 VQ_NOTIFY_CFG")
        let file = try DevicePartsResourceManager.readFile(path)
        #expect(file.parts.count > 512, "\(file.parts.count) bytes of parts")
        _ = try await group.run("parts", "restore", ["vf": ["3"], "file": [path]])
        #expect(group.device.vfDriverState(3) == before, "all 32 queues as VF 0 had them")
        #expect(group.device.memory.releasedMemoryAccesses == 0)
    }

    @Test func anObjectIdInUseIsSkipped() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        // Another user of the PF holds DEV_PARTS object 0 (ids are per PF).
        try await ResourceObjectsResourceManager.create(ResourceObjectAddress(type: 0, id: 0, member: GroupMemberID(vfIndex: 5)),
                                                        specificData: [0, 0, 0, 0, 0, 0, 0, 0], driver: group.driver)
        let sent = SentCommands(group.driver)
        _ = try await group.run("parts", "save", ["vf": ["0"], "file": [temporaryPath("parts")]])
        // CREATE id 0 (EEXIST), CREATE id 1, then METADATA_GET on id 1 (id le32 at d+4).
        #expect(sent.all[1][24 + 4] == 0 && sent.all[2][24 + 4] == 1 && sent.all[3][24 + 4] == 1)
        #expect(group.device.devicePartsObjectCount == 1, "the other user's object stays; ours is destroyed")
    }

    @Test func keepStoppedLeavesTheVFStopped() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        _ = try await group.run("parts", "save", ["vf": ["1"], "file": [temporaryPath("parts")], "keep-stopped": ["yes"]])
        #expect(group.device.vfStopped(1))
        _ = try await group.run("parts", "mode", ["vf": ["1"], "state": ["resume"]])
        #expect(!group.device.vfStopped(1))
    }

    @Test func restoreIntoAVFWithOtherDeviceFeaturesIsRefusedByTheDevice() async throws {
        var members = (0..<8).map { index in
            MemberResources(msixVectors: 2, features: SimulatedDeviceConfiguration().initialMemberFeatures, mac: [0x52, 0x54, 0, 0x3b, 0, UInt8(index)])
        }
        members[2].features.insert(FeatureSet(bit: 17))
        let group = try await ratifiedGroup(members: members)
        defer { group.shutDown() }
        let path = temporaryPath("parts")
        _ = try await group.run("parts", "save", ["vf": ["0"], "file": [path]])
        let errorsBefore = group.device.counters.adminErrors
        await #expect(throws: PluginError.refused(plugin: "parts", message: "0000:3b:00.0 refused the parts for VF 2 (DEV_PARTS_SET: EINVAL/INVALID_FIELD): the saved VF offered features 0x320018023 and VF 2 offers 0x320038023; a device checks DEV_FEATURES against its own and never applies them.")) {
            _ = try await group.run("parts", "restore", ["vf": ["2"], "file": [path]])
        }
        #expect(group.device.counters.adminErrors == errorsBefore + 1, "the device (the model) refused it")
        #expect(!group.device.vfStopped(2), "the VF was resumed after the refusal")
        #expect(group.device.devicePartsObjectCount == 0)
    }

    @Test func anUnwritableFileIsRefusedBeforeTheVFIsStopped() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        await #expect(throws: PluginError.badArgument(plugin: "parts", message: "cannot write /nonexistent/dir/vf.parts: No such file or directory; nothing was sent.")) {
            _ = try await group.run("parts", "save", ["vf": ["0"], "file": ["/nonexistent/dir/vf.parts"]])
        }
        #expect(group.device.counters.adminCommands == before && !group.device.vfStopped(0))
    }

    @Test func restoreOfAnotherDeviceTypeIsRefusedBeforeSending() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let path = temporaryPath("parts")
        try DevicePartsResourceManager.writeFile(DevicePartsFile(pf: "0000:3b:00.0", vf: 0, deviceType: .block, parts: []), to: path)
        let before = group.device.counters.adminCommands
        await #expect(throws: PluginError.badArgument(plugin: "parts", message: "the file holds the parts of a virtio block VF, but the VFs of 0000:3b:00.0 are virtio net; parts restore only into a VF of the same type.")) {
            _ = try await group.run("parts", "restore", ["vf": ["1"], "file": [path]])
        }
        #expect(group.device.counters.adminCommands == before)
    }

    @Test func partsSetWhileRunningIsRefusedWithEBUSY() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let object = ResourceObjectAddress(type: 0, id: 0, member: GroupMemberID(vfIndex: 0))
        try await ResourceObjectsResourceManager.create(object, specificData: [1, 0, 0, 0, 0, 0, 0, 0], driver: group.driver)
        let response = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x10), member: GroupMemberID(vfIndex: 0), data: object.header))
        #expect(response.status == .ebusy, "DEV_PARTS_SET on a running VF")
        try await DevicePartsResourceManager.setMode(stopped: true, member: object.member, driver: group.driver)
        let stopped = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x10), member: object.member, data: object.header))
        #expect(stopped.status == .ok, "the same SET (no parts) once stopped")
        // A part whose length does not match is refused [dpcmds:348-351]; DRV_FEATURES is 16 bytes.
        let badPart = [0x01, 0x01, 0, 0] + [UInt8](repeating: 0, count: 8) + [8, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        let bad = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x10), member: object.member, data: object.header + badPart))
        #expect(bad.status == .einval && bad.qualifier == .invalidField)
    }

    @Test func wireBytesFollowTheFactSheet() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let sent = SentCommands(group.driver)
        _ = try await group.run("parts", "save", ["vf": ["1"], "file": [temporaryPath("parts")]])
        let commands = sent.all
        try #require(commands.count == 6)
        // §2.5 DEV_MODE_SET: SR-IOV group (1), member 2 (VF 1), flags u8 @d+0 = 0x01 (STOPPED);
        // the driver pads the part to a multiple of 8 bytes [admin:622-624].
        #expect(commands[0] == header(opcode: 0x11, group: 1, member: 2) + [0x01, 0, 0, 0, 0, 0, 0, 0])
        // §2.4/§2.5 CREATE: type le16 0 @d+0, reserved[2], id le32 0 @d+4, flags le64 0 @d+8, dev_parts.type 0 (GET) @d+16, reserved[7] (24 bytes).
        #expect(commands[1] == header(opcode: 0x0a, group: 1, member: 2) + [UInt8](repeating: 0, count: 24))
        // METADATA_GET: hdr (8), type u8 0 (SIZE) @d+8, reserved[7] (16 bytes).
        #expect(commands[2] == header(opcode: 0x0e, group: 1, member: 2) + [UInt8](repeating: 0, count: 16))
        // DEV_PARTS_GET: hdr (8), type u8 1 (ALL) @d+8, reserved[7].
        #expect(commands[3] == header(opcode: 0x0f, group: 1, member: 2) + [UInt8](repeating: 0, count: 8) + [1, 0, 0, 0, 0, 0, 0, 0])
        // DESTROY: hdr only (8 bytes).
        #expect(commands[4] == header(opcode: 0x0d, group: 1, member: 2) + [UInt8](repeating: 0, count: 8))
        #expect(commands[5] == header(opcode: 0x11, group: 1, member: 2) + [0x00, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func partsReturnedByTheModelFollowThePartHeaderTable() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let object = ResourceObjectAddress(type: 0, id: 1, member: GroupMemberID(vfIndex: 0))
        try await ResourceObjectsResourceManager.create(object, specificData: [0, 0, 0, 0, 0, 0, 0, 0], driver: group.driver)
        let size = try await DevicePartsResourceManager.partsSize(object, driver: group.driver)
        let bytes = try await DevicePartsResourceManager.allParts(object, size: size, driver: group.driver)
        #expect(bytes.count == size && size == 243)
        // First part: part_type le16 0x0100 (DEV_FEATURES) @0, flags @2 = 0x01 (OPTIONAL), reserved @3,
        // selector @4 (8 bytes, 0), length le32 @12 = 16, value @16: le64 feature words.
        #expect(Array(bytes[0..<16]) == [0x00, 0x01, 0x01, 0x00] + [UInt8](repeating: 0, count: 8) + [16, 0, 0, 0])
        #expect(bytes.readLE(UInt64.self, at: 16) == SimulatedDeviceConfiguration().initialMemberFeatures.low64)
        // Second: DRV_FEATURES 0x0101, no flags, 16 bytes (the VF has no driver: 0).
        #expect(Array(bytes[32..<48]) == [0x01, 0x01, 0x00, 0x00] + [UInt8](repeating: 0, count: 8) + [16, 0, 0, 0])
        // Third: PCI_COMMON_CFG 0x0102, selector.pci_common_cfg.offset le32 = 18 (num_queues), length 2, value 2.
        #expect(Array(bytes[64..<82]) == [0x02, 0x01, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0])
        // Fourth: DEVICE_STATUS 0x0103, length 1.
        #expect(Array(bytes[82..<99]) == [0x03, 0x01, 0, 0] + [UInt8](repeating: 0, count: 8) + [1, 0, 0, 0, 0])
        // Then VQ_CFG 0x0104 for queue 0: selector.vq_index le16 @4, length 32; queue_size le16 @v+0 = 256, vector @v+2 = 0xffff.
        #expect(Array(bytes[99..<119]) == [0x04, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0x00, 0x01, 0xff, 0xff])
        // METADATA_GET COUNT = 8; a SET object cannot be read from (ENXIO).
        var count = object.header + [UInt8](repeating: 0, count: 8)
        count[8] = 1
        let counted = try await group.driver.run(AdminCommand(opcode: AdminOpcode(0xe), member: object.member, data: count, resultLength: 8))
        #expect(counted.readLE(UInt32.self, at: 0) == 8)
        // GET with a buffer too small for the parts: ENOMEM (fact sheet A3).
        let short = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0xf), member: object.member,
                                                               data: object.header + [1, 0, 0, 0, 0, 0, 0, 0], resultLength: 64))
        #expect(short.status == .enomem)
    }

    @Test func setPartsTakeEffectOnResume() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let member = GroupMemberID(vfIndex: 5)
        let object = ResourceObjectAddress(type: 0, id: 0, member: member)
        try await DevicePartsResourceManager.setMode(stopped: true, member: member, driver: group.driver)
        try await ResourceObjectsResourceManager.create(object, specificData: [1, 0, 0, 0, 0, 0, 0, 0], driver: group.driver)
        // DEVICE_STATUS 0x0103, length 1, value 0x03 (ACKNOWLEDGE|DRIVER).
        let status = [0x03, 0x01, 0, 0] + [UInt8](repeating: 0, count: 8) + [1, 0, 0, 0, 0x03]
        try await DevicePartsResourceManager.setParts(object, parts: status, driver: group.driver)
        #expect(group.device.vfDriverState(5).status == [], "not applied while stopped [dpcmds:239-240]")
        try await DevicePartsResourceManager.setMode(stopped: false, member: member, driver: group.driver)
        #expect(group.device.vfDriverState(5).status == [.acknowledge, .driver])
    }

    @Test func aStoppedVFTouchesNoQueueAndServesWhatWaitedOnResume() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let device = group.device
        let (queue, notifier, buffers) = try drivenQueue(of: device, vf: 6)
        buffers.bytes[0] = 0x5a
        _ = try await group.run("parts", "mode", ["vf": ["6"], "state": ["stop"]])
        _ = try queue.add(readable: [DMABuffer(address: buffers.deviceAddress(at: 0), length: 1)],
                          writable: [DMABuffer(address: buffers.deviceAddress(at: 256), length: 16)])
        if queue.publish() { notifier.notify() }
        #expect(device.vfCounters(6).notifies == 1, "the stopped VF still accepts the notification")
        let early = try queue.takeCompletions { _ in }
        #expect(device.vfCounters(6).queueRequests == 0 && early == 0, "but touches no queue")
        _ = try await group.run("parts", "mode", ["vf": ["6"], "state": ["resume"]])
        #expect(device.vfCounters(6).queueRequests == 1, "resumed, it serves the request that waited")
        var completed: [UInt32] = []
        _ = try queue.takeCompletions { completed.append($0.length) }
        #expect(completed == [1] && buffers.bytes[256] == 0x5a)
    }

    @Test func aRestoredVFGoesOnWhereTheRingStands() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let device = group.device
        let (queue, notifier, buffers) = try drivenQueue(of: device, vf: 6)
        func request(_ value: UInt8, notify: () -> Void) throws -> [UInt8] {
            buffers.bytes[0] = value
            _ = try queue.add(readable: [DMABuffer(address: buffers.deviceAddress(at: 0), length: 1)],
                              writable: [DMABuffer(address: buffers.deviceAddress(at: 256), length: 16)])
            if queue.publish() { notify() }
            var lengths: [UInt32] = []
            _ = try queue.takeCompletions { lengths.append($0.length) }
            return lengths.isEmpty ? [] : [buffers.bytes[256]]
        }
        for value in 1...3 { #expect(try request(UInt8(value)) { notifier.notify() } == [UInt8(value)]) }
        // Migrate: save VF 6 (stopped, kept stopped), restore into VF 7; the guest's ring stays where it is.
        let path = temporaryPath("parts")
        _ = try await group.run("parts", "save", ["vf": ["6"], "file": [path], "keep-stopped": ["yes"]])
        _ = try await group.run("parts", "restore", ["vf": ["7"], "file": [path]])
        // The next request, notified to VF 7, is served once; the three before it are not served again.
        let notifyVF7 = { device.vfBAR(7).write16(0, at: Int(SimulatedBARLayout.notifyOffset)) }
        #expect(try request(9, notify: notifyVF7) == [9])
        #expect(device.vfCounters(7).queueRequests == 1 && device.vfCounters(6).queueRequests == 3)
    }

    @Test func modeSetRules() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let member = GroupMemberID(vfIndex: 4)
        try await DevicePartsResourceManager.setMode(stopped: true, member: member, driver: group.driver)
        try await DevicePartsResourceManager.setMode(stopped: true, member: member, driver: group.driver)  // stopping a stopped VF succeeds
        #expect(group.device.vfStopped(4))
        let bad = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x11), member: member, data: [0x02]))
        #expect(bad.status == .einval && bad.qualifier == .invalidField, "only bit 0 is defined")
        #expect(group.device.vfStopped(4), "a refused DEV_MODE_SET changes nothing")
        let noVF = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x11), member: GroupMemberID(rawValue: 9), data: [0x01]))
        #expect(noVF.status == .einval && noVF.qualifier == .invalidMember)
        await #expect(throws: PluginError.badArgument(plugin: "parts", message: "the mode is 'stop' or 'resume' (the spec defines only STOPPED and running).")) {
            _ = try await group.run("parts", "mode", ["vf": ["4"], "state": ["freeze"]])
        }
    }

    @Test func partsFilesAreCheckedWhenRead() throws {
        let path = temporaryPath("parts")
        try DevicePartsResourceManager.writeFile(DevicePartsFile(pf: "0000:3b:00.0", vf: 1, deviceType: .net,
                                                                 parts: DevicePart.encode([DevicePart(type: 0x103, value: [0x0f])])), to: path)
        let file = try DevicePartsResourceManager.readFile(path)
        #expect(file.description == "device parts of PF 0000:3b:00.0 VF 1, a virtio net device (17 bytes)\n  DEVICE_STATUS: 0x0f (ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK)")
        var bytes = file.encoded
        bytes.removeLast()
        #expect(throws: DevicePartsError.file(path: "x", message: "the header says 17 bytes of parts but 16 follow")) {
            _ = try DevicePartsFile(decoding: bytes, path: "x")
        }
        #expect(throws: DevicePartsError.file(path: "x", message: "not a device parts file (no header)")) {
            _ = try DevicePartsFile(decoding: [1, 2, 3], path: "x")
        }
        // A part header that claims more value bytes than follow.
        let cut = Array("virtio-admin device parts 1\npf a\nvf 0\ntype net\nbytes 16\n\n".utf8) + [3, 1, 0, 0] + [UInt8](repeating: 0, count: 8) + [9, 0, 0, 0]
        #expect(throws: DevicePartsError.file(path: "x", message: "the device parts do not decode: the part at byte 0 says 9 value bytes but 0 remain.")) {
            _ = try DevicePartsFile(decoding: cut, path: "x")
        }
    }
}

/// VF `vf` driven as its own driver would: VERSION_1, queue 0 (16 entries) set up, DRIVER_OK,
/// and a page of buffers.
func drivenQueue(of device: SimulatedSRIOVDevice, vf: Int) throws -> (SplitVirtqueue, QueueNotifier, DMARegion) {
    let transport = try ModernPCITransport(config: device.vfConfigSpace(vf), bars: [0: device.vfBAR(vf)])
    _ = try transport.negotiate(required: [.version1])
    let queue = try SplitVirtqueue(size: 16, allocator: device.memory, eventIndex: false)
    let notifier = try transport.setUpQueue(0, size: 16, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea, deviceArea: queue.deviceArea)
    try transport.driverOK()
    return (queue, notifier, try device.memory.allocate(length: 4096, alignment: 4096))
}

/// A device that answers DEV_PARTS_GET with fewer bytes than METADATA_GET's SIZE (the spec
/// makes SIZE a maximum): the driver zero-fills the rest, which must not be read as parts.
struct ShortPartsDevice: AdminCommandRunner {
    let written: [UInt8]
    var address: PCIAddress { PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 0) }
    var supported: AdminOpcodeBitmap { AdminOpcodeBitmap(opcodes: [AdminOpcode(0xf)]) }
    var inUse: AdminOpcodeBitmap { supported }
    func name(of opcode: AdminOpcode) -> String { opcode.specName }
    func submit(_ command: AdminCommand, timeout: Duration?) async throws(AdminError) -> AdminResponse {
        AdminResponse(status: .ok, qualifier: AdminStatusQualifier(rawValue: 0),
                      result: written + [UInt8](repeating: 0, count: command.resultLength - written.count), resultBytesWritten: written.count)
    }
}

@Test func partsAreOnlyTheBytesTheDeviceWrote() async throws {
    // Any 20 bytes: what matters is that the 236 zero-filled bytes after them are dropped.
    let written: [UInt8] = Array(1...20)
    let object = ResourceObjectAddress(type: 0x200, id: 1, member: GroupMemberID(vfIndex: 0))
    let parts = try await DevicePartsResourceManager.allParts(object, size: 256, driver: ShortPartsDevice(written: written))
    #expect(parts == written)
}
