import ResourceManager
import ResourceObjectsResourceManager
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec

struct ResourceObjectsTests {
    @Test func createDestroyAndTheDevicesRefusals() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let create = ["vf": ["1"], "type": ["0"], "id": ["2"], "kind": ["set"]]
        #expect(try await group.run("resobj", "create", create)["created"] == .bool(true))
        #expect(group.device.devicePartsObjectCount == 1)
        await #expect(throws: PluginError.refused(plugin: "resobj", message: "0000:3b:00.0 already has DEV_PARTS object 2 (RESOURCE_OBJ_CREATE: EEXIST); destroy it or pick another id.")) {
            _ = try await group.run("resobj", "create", create)
        }
        _ = try await group.run("resobj", "destroy", ["vf": ["1"], "type": ["0"], "id": ["2"]])
        #expect(group.device.devicePartsObjectCount == 0)
        await #expect(throws: PluginError.refused(plugin: "resobj", message: "0000:3b:00.0 has no DEV_PARTS object 2 for member 2 (RESOURCE_OBJ_DESTROY: ENXIO).")) {
            _ = try await group.run("resobj", "destroy", ["vf": ["1"], "type": ["0"], "id": ["2"]])
        }
        // Re-creating after DESTROY is allowed [resobj:238-241].
        _ = try await group.run("resobj", "create", create)
        await #expect(throws: PluginError.badArgument(plugin: "resobj", message: "a DEV_PARTS object needs --kind get or --kind set.")) {
            _ = try await group.run("resobj", "create", ["vf": ["1"], "type": ["0"], "id": ["3"]])
        }
    }

    @Test func wireBytesFollowTheFactSheet() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let sent = SentCommands(group.driver)
        _ = try await group.run("resobj", "create", ["vf": ["0"], "type": ["0"], "id": ["3"], "kind": ["set"]])
        _ = try await group.run("resobj", "destroy", ["vf": ["0"], "type": ["0"], "id": ["3"]])
        // §2.4 CREATE: type le16 @d+0, reserved[2], id le32 @d+4, flags le64 @d+8, then DEV_PARTS type u8 @d+16 (1 = SET), reserved[7].
        #expect(sent.all[0] == header(opcode: 0x0a, group: 1, member: 1) + [0, 0, 0, 0, 3, 0, 0, 0] + [UInt8](repeating: 0, count: 8) + [1, 0, 0, 0, 0, 0, 0, 0])
        #expect(sent.all[1] == header(opcode: 0x0d, group: 1, member: 1) + [0, 0, 0, 0, 3, 0, 0, 0])
    }

    @Test func flagsAndUnknownTypesAreRefused() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let member = GroupMemberID(vfIndex: 0)
        let flags = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0xa), member: member,
                                                               data: [0, 0, 0, 0, 0, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 15)))
        #expect(flags.status == .einval && flags.qualifier == .invalidField, "flags are reserved")
        let type = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(0xa), member: member,
                                                              data: [0, 2, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16)))
        #expect(type.status == .einval && type.qualifier == .invalidField, "the model has no net flow-filter objects")
        #expect(group.device.devicePartsObjectCount == 0)
    }

    @Test func modifyAndQueryAreNeitherDeclaredNorListed() async throws {
        #expect(!ResourceObjectsResourceManager().opcodes.contains { [0xb, 0xc].contains($0.0.rawValue) })
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        #expect(!group.driver.supported.contains(AdminOpcode(0xb)) && !group.driver.supported.contains(AdminOpcode(0xc)))
    }
}
