import Foundation
import Testing
import VirtioTestSupport

/// `caps`, `parts` and `mode` as a user runs them, against simulated PFs. Their command
/// lines come from what the plugins declare (PluginCommandLine): `caps PF` is the default
/// operation, FILE and the mode are positional parameters, `mode` is an operation's command
/// name, `parts show` needs no PF.
@Suite(.serialized) struct RatifiedCLITests {
    let pf = "0000:3b:00.0"

    func state(type: String = "net") async throws -> (dir: String, path: String) {
        let dir = makeTemporaryDirectory("cli-ratified")
        let result = try await virtioAdminOffPool(["simulate", "create", dir + "/pf.state", "--vfs", "4", "--type", type])
        #expect(result.status == 0, "\(result.error)")
        return (dir, dir + "/pf.state")
    }

    func run(_ path: String, _ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
        try await virtioAdminOffPool(["--simulate", path] + arguments)
    }

    @Test func capsListsAndDecodesTheDevicePartsCapability() async throws {
        let (_, path) = try await state()
        let text = try await run(path, ["caps", pf])
        #expect(text.status == 0 && text.output == "0x0000 VIRTIO_DEV_PARTS_CAP: get objects 4, set objects 4\n", "\(text.error)")
        let result = try await run(path, ["caps", pf, "--json"])
        let object = try #require(try json(result.output) as? [String: Any])
        let caps = try #require(object["capabilities"] as? [[String: Any]])
        #expect(caps.count == 1 && caps[0]["name"] as? String == "VIRTIO_DEV_PARTS_CAP" && caps[0]["getLimit"] as? Int == 4 && caps[0]["setLimit"] as? Int == 4)
    }

    @Test func saveShowRestoreAcrossInvocations() async throws {
        let (dir, path) = try await state()
        // Give VF 0 a driver-visible state through the legacy interface (it persists in the state file).
        for (offset, value) in [(4, 32), (8, 0x1234), (18, 7)] {
            let write = try await run(path, ["legacy", "write-common", pf, "--vf", "0", "--offset", "\(offset)", "--value", "\(value)"])
            #expect(write.status == 0, "\(write.error)")
        }
        let saved = try await run(path, ["--trace", "parts", "save", pf, "--vf", "0", dir + "/vf0.parts"])
        #expect(saved.status == 0 && saved.output == "VF 0: 8 parts (243 bytes) saved to \(dir)/vf0.parts; VF resumed\n", "\(saved.error)")
        // --trace: the save's six commands, SR-IOV group (01 00), member 1 (VF 0), per the fact sheet §2.5 and §6.2.
        let sent = saved.error.split(separator: "\n").filter { $0.hasPrefix("admin> ") }.map { String($0.dropFirst(7)) }
        let head = { (opcode: String) in "\(opcode) 00 01 00 " + Array(repeating: "00", count: 12).joined(separator: " ") + " 01 00 00 00 00 00 00 00" }
        let zeros = { (count: Int) in Array(repeating: "00", count: count).joined(separator: " ") }
        // DEV_MODE_SET's 1-byte flags are padded to 8 bytes (multiple-of-64-bit parts [admin:622-624]).
        #expect(Array(sent.suffix(6)) == [head("11") + " 01 " + zeros(7), head("0a") + " " + zeros(24), head("0e") + " " + zeros(16),
                                          head("0f") + " " + zeros(8) + " 01 " + zeros(7), head("0d") + " " + zeros(8), head("11") + " " + zeros(8)])
        let shown = try await virtioAdminOffPool(["parts", "show", dir + "/vf0.parts"])
        #expect(shown.status == 0)
        #expect(shown.output.contains("device parts of PF 0000:3b:00.0 VF 0, a virtio net device (243 bytes)"))
        #expect(shown.output.contains("  DRV_FEATURES: 0x20 MAC\n"))
        #expect(shown.output.contains("  DEVICE_STATUS: 0x07 (ACKNOWLEDGE|DRIVER|DRIVER_OK)\n"))
        #expect(shown.output.contains("  VQ_CFG queue 0: size 256, vector none, enabled 1, desc 0x1234000, driver 0x1235000, device 0x1236000\n"))
        let restored = try await run(path, ["parts", "restore", pf, "--vf", "3", dir + "/vf0.parts"])
        #expect(restored.status == 0 && restored.output == "VF 3: parts of PF 0000:3b:00.0 VF 0 restored from \(dir)/vf0.parts; VF resumed\n", "\(restored.error)")
        // VF 3, saved in a later run, shows the same state.
        _ = try await run(path, ["parts", "save", pf, "--vf", "3", dir + "/vf3.parts"])
        let again = try await virtioAdminOffPool(["parts", "show", dir + "/vf3.parts", "--json"])
        let original = try await virtioAdminOffPool(["parts", "show", dir + "/vf0.parts", "--json"])
        let a = try #require(try json(again.output) as? [String: Any]), b = try #require(try json(original.output) as? [String: Any])
        #expect(a["vf"] as? Int == 3 && b["vf"] as? Int == 0)
        #expect((a["parts"] as? [[String: Any]])?.map { $0["text"] as? String } == (b["parts"] as? [[String: Any]])?.map { $0["text"] as? String })
    }

    @Test func restoreRefusals() async throws {
        let (dir, path) = try await state()
        _ = try await run(path, ["parts", "save", pf, "--vf", "0", dir + "/vf0.parts"])
        // Another device type: refused by the CLI's plugin before anything is sent.
        let (blockDir, blockPath) = try await state(type: "block")
        _ = try await run(blockPath, ["parts", "save", pf, "--vf", "0", blockDir + "/block.parts"])
        let typed = try await run(path, ["parts", "restore", pf, "--vf", "1", blockDir + "/block.parts"])
        #expect(typed.status != 0)
        #expect(typed.error.contains("the file holds the parts of a virtio block VF, but the VFs of 0000:3b:00.0 are virtio net"), "\(typed.error)")
        // Other device features: refused by the device, explained.
        let features = try await run(path, ["features", "set", pf, "--vf", "1", "--set", "VERSION_1", "MAC"])
        #expect(features.status == 0, "\(features.error)")
        let refused = try await run(path, ["parts", "restore", pf, "--vf", "1", dir + "/vf0.parts"])
        #expect(refused.status != 0)
        #expect(refused.error.contains("refused the parts for VF 1 (DEV_PARTS_SET: EINVAL/INVALID_FIELD): the saved VF offered features 0x320018023 and VF 1 offers 0x100000020"), "\(refused.error)")
        let garbage = dir + "/garbage"
        _ = FileManager.default.createFile(atPath: garbage, contents: Data("hello".utf8))
        let bad = try await virtioAdminOffPool(["parts", "show", garbage])
        #expect(bad.status != 0 && bad.error.contains("\(garbage): not a device parts file (no header)."))
    }

    @Test func theCommandLinesComeFromThePluginsDeclarations() async throws {
        let help = try await virtioAdminOffPool(["run", "--help"])
        #expect(help.output.contains("  parts save PF --vf N [--keep-stopped] FILE\n"))
        #expect(help.output.contains("  mode (or parts mode) PF --vf N STATE\n"))
        #expect(help.output.contains("  caps show PF\n    (also: caps PF)\n"))
        #expect(help.output.contains("  parts show FILE\n"))
        #expect(help.output.contains("  features set PF --vf N [--set VALUE…] [--mask VALUE]\n"), "msix and features come from their declarations too")
        let (_, path) = try await state()
        let none = try await run(path, ["parts", "bogus", pf])
        #expect(none.status != 0 && none.error.contains("plugin 'parts' has no operation 'bogus'; it has save, restore, mode, show."))
        let extra = try await run(path, ["mode", pf, "--vf", "1", "stop", "now"])
        #expect(extra.status != 0 && extra.error.contains("unexpected 'now'; 'mode' takes PF --vf N STATE."))
        let flag = try await run(path, ["parts", "save", pf, "--vf", "1", "--keep-stopped=yes", "/tmp/x"])
        #expect(flag.status != 0 && flag.error.contains("--keep-stopped is a flag; it takes no value."))
    }

    @Test func modeStopsAndResumesAcrossInvocations() async throws {
        let (_, path) = try await state()
        let stop = try await run(path, ["--trace", "mode", pf, "--vf", "2", "stop"])
        #expect(stop.status == 0 && stop.output == "VF 2: stopped\n", "\(stop.error)")
        #expect(stop.error.contains("admin> 11 00 01 00 " + Array(repeating: "00", count: 12).joined(separator: " ") + " 03 00 00 00 00 00 00 00 01"))
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains("vf-state 2 stopped=1"), "the model keeps the mode in its state")
        // While stopped, a DEV_PARTS_SET is accepted (a running VF answers EBUSY).
        let resume = try await run(path, ["mode", pf, "--vf", "2", "resume", "--json"])
        #expect((try json(resume.output) as? [String: Any])?["stopped"] as? Bool == false)
        #expect(!(try String(contentsOfFile: path, encoding: .utf8).contains("vf-state 2")))
        let bad = try await run(path, ["mode", pf, "--vf", "2", "freeze"])
        #expect(bad.status != 0 && bad.error.contains("the mode is 'stop' or 'resume' (the spec defines only STOPPED and running)."))
        let missing = try await run(path, ["parts", "save", pf, "--vf", "0"])
        #expect(missing.status != 0 && missing.error.contains("'parts save' needs FILE (File to write.); it takes PF --vf N [--keep-stopped] FILE."))
    }
}
