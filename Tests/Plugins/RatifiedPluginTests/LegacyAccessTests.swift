import LegacyAccessResourceManager
import ResourceManager
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec

struct LegacyAccessTests {
    @Test func commonConfigMapsOntoTheVFsModernState() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        // Offset 0: device features 0–31 (the VF's offered features, low word).
        let features = try await group.run("legacy", "read-common", ["vf": ["1"], "offset": ["0"]])
        #expect(features["value"] == .int(Int(SimulatedDeviceConfiguration().initialMemberFeatures.window(0))))
        // Offset 4: driver features; 14: queue_select; 8: queue PFN (× 4096); 18: device status.
        _ = try await group.run("legacy", "write-common", ["vf": ["1"], "offset": ["4"], "value": ["32"]])
        _ = try await group.run("legacy", "write-common", ["vf": ["1"], "offset": ["14"], "value": ["1"]])
        _ = try await group.run("legacy", "write-common", ["vf": ["1"], "offset": ["8"], "value": ["4660"]])  // PFN 0x1234
        _ = try await group.run("legacy", "write-common", ["vf": ["1"], "offset": ["18"], "value": ["7"]])
        let state = group.device.vfDriverState(1)
        #expect(state.driverFeatures == FeatureSet(bit: 5))
        #expect(state.queues[1].enabled && state.queues[1].descriptorArea == 0x1234000 && state.queues[1].driverArea == 0x1234000 + 16 * 256)
        #expect(state.queues[1].deviceArea == 0x1236000, "used ring at the next 4096 boundary after the avail ring")
        #expect(state.status == [.acknowledge, .driver, .driverOK])
        #expect(try await group.run("legacy", "read-common", ["vf": ["1"], "offset": ["18"]])["value"] == .int(7))
        #expect(try await group.run("legacy", "read-common", ["vf": ["1"], "offset": ["12"]])["value"] == .int(256), "queue_size")
        // Status 0 resets the VF.
        _ = try await group.run("legacy", "write-common", ["vf": ["1"], "offset": ["18"], "value": ["0"]])
        #expect(group.device.vfDriverState(1).status == [] && !group.device.vfDriverState(1).queues[1].enabled)
    }

    @Test func deviceConfigReadsAndWritesTheMAC() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        #expect(try await group.run("legacy", "read-device", ["vf": ["2"], "offset": ["5"], "width": ["1"]])["value"] == .int(2))
        _ = try await group.run("legacy", "write-device", ["vf": ["2"], "offset": ["5"], "width": ["1"], "value": ["170"]])
        #expect(try await group.run("legacy", "read-device", ["vf": ["2"], "offset": ["5"], "width": ["1"]])["value"] == .int(170))
        #expect(try await group.run("legacy", "read-device", ["vf": ["2"], "offset": ["10"], "width": ["2"]])["value"] == .int(1500), "mtu")
    }

    @Test func wireBytesFollowTheFactSheet() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let sent = SentCommands(group.driver)
        _ = try await group.run("legacy", "write-common", ["vf": ["0"], "offset": ["14"], "value": ["1"]])
        _ = try await group.run("legacy", "read-common", ["vf": ["0"], "offset": ["12"]])
        // §2.2 WRITE: offset u8 @d+0, reserved[7], data @d+8 (the field's 2 bytes, little-endian).
        #expect(sent.all[0] == header(opcode: 0x02, group: 1, member: 1) + [14, 0, 0, 0, 0, 0, 0, 0, 1, 0])
        // READ: offset u8 @d+0 only (1 byte).
        #expect(sent.all[1] == header(opcode: 0x03, group: 1, member: 1) + [12])
    }

    @Test func accessesOutsideOneFieldAreRefused() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        await #expect(throws: PluginError.badArgument(plugin: "legacy", message: "legacy common config has no field at offset 1; fields start at 0, 4, 8, 12, 14, 16, 18, 19, 20, 22.")) {
            _ = try await group.run("legacy", "read-common", ["vf": ["0"], "offset": ["1"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "legacy", message: "queue_size (offset 12) is 2 bytes wide, not 4; one access covers exactly one field.")) {
            _ = try await group.run("legacy", "read-common", ["vf": ["0"], "offset": ["12"], "width": ["4"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "legacy", message: "offset 0 of legacy common config is read-only.")) {
            _ = try await group.run("legacy", "write-common", ["vf": ["0"], "offset": ["0"], "value": ["1"]])
        }
        #expect(group.device.counters.adminCommands == before, "nothing was sent")
        // The device refuses them too [legacy:254-266]: 2 bytes at offset 13, and 2 bytes of the MAC at once.
        let common = try await group.driver.submit(AdminCommand(opcode: AdminOpcode(3), member: GroupMemberID(vfIndex: 0), data: [13], resultLength: 2))
        #expect(common.status == .einval && common.qualifier == .invalidField)
        await #expect(throws: PluginError.refused(plugin: "legacy", message: "0000:3b:00.0 refused a 2-byte access at offset 0 of VF 0: it does not cover exactly one field (LEGACY_DEV_CFG_READ: EINVAL/INVALID_FIELD).")) {
            _ = try await group.run("legacy", "read-device", ["vf": ["0"], "offset": ["0"], "width": ["2"]])
        }
    }

    @Test func notifyInfoIsNotListedByTheModelAndSaysSo() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        await #expect(throws: PluginError.opcodesNotListed(plugin: "legacy", device: group.driver.address, missing: ["LEGACY_NOTIFY_INFO (0x0006)"])) {
            _ = try await group.run("legacy", "notify-info", ["vf": ["0"]])
        }
    }

    @Test func notifyInfoEntriesDecodeAsADriverMust() {
        // §2.2: 4 entries of 16 bytes: flags u8 @0, bar u8 @1, padding[6], offset le64 @8.
        func entry(_ flags: UInt8, _ bar: UInt8, _ offset: UInt64) -> [UInt8] {
            [flags, bar, 0, 0, 0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: offset >> (8 * $0)) }
        }
        // A member BAR entry, a reserved flag (skipped), an owner entry with BAR 0 (invalid, skipped), then the end.
        let result = entry(2, 2, 0x3000) + entry(3, 1, 0) + entry(1, 0, 0x10) + entry(0, 4, 0x20)
        #expect(LegacyNotifyEntry.decode(result) == [LegacyNotifyEntry(flags: 2, bar: 2, offset: 0x3000)])
        // An odd offset is skipped; nothing after flags 0 counts.
        #expect(LegacyNotifyEntry.decode(entry(1, 1, 0x11) + entry(0, 0, 0) + entry(2, 1, 0x40) + entry(0, 0, 0)) == [])
        #expect(LegacyNotifyEntry.decode(entry(1, 5, 0x40) + entry(2, 1, 0x42) + entry(0, 0, 0) + entry(0, 0, 0)).count == 2)
    }
}
