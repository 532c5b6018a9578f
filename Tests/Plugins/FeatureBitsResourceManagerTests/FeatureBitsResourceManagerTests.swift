import Testing
import FeatureBitsResourceManager
import ResourceManager
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport

struct FeatureBitsResourceManagerTests {
    func group() async throws -> SimulatedAdminGroup {
        try await SimulatedAdminGroup(plugins: [FeatureBitsResourceManager()])
    }

    @Test func getShowsNamesAndMask() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let output = try await group.run("features", "get", ["vf": ["0"]])
        let initial = SimulatedDeviceConfiguration().initialMemberFeatures
        #expect(output["mask"] == .string(initial.hexMask))
        #expect(output["features"] == .strings(initial.names(for: .net)))
        #expect(output["features"]?.text.contains("VERSION_1") == true)
        let caps = try await group.run("features", "caps", ["vf": ["0"]])
        #expect(caps["mask"] == .string(SimulatedDeviceConfiguration().memberSupportedFeatures.hexMask))
    }

    @Test func setByNameAndByMask() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let byName = try await group.run("features", "set", ["vf": ["2"], "set": ["VERSION_1", "mac,MQ", "VIRTIO_NET_F_STATUS"]])
        let expected: FeatureSet = [.version1, FeatureSet(bit: 5), FeatureSet(bit: 22), FeatureSet(bit: 16)]
        #expect(byName["mask"] == .string(expected.hexMask))
        #expect(group.device.member(2).features == expected)
        // The VF's own transport now offers exactly that set.
        let transport = try VirtioTransport.ModernPCITransport(config: group.device.vfConfigSpace(2), bars: [0: group.device.vfBAR(2)])
        #expect(transport.deviceFeatures() == expected)
        _ = try await group.run("features", "set", ["vf": ["2"], "mask": ["0x100000020"]])
        #expect(group.device.member(2).features == [.version1, FeatureSet(bit: 5)])
    }

    @Test func refusals() async throws {
        let group = try await group()
        defer { group.shutDown() }
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "unknown feature 'NOPE' for a net device.")) {
            _ = try await group.run("features", "set", ["vf": ["0"], "set": ["VERSION_1", "NOPE"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "VF 0 cannot offer GUEST_TSO4.")) {
            _ = try await group.run("features", "set", ["vf": ["0"], "set": ["VERSION_1", "GUEST_TSO4"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "a VF must keep offering VERSION_1.")) {
            _ = try await group.run("features", "set", ["vf": ["0"], "set": ["MAC"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "give either --set NAME… or --mask HEX.")) {
            _ = try await group.run("features", "set", ["vf": ["0"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "--mask 'zz' is not a number (write hex as 0x…).")) {
            _ = try await group.run("features", "set", ["vf": ["0"], "mask": ["zz"]])
        }
        // The device's own refusal, sent straight through the typed API.
        await #expect(throws: AdminError.commandFailed(device: group.device.pfAddress, opcode: AdminOpcode(0x49), opcodeName: "FEATURES_SET",
                                                       member: GroupMemberID(vfIndex: 0), status: .einval, qualifier: .invalidField)) {
            try await FeatureBitsResourceManager().setFeatures([.version1, .ringPacked], of: 0, driver: group.driver)
        }
        group.device.setInUse(1, true)
        await #expect(throws: PluginError.badArgument(plugin: "features", message: "0000:3b:00.0: VF 1 is in use by a driver (EBUSY); unbind it before changing its features.")) {
            _ = try await group.run("features", "set", ["vf": ["1"], "set": ["VERSION_1"]])
        }
        #expect(group.device.member(0).features == SimulatedDeviceConfiguration().initialMemberFeatures)
        #expect(group.device.member(1).features == SimulatedDeviceConfiguration().initialMemberFeatures)
    }
}
