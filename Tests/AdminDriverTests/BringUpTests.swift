import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import ResourceManager
import MSIXResourceManager
import FeatureBitsResourceManager

struct BringUpTests {
    @Test func negotiatesCommandSetWithListQueryAndListUse() async throws {
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager(), FeatureBitsResourceManager()])
        defer { group.shutDown() }
        let supported = group.driver.supported
        #expect(supported.opcodes == group.device.configuration.implementedOpcodes.sorted())
        // LIST_USE enables what the registered plugins know: not MAC_GET/MAC_SET (0x50/0x51),
        // nor the ratified commands no registered plugin sends.
        #expect(group.driver.inUse.opcodes == supported.opcodes.filter { $0.rawValue <= 1 || group.registry.opcodes.contains($0) })
        #expect(group.device.pfStatus == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(group.device.counters.adminCommands == 4, "LIST_QUERY and LIST_USE, for the SR-IOV group and for the self group")
        #expect(group.driver.slotCount == 128, "256-entry admin queue, two descriptors a command")
    }

    @Test func listUseEnablesOnlyWhatIsWanted() async throws {
        var options = AdminQueueDriver.Options()
        options.wantedOpcodes = MSIXResourceManager().opcodes.map(\.0)
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager(), FeatureBitsResourceManager()], options: options)
        defer { group.shutDown() }
        #expect(group.driver.inUse.opcodes == [.listQuery, .listUse, AdminOpcode(0x40), AdminOpcode(0x41), AdminOpcode(0x42)])
        #expect(group.driver.inUse(in: .srIOV).opcodes == [.listQuery, .listUse, AdminOpcode(0x40), AdminOpcode(0x41)])
        #expect(group.driver.inUse(in: .selfGroup).opcodes == [.listQuery, .listUse, AdminOpcode(0x42)])
        // The features plugin's opcodes are supported but not in use: refused before sending.
        await #expect(throws: AdminError.commandNotInUse(device: group.device.pfAddress, opcode: AdminOpcode(0x48), opcodeName: "FEATURES_GET", supported: true)) {
            _ = try await group.run("features", "get", ["vf": ["0"]])
        }
        #expect(group.device.counters.adminCommands == 4, "only the two groups' LIST_QUERY and LIST_USE")
    }

    @Test func deviceWithoutAdminVQIsRefusedAndLeftReset() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.pfFeatures.remove(.adminVQ)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        await #expect(throws: AdminError.adminVQNotOffered(device: device.pfAddress)) {
            _ = try await AdminQueueDriver.open(transport: transport, allocator: device.memory)
        }
        #expect(device.pfStatus == [])
        #expect(AdminError.adminVQNotOffered(device: device.pfAddress).description
                == "0000:3b:00.0: the device does not offer VIRTIO_F_ADMIN_VQ, so it has no admin virtqueue; it was left reset.")
    }

    @Test func adminQueueNumZeroIsRefused() async throws {
        let device = SimulatedSRIOVDevice()
        device.setFault(.noAdminQueue)
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        await #expect(throws: AdminError.noAdminQueue(device: device.pfAddress, reason: "admin_queue_num is 0")) {
            _ = try await AdminQueueDriver.open(transport: transport, allocator: device.memory)
        }
        #expect(device.pfStatus == [])
    }

    @Test func queueSizeZeroAndRefusedFeaturesOK() async throws {
        for fault in [SimulatedFault.queueSizeZero, .refuseFeaturesOK] {
            let device = SimulatedSRIOVDevice()
            device.setFault(fault)
            let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
            await #expect {
                _ = try await AdminQueueDriver.open(transport: transport, allocator: device.memory)
            } throws: { error in
                guard case AdminError.transport(let inner) = error else { return false }
                switch (fault, inner) {
                case (.queueSizeZero, .queueUnavailable): return true
                case (.refuseFeaturesOK, .featuresRefused): return true
                default: return false
                }
            }
            #expect(device.pfStatus == [], "\(fault): device left reset")
        }
    }

    @Test func pluginWhoseOpcodesAreNotListedIsRefused() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.supportedOpcodes = [.listQuery, .listUse, AdminOpcode(0x40), AdminOpcode(0x41)]  // no MSIX_POOL_GET
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: configuration)
        defer { group.shutDown() }
        await #expect(throws: PluginError.opcodesNotListed(plugin: "msix", device: group.device.pfAddress, missing: ["MSIX_POOL_GET (0x0042)"])) {
            _ = try await group.run("msix", "get", ["vf": ["0"]])
        }
        #expect(group.device.counters.adminCommands == 4, "nothing but the two groups' LIST_QUERY and LIST_USE was sent")
    }

    @Test func deviceRefusalsMapToTypedErrors() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        // A member beyond NumVFs: EINVAL / INVALID_MEMBER.
        let response = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: 8), resultLength: 8))
        #expect(response.status == .einval && response.qualifier == .invalidMember)
        // A group type the device does not have (7 is reserved): INVALID_GROUP. The driver
        // sends only LIST_QUERY to a group it has not negotiated; anything else it refuses.
        let wrongGroup = try await group.driver.submit(AdminCommand(opcode: .listQuery, groupType: AdminGroupType(rawValue: 7), resultLength: 8))
        #expect(wrongGroup.status == .einval && wrongGroup.qualifier == .invalidGroup)
        await #expect(throws: AdminError.groupUnavailable(device: group.device.pfAddress, group: AdminGroupType(rawValue: 7),
                                                          reason: "the driver negotiated no command set for this group type (LIST_QUERY/LIST_USE)")) {
            _ = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0x40), groupType: AdminGroupType(rawValue: 7), resultLength: 8))
        }
        await #expect(throws: AdminError.commandFailed(device: group.device.pfAddress, opcode: AdminOpcode(0x40), opcodeName: "MSIX_GET",
                                                       member: GroupMemberID(vfIndex: 8), status: .einval, qualifier: .invalidMember)) {
            _ = try await group.driver.run(AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: 8), resultLength: 8))
        }
        #expect(group.driver.statistics.byStatus[22] == 3)
    }
}

struct DeviceConfigChangeTests {
    @Test func macChangeBumpsTheVFsConfigGeneration() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        let vf = try ModernPCITransport(config: group.device.vfConfigSpace(1), bars: [0: group.device.vfBAR(1)])
        let before = vf.configGeneration
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 0x42, 0, 0]
        _ = try await group.driver.run(AdminCommand(opcode: AdminOpcode(0x51), member: GroupMemberID(vfIndex: 1), data: mac))
        #expect(vf.configGeneration == before &+ 1)
        #expect(try vf.readDeviceConfig(offset: 0, length: 6) == Array(mac.prefix(6)))
        // Setting the same address again changes nothing, so the generation stays.
        _ = try await group.driver.run(AdminCommand(opcode: AdminOpcode(0x51), member: GroupMemberID(vfIndex: 1), data: mac))
        #expect(vf.configGeneration == before &+ 1)
    }
}
