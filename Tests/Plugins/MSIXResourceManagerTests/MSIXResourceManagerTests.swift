import Synchronization
import Testing
import MSIXResourceManager
import ResourceManager
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioProjectCommands
import VirtioSpec
import VirtioTransport

struct MSIXResourceManagerTests {
    func group(_ configure: (inout SimulatedDeviceConfiguration) -> Void = { _ in }) async throws -> SimulatedAdminGroup {
        var configuration = SimulatedDeviceConfiguration()
        configure(&configuration)
        return try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: configuration)
    }

    /// With VF Enable clear the SR-IOV group is unavailable, but the pool is the owner's
    /// (self group): `msix pool` works, `msix get` says why it cannot.
    @Test func poolWorksOnAPFWithoutVFs() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = 4
        configuration.numVFs = 0
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: configuration)
        defer { group.shutDown() }
        let pool = try await group.run("msix", "pool")
        #expect(pool["total"] == .int(configuration.vfMSIXPool), "\(pool.summary)")
        await #expect(throws: AdminError.self) { _ = try await group.run("msix", "get", ["vf": ["0"]]) }
    }

    @Test func getSetAndPool() async throws {
        let group = try await group()
        defer { group.shutDown() }
        #expect(try await group.run("msix", "get", ["vf": ["3"]])["vectors"] == .int(2))
        let set = try await group.run("msix", "set", ["vf": ["3"], "vectors": ["9"]])
        #expect(set["vf"] == .int(3) && set["vectors"] == .int(9))
        #expect(group.device.member(3).msixVectors == 9, "the device model holds the new count")
        #expect(group.device.vfConfigSpace(3).msix?.tableSize == 9, "and the VF's MSI-X capability shows it")
        let pool = try await group.run("msix", "pool")
        #expect(pool["total"] == .int(64) && pool["available"] == .int(64 - 7 * 2 - 9))
        #expect(pool["perVFMaximum"] == .int(32) && pool["perVFMinimum"] == .int(1))
    }

    /// The pool's available count stays the pool minus every VF's vectors over a long
    /// run of MSIX_SETs, the refused ones (no resource) included: the model keeps the count
    /// as it goes rather than summing every VF per command.
    @Test func poolAccountingStaysExactOverManySets() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let msix = MSIXResourceManager()
        var state: UInt64 = 16
        func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
        var refused = 0
        for _ in 0..<300 {
            let vf = next() % 8, vectors = 1 + next() % 32
            do { try await msix.setVectors(vectors, of: vf, driver: group.driver) } catch { refused += 1 }
            let pool = try await msix.pool(driver: group.driver)
            let given = group.device.members.reduce(0) { $0 + $1.msixVectors }
            #expect(pool.available == 64 - given, "available \(pool.available) after VF \(vf) asked for \(vectors); VFs hold \(given) of 64")
            if pool.available != 64 - given { return }
        }
        #expect(refused > 0 && refused < 300, "the run includes refusals for want of vectors (\(refused))")
    }

    /// VFs beyond NumVFs stop being members: their vectors go back to the pool, and come
    /// out of it again when they are enabled (the pool is 64, each VF starts with 2).
    @Test func poolFollowsNumVFs() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let msix = MSIXResourceManager()
        try await msix.setVectors(9, of: 6, driver: group.driver)
        #expect(try await msix.pool(driver: group.driver).available == 64 - 7 * 2 - 9)
        try group.device.setNumVFs(4)
        #expect(try await msix.pool(driver: group.driver).available == 64 - 4 * 2)
        try await msix.setVectors(5, of: 1, driver: group.driver)
        #expect(try await msix.pool(driver: group.driver).available == 64 - 3 * 2 - 5)
        try group.device.setNumVFs(8)
        #expect(try await msix.pool(driver: group.driver).available == 64 - 6 * 2 - 5 - 9)
    }

    @Test func wireBytesFollowTheProjectLayout() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let sent = Mutex<[[UInt8]]>([])
        group.driver.setTrace { event in
            if case .sent(_, let bytes) = event { sent.withLock { $0.append(bytes) } }
        }
        try await MSIXResourceManager().setVectors(5, of: 1, driver: group.driver)
        let bytes = try #require(sent.withLock { $0.last })
        // Header: opcode 0x41, group type 1, member 2 (VF 1); data: vectors le16 @24, 6 reserved bytes.
        #expect(bytes == [0x41, 0, 1, 0] + [UInt8](repeating: 0, count: 12) + [2, 0, 0, 0, 0, 0, 0, 0] + [5, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func pluginChecksBeforeSending() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let before = group.device.counters.adminCommands
        await #expect(throws: PluginError.noSuchVF(device: group.device.pfAddress, vf: 8, numVFs: 8)) {
            _ = try await group.run("msix", "set", ["vf": ["8"], "vectors": ["4"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "msix", message: "--vectors is required.")) {
            _ = try await group.run("msix", "set", ["vf": ["0"]])
        }
        await #expect(throws: PluginError.badArgument(plugin: "msix", message: "--vf must be a VF index (0, 1, …), not 'x'.")) {
            _ = try await group.run("msix", "get", ["vf": ["x"]])
        }
        #expect(group.device.counters.adminCommands == before, "nothing was sent")
        await #expect(throws: PluginError.badArgument(plugin: "msix", message: "33 vectors is outside the per-VF limits of 0000:3b:00.0 (1 to 32).")) {
            _ = try await group.run("msix", "set", ["vf": ["0"], "vectors": ["33"]])
        }
        _ = try await group.run("msix", "set", ["vf": ["0"], "vectors": ["32"]])
        _ = try await group.run("msix", "set", ["vf": ["1"], "vectors": ["18"]])
        // 64 - 32 - 18 - 6×2 = 2 available; VF 2 has 2 and wants 5.
        await #expect(throws: PluginError.badArgument(plugin: "msix", message: "VF 2 has 2 vectors; 5 needs 3 more, but the pool of 0000:3b:00.0 has 2 available.")) {
            _ = try await group.run("msix", "set", ["vf": ["2"], "vectors": ["5"]])
        }
        #expect(group.device.member(2).msixVectors == 2)
    }

    @Test func deviceReportingMinimumAboveMaximumIsAnErrorNotATrap() async throws {
        var configuration = SimulatedDeviceConfiguration()
        configuration.perVFMinimumVectors = 9
        configuration.perVFMaximumVectors = 4  // a broken device: min > max
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], configuration: configuration)
        defer { group.shutDown() }
        await #expect(throws: PluginError.badResult(plugin: "msix", message: "0000:3b:00.0 reports a per-VF minimum of 9 vectors above its maximum of 4.")) {
            _ = try await group.run("msix", "set", ["vf": ["0"], "vectors": ["4"]])
        }
    }

    @Test func deviceRefusalsAreReportedPrecisely() async throws {
        let group = try await group()
        defer { group.shutDown() }
        let msix = MSIXResourceManager()
        let pf = group.device.pfAddress
        // Straight to the device (the typed API does not pre-check): each refusal, and no state change.
        await #expect(throws: AdminError.commandFailed(device: pf, opcode: AdminOpcode(0x41), opcodeName: "MSIX_SET", member: GroupMemberID(vfIndex: 0),
                                                       status: .einval, qualifier: .invalidField)) {
            try await msix.setVectors(40, of: 0, driver: group.driver)
        }
        await #expect(throws: AdminError.commandFailed(device: pf, opcode: AdminOpcode(0x41), opcodeName: "MSIX_SET", member: GroupMemberID(vfIndex: 8),
                                                       status: .einval, qualifier: .invalidMember)) {
            try await msix.setVectors(4, of: 8, driver: group.driver)
        }
        for vf in 0..<2 { try await msix.setVectors(26, of: vf, driver: group.driver) }
        await #expect(throws: AdminError.commandFailed(device: pf, opcode: AdminOpcode(0x41), opcodeName: "MSIX_SET", member: GroupMemberID(vfIndex: 2),
                                                       status: .einval, qualifier: .noResource)) {
            try await msix.setVectors(3, of: 2, driver: group.driver)
        }
        group.device.setInUse(4, true)
        await #expect(throws: PluginError.badArgument(plugin: "msix", message: "0000:3b:00.0: VF 4 is in use by a driver (EBUSY); unbind it before changing its vectors.")) {
            _ = try await group.run("msix", "set", ["vf": ["4"], "vectors": ["1"]])
        }
        #expect(group.device.members.map(\.msixVectors) == [26, 26, 2, 2, 2, 2, 2, 2])
        // Reading is allowed while in use.
        #expect(try await msix.vectors(of: 4, driver: group.driver) == 2)
    }

    @Test func vfDriverAtDriverOKMakesTheVFBusy() async throws {
        let group = try await group()
        defer { group.shutDown() }
        // A VF driver brings VF 0 up through its own BAR: the device marks it in use.
        let transport = try VirtioTransport.ModernPCITransport(config: group.device.vfConfigSpace(0), bars: [0: group.device.vfBAR(0)])
        try transport.negotiate(required: [])
        try transport.driverOK()
        #expect(group.device.member(0).inUse)
        await #expect(throws: PluginError.self) { _ = try await group.run("msix", "set", ["vf": ["0"], "vectors": ["3"]]) }
        try transport.reset()
        #expect(!group.device.member(0).inUse)
        _ = try await group.run("msix", "set", ["vf": ["0"], "vectors": ["3"]])
    }

    @Test func remappedOpcodes() async throws {
        var table = ProjectOpcodeTable.default
        table.msixGet = AdminOpcode(0x60)
        table.msixSet = AdminOpcode(0x61)
        table.msixPoolGet = AdminOpcode(0x62)
        var configuration = SimulatedDeviceConfiguration()
        configuration.opcodes = table
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager(opcodes: table)], configuration: configuration)
        defer { group.shutDown() }
        #expect(group.driver.supported.contains(AdminOpcode(0x61)))
        _ = try await group.run("msix", "set", ["vf": ["1"], "vectors": ["7"]])
        #expect(group.device.member(1).msixVectors == 7)
    }
}
