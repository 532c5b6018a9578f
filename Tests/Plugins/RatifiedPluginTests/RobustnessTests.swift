import DevicePartsResourceManager
import ResourceObjectsResourceManager
import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec

/// Bad input never crashes: random ratified commands against the model, random parts files.
struct RobustnessTests {
    @Test func randomRatifiedCommandsGetSpecStatuses() async throws {
        let group = try await ratifiedGroup()
        defer { group.shutDown() }
        var generator = SystemRandomNumberGenerator()
        // Stop some VFs and create objects so that SET and GET paths run too.
        for vf in 0..<4 {
            try await DevicePartsResourceManager.setMode(stopped: true, member: GroupMemberID(vfIndex: vf), driver: group.driver)
            try await ResourceObjectsResourceManager.create(ResourceObjectAddress(type: 0, id: UInt32(vf), member: GroupMemberID(vfIndex: vf)),
                                                            specificData: [UInt8(vf % 2)] + [UInt8](repeating: 0, count: 7), driver: group.driver)
        }
        let opcodes: [UInt16] = [0x2, 0x3, 0x4, 0x5, 0x7, 0x8, 0x9, 0xa, 0xd, 0xe, 0xf, 0x10, 0x11]
        for _ in 0..<2000 {
            let opcode = opcodes.randomElement(using: &generator)!
            var data = (0..<Int.random(in: 0...96, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Often a valid object header, so that the parts paths parse random parts.
            if data.count >= 8, Bool.random(using: &generator) {
                data.replaceSubrange(0..<8, with: [0, 0, 0, 0, UInt8.random(in: 0...3, using: &generator), 0, 0, 0])
            }
            let groupType: AdminGroupType = Bool.random(using: &generator) ? .srIOV : .selfGroup
            // Unchecked: the device, not the driver's command-set check, answers each one.
            let response = try await group.driver.submitUnchecked(AdminCommand(opcode: AdminOpcode(opcode), groupType: groupType,
                                                                      member: GroupMemberID(rawValue: UInt64.random(in: 0...10, using: &generator)),
                                                                      data: data, resultLength: Int.random(in: 0...300, using: &generator)))
            #expect([AdminStatus.ok, .einval, .ebusy, .enxio, .eexist, .enospc, .enomem].contains(response.status))
        }
        #expect(!group.device.pfStatus.contains(.deviceNeedsReset))
    }

    @Test func randomPartsFilesAreRefusedWithASentence() {
        var generator = SystemRandomNumberGenerator()
        let header = Array("virtio-admin device parts 1\npf 0000:3b:00.0\nvf 0\ntype net\n".utf8)
        for _ in 0..<2000 {
            let body = (0..<Int.random(in: 0...80, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let bytes = header + Array("bytes \(body.count)\n\n".utf8) + body
            do {
                let file = try DevicePartsFile(decoding: bytes, path: "random")
                _ = file.description  // decodes and describes whatever parts parse
            } catch {
                #expect(error.description.hasPrefix("random: "))
            }
            _ = try? DevicePartsFile(decoding: body, path: "random")
        }
    }
}
