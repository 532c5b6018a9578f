import CapabilitiesResourceManager
import ResourceManager
import ResourceObjectsResourceManager
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec

struct CapabilitiesTests {
    @Test func handshakeSetsTheMinimumOfDeviceAndWanted() async throws {
        // The device offers more get objects and fewer set objects than wanted.
        let group = try await ratifiedGroup(handshake: nil) {
            $0.devicePartsGetLimit = 6
            $0.devicePartsSetLimit = 1
        }
        defer { group.shutDown() }
        let result = try #require(try await CapabilitiesResourceManager.handshake(driver: group.driver, wanted: DevicePartsCapability(getLimit: 2, setLimit: 5)))
        #expect(result.capabilityIDs == [0])
        #expect(result.deviceParts == DevicePartsCapability(getLimit: 6, setLimit: 1))
        #expect(result.driverParts == DevicePartsCapability(getLimit: 2, setLimit: 1))
        #expect(group.device.driverDevicePartsLimits == (2, 1), "the model holds min(device, wanted)")
        // The device enforces the driver's limits: GET object ids 0–1 only, one SET object.
        let member = GroupMemberID(vfIndex: 0)
        try await ResourceObjectsResourceManager.create(ResourceObjectAddress(type: 0, id: 1, member: member), specificData: [0] + [UInt8](repeating: 0, count: 7), driver: group.driver)
        let tooHigh = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0xa), member: member,
                                                                 data: [0, 0, 0, 0, 2, 0, 0, 0] + [UInt8](repeating: 0, count: 16)))
        #expect(tooHigh.status == .einval && tooHigh.qualifier == .invalidField, "id 2 is not below the driver's get limit 2")
    }

    @Test func driverValuesAboveTheDevicesAreRefused() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        await #expect(throws: AdminError.commandFailed(device: group.device.pfAddress, opcode: AdminOpcode(9), opcodeName: "DRIVER_CAP_SET",
                                                       member: .none, status: .einval, qualifier: .invalidField)) {
            try await CapabilitiesResourceManager.setDriverCapability(0, [5, 1], driver: group.driver)
        }
        #expect(group.device.driverDevicePartsLimits == (4, 4), "a refused DRIVER_CAP_SET changes nothing")
        await #expect(throws: AdminError.commandFailed(device: group.device.pfAddress, opcode: AdminOpcode(8), opcodeName: "DEVICE_CAP_GET",
                                                       member: .none, status: .enxio, qualifier: .ok)) {
            _ = try await CapabilitiesResourceManager.deviceCapability(0x0800, resultLength: 20, driver: group.driver)
        }
    }

    @Test func lowerLimitsWhileObjectsExistAreRefusedWithEBUSY() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        try await ResourceObjectsResourceManager.create(ResourceObjectAddress(type: 0, id: 3, member: GroupMemberID(vfIndex: 0)),
                                                        specificData: [0] + [UInt8](repeating: 0, count: 7), driver: group.driver)
        await #expect(throws: AdminError.commandFailed(device: group.device.pfAddress, opcode: AdminOpcode(9), opcodeName: "DRIVER_CAP_SET",
                                                       member: .none, status: .ebusy, qualifier: .ok)) {
            try await CapabilitiesResourceManager.setDriverCapability(0, [1, 1], driver: group.driver)
        }
    }

    @Test func capabilityCommandsBelongToTheSelfGroup() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let sriov = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(7), groupType: .srIOV, resultLength: 8))
        #expect(sriov.status == .einval && sriov.qualifier == .invalidGroup)
        let member = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(7), groupType: .selfGroup, member: GroupMemberID(rawValue: 1), resultLength: 8))
        #expect(member.status == .einval && member.qualifier == .invalidMember, "the self group's only member is 0")
        // The self group's own list (LIST_QUERY, group type 0): opcodes 0, 1, 7, 8, 9.
        let list = try await group.driver.run(AdminCommand(opcode: .listQuery, groupType: .selfGroup, resultLength: 8))
        #expect(list == [0x83, 0x03, 0, 0, 0, 0, 0, 0])
    }

    @Test func anOwnerResetClearsDriverCapabilitiesAndObjects() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        try await ResourceObjectsResourceManager.create(ResourceObjectAddress(type: 0, id: 0, member: GroupMemberID(vfIndex: 0)),
                                                        specificData: [0] + [UInt8](repeating: 0, count: 7), driver: group.driver)
        #expect(group.device.devicePartsObjectCount == 1)
        try await group.driver.reinitialize()
        #expect(group.device.driverDevicePartsLimits == (0, 0) && group.device.devicePartsObjectCount == 0)
        // Without DRIVER_CAP_SET the limit counts as 0: no object can be created.
        await #expect(throws: PluginError.refused(plugin: "resobj", message: "0000:3b:00.0 refused DEV_PARTS object 0: its type, flags, data or id (ids run from 0 to the driver limit set with DRIVER_CAP_SET, minus 1) is invalid (RESOURCE_OBJ_CREATE: EINVAL/INVALID_FIELD).")) {
            _ = try await group.run("resobj", "create", ["vf": ["0"], "type": ["0"], "id": ["0"], "kind": ["get"]])
        }
    }

    @Test func theHandshakeIsRedoneAfterARecovery() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        group.device.setFault(.needsResetMidFlight)
        _ = try? await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x3), member: GroupMemberID(vfIndex: 0), data: [18], resultLength: 1),
                                           timeout: .milliseconds(300))
        group.device.setFault(.needsResetMidFlight, false)
        #expect(try await group.group.recoverIfNeeded(), "the driver failed and was re-initialised (a device reset)")
        #expect(group.device.driverDevicePartsLimits == (4, 4), "the reset cleared the driver's capabilities; the handshake set them again")
    }

    @Test func showDecodesTheDevicePartsCapability() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let output = try await group.run("caps", "show")
        #expect(output.summary == "0x0000 VIRTIO_DEV_PARTS_CAP: get objects 4, set objects 4")
        #expect(output["capabilities"] == .list([.object([("id", .int(0)), ("name", .string("VIRTIO_DEV_PARTS_CAP")), ("getLimit", .int(4)), ("setLimit", .int(4))])]))
    }

    @Test func flowFilterResourceCapabilityDecodesPerTheFactSheet() {
        // §3: groups_limit le32 @0, classifiers_limit @4, rules_limit @8, rules_per_group_limit @12,
        // last_rule_priority u8 @16, selectors_per_classifier_limit u8 @17, reserved[2].
        let bytes: [UInt8] = [1, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 4, 0, 0, 0, 7, 3, 0, 0]
        let cap = try! #require(NetFlowFilterResourceCapability(decoding: bytes))
        #expect(cap.groupsLimit == 1 && cap.classifiersLimit == 2 && cap.rulesLimit == 256 && cap.rulesPerGroupLimit == 4)
        #expect(cap.lastRulePriority == 7 && cap.selectorsPerClassifierLimit == 3)
        #expect(CapabilityID.name(0x0801) == "VIRTIO_NET_FF_SELECTOR_CAP" && CapabilityID.name(0x0802) == "VIRTIO_NET_FF_ACTION_CAP")
    }

    @Test func refusalsAreOneSentence() {
        let address = SimulatedDeviceConfiguration().pfAddress
        let error = AdminError.commandFailed(device: address, opcode: AdminOpcode(8), opcodeName: "DEVICE_CAP_GET", member: .none, status: .enxio, qualifier: .ok)
        #expect("\(CapabilitiesResourceManager.explain(error, id: 0x0801))" == "caps: 0000:3b:00.0 has no capability VIRTIO_NET_FF_SELECTOR_CAP (DEVICE_CAP_GET: ENXIO).")
        let group = AdminError.commandFailed(device: address, opcode: AdminOpcode(7), opcodeName: "CAP_ID_LIST_QUERY", member: .none, status: .einval, qualifier: .invalidGroup)
        #expect("\(CapabilitiesResourceManager.explain(group, id: 0))" == "caps: 0000:3b:00.0 takes capability commands only in the self group (CAP_ID_LIST_QUERY: EINVAL/INVALID_GROUP).")
    }

    @Test func noHandshakeWhenTheDeviceDoesNotListTheCommands() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.supportedOpcodes = configuration.implementedOpcodes.filter { ![7, 8, 9].contains($0.rawValue) }
        let group = try await SimulatedAdminGroup(plugins: [], configuration: configuration)
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        #expect(try await CapabilitiesResourceManager.handshake(driver: group.driver) == nil)
        #expect(group.device.counters.adminCommands == before, "nothing sent")
    }
}
