import Foundation
import Synchronization
import Testing
import VirtioTestSupport

/// The admin commands of the `virtio-admin` binary against simulated PFs, as a user runs them.
@Suite(.serialized) struct AdminCLITests {
    func state(vfs: Int = 8, extra: [String] = []) throws -> String {
        let path = makeTemporaryDirectory("cli-admin") + "/pf.state"
        let result = try virtioAdmin(["simulate", "create", path, "--vfs", "\(vfs)"] + extra)
        #expect(result.status == 0, "\(result.error)")
        return path
    }

    @Test(arguments: [1, 8, 64])
    func setInOneRunGetInTheNext(vfs: Int) throws {
        let path = try state(vfs: vfs, extra: ["--pool", "\(vfs * 8)"])
        for vf in [0, vfs - 1] {
            let set = try virtioAdmin(["--simulate", path, "msix", "set", "0000:3b:00.0", "--vf", "\(vf)", "--vectors", "5"])
            #expect(set.status == 0, "\(set.error)")
            let get = try virtioAdmin(["msix", "get", "3b:00.0", "--vf", "\(vf)", "--json", "--simulate", path])
            let object = try #require(try json(get.output) as? [String: Any])
            #expect(object["vf"] as? Int == vf)
            #expect(object["vectors"] as? Int == 5)
        }
        let features = try virtioAdmin(["--simulate", path, "features", "set", "3b:00.0", "--vf", "\(vfs - 1)", "--set", "VERSION_1", "MAC", "--json"])
        #expect(features.status == 0, "\(features.error)")
        let got = try virtioAdmin(["--simulate", path, "features", "get", "3b:00.0", "--vf", "\(vfs - 1)", "--json"])
        let object = try #require(try json(got.output) as? [String: Any])
        #expect(object["vf"] as? Int == vfs - 1)
        #expect(object["features"] as? [String] == ["MAC", "VERSION_1"])
        #expect(object["mask"] as? String == "0x100000020")
    }

    @Test func vfAddressIsAcceptedForVF() throws {
        let path = try state()
        let result = try virtioAdmin(["--simulate", path, "msix", "get", "0000:3b:00.0", "--vf", "0000:3b:00.3", "--json"])
        #expect((try json(result.output) as? [String: Any])?["vf"] as? Int == 2)
        let wrong = try virtioAdmin(["--simulate", path, "msix", "get", "0000:3b:00.0", "--vf", "0000:3c:00.3"])
        #expect(wrong.status != 0 && wrong.error.contains("0000:3c:00.3 is not a VF of 0000:3b:00.0"))
    }

    /// `msix set --vf 3`: read once at the command line, VF 3 reaches the device as member id 4
    /// (digest §7: group_member_id le64 @16 is the VF number, virtfnN + 1), by index or by address.
    @Test(arguments: ["3", "0000:3b:00.4"])
    func vfThreeIsMemberFourOnTheWire(vf: String) throws {
        let path = try state()
        let set = try virtioAdmin(["--simulate", path, "--trace", "msix", "set", "0000:3b:00.0", "--vf", vf, "--vectors", "5"])
        #expect(set.status == 0, "\(set.error)")
        let zeros = { (count: Int) in Array(repeating: "00", count: count).joined(separator: " ") }
        let header = "admin> 41 00 01 00 " + zeros(12) + " 04 00 00 00 00 00 00 00"
        #expect(set.error.split(separator: "\n").contains { $0.hasPrefix(header) }, "MSIX_SET (0x41), SR-IOV group, member 4: \(set.error)")
        let show = try virtioAdmin(["simulate", "show", path, "--json"])
        let vfs = try #require((try json(show.output) as? [String: Any])?["vfs"] as? [[String: Any]])
        #expect(vfs.map { $0["msixVectors"] as? Int } == [2, 2, 2, 5, 2, 2, 2, 2], "\(vfs)")
    }

    /// A bad `--vf` is one sentence, and the PF is not opened (so not reset) for it.
    @Test(arguments: [
        (["msix", "set", "0000:3b:00.0", "--vf", "-1", "--vectors", "2"], "--vf must be a VF index (0, 1, …), not '-1'."),
        (["msix", "get", "0000:3b:00.0", "--vf", "three"], "--vf 'three' is neither a VF index (0, 1, …) nor a PCI address."),
        (["passthru", "0000:3b:00.0", "--opcode", "0x40", "--vf=-1"], "'-1' is invalid for '--vf <N>'"),
    ])
    func badVFIsRefusedBeforeThePFIsOpened(arguments: [String], message: String) throws {
        let path = try state()
        let result = try virtioAdmin(["--simulate", path] + arguments)
        #expect(result.status != 0 && result.error.contains(message), "stderr: \(result.error)")
        #expect(result.output.isEmpty)
        let show = try virtioAdmin(["simulate", "show", path, "--json"])
        let counters = try #require((try json(show.output) as? [String: Any])?["counters"] as? [String: Any])
        #expect(counters["resets"] as? Int == 0, "the PF was not opened: \(counters)")
    }

    @Test func commandsJSON() throws {
        let path = try state()
        let result = try virtioAdmin(["--simulate", path, "commands", "0000:3b:00.0", "--json"])
        let rows = try #require(try json(result.output) as? [[String: Any]])
        let byOpcode = Dictionary(uniqueKeysWithValues: rows.map { ($0["opcode"] as! Int, $0) })
        #expect(byOpcode[0]?["name"] as? String == "LIST_QUERY")
        #expect(byOpcode[0]?["supported"] as? Bool == true && byOpcode[0]?["inUse"] as? Bool == true)
        // The model lists the ratified legacy access 0x2–0x5 but not NOTIFY_INFO (0x6), nor 0xb/0xc (the spec numbers them two ways).
        #expect(byOpcode[2]?["supported"] as? Bool == true && byOpcode[6]?["supported"] as? Bool == false)
        #expect(byOpcode[0xb]?["supported"] as? Bool == false && byOpcode[0xc]?["supported"] as? Bool == false)
        #expect(byOpcode[0x41]?["name"] as? String == "MSIX_SET" && byOpcode[0x41]?["inUse"] as? Bool == true)
        #expect(byOpcode[0x49]?["name"] as? String == "FEATURES_SET")
    }

    @Test func traceShowsBytesBothWays() throws {
        let path = try state()
        let result = try virtioAdmin(["--simulate", path, "--trace", "msix", "get", "0000:3b:00.0", "--vf", "1"])
        let lines = result.error.split(separator: "\n").map(String.init)
        // LIST_QUERY and LIST_USE for the SR-IOV group (type 1) and the self group (type 0), the
        // capability handshake in the self group (member 0; fact sheet §6.1), then MSIX_GET for member 2.
        #expect(lines.filter { $0.hasPrefix("admin> ") }.count == 8)
        #expect(lines.filter { $0.hasPrefix("admin< ") }.count == 8)
        // LIST_USE enables only what the registered plugins know (fact sheet §2.1: bit b of
        // word i = opcode 64·i+b): SR-IOV word 0 = 0x0–0x5, 0x7–0xa, 0xd–0x11 (the ratified
        // commands the built-in plugins send), word 1 = 0x40, 0x41, 0x48, 0x49, 0x4a (not MAC
        // 0x50/0x51, which the device lists but no plugin knows); self word 0 = 0x0, 0x1,
        // 0x7–0x9, word 1 = 0x42. Parts are 40 bytes.
        #expect(lines.contains("admin> 01 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 bf e7 03 00 00 00 00 00 03 07 00 00 00 00 00 00"))
        #expect(lines.contains("admin> 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 83 03 00 00 00 00 00 00 04 00 00 00 00 00 00 00"))
        let zeros = { (count: Int) in Array(repeating: "00", count: count).joined(separator: " ") }
        #expect(lines.contains("admin> 07 00 00 00 " + zeros(20)), "CAP_ID_LIST_QUERY, self group, no data")
        #expect(lines.contains("admin> 08 00 00 00 " + zeros(20) + " 00 00 " + zeros(6)), "DEVICE_CAP_GET id 0 + reserved[6]")
        #expect(lines.contains { $0.hasPrefix("admin< " + zeros(8) + " 04 04") }, "DEV_PARTS_CAP: get 4, set 4")
        #expect(lines.contains("admin> 09 00 00 00 " + zeros(20) + " 00 00 " + zeros(6) + " 04 04 " + zeros(6)),
                "DRIVER_CAP_SET id 0, reserved[6], min(4, 4) twice, padded to a multiple of 8 bytes")
        #expect(lines.contains("admin> 40 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00"))
        #expect(lines.contains("admin< 00 00 00 00 00 00 00 00 02 00 20 00 00 00 00 00"))
        #expect(result.output == "VF 1: 2 MSI-X vectors\n")
    }

    @Test func passthruReportsStatusAndQualifier() throws {
        let path = try state()
        // MSIX_POOL_GET asks about the owner: self group (type 0), member 0.
        let ok = try virtioAdmin(["--simulate", path, "passthru", "0000:3b:00.0", "--opcode", "0x42", "--group-type", "0", "--json"])
        let object = try #require(try json(ok.output) as? [String: Any])
        #expect(object["statusName"] as? String == "OK")
        #expect((object["result"] as? String)?.hasPrefix("40 00 00 00 30 00 00 00") == true, "pool 64, 48 available")
        let bad = try virtioAdmin(["--simulate", path, "passthru", "0000:3b:00.0", "--opcode", "0x40", "--member", "99", "--json"])
        let refused = try #require(try json(bad.output) as? [String: Any])
        #expect(refused["status"] as? Int == 22 && refused["qualifierName"] as? String == "INVALID_MEMBER")
        let unknown = try virtioAdmin(["--simulate", path, "passthru", "0000:3b:00.0", "--opcode", "0x6"])
        #expect(unknown.status != 0)
        #expect(unknown.error.contains("does not list LEGACY_NOTIFY_INFO (opcode 0x0006) in LIST_QUERY"))
    }

    @Test(arguments: [
        (["msix", "set", "0000:3b:00.0", "--vf", "8", "--vectors", "2"], "VF 8 does not exist (VFs are 0 to 7)"),
        (["msix", "set", "0000:3b:00.0", "--vf", "0", "--vectors", "99"], "99 vectors is outside the per-VF limits"),
        (["features", "set", "0000:3b:00.0", "--vf", "0", "--set", "BOGUS"], "unknown feature 'BOGUS'"),
        (["msix", "get", "0000:3c:00.0", "--vf", "0"], "simulates PF 0000:3b:00.0; 0000:3c:00.0 is not in it"),
        (["msix", "get", "nonsense", "--vf", "0"], "'nonsense' is not a PCI address"),
    ])
    func errorsAreOneSentence(arguments: [String], message: String) throws {
        let path = try state()
        let result = try virtioAdmin(["--simulate", path] + arguments)
        #expect(result.status != 0)
        #expect(result.error.contains(message), "stderr: \(result.error)")
        #expect(result.output.isEmpty)
    }

    @Test func realPFWithoutSimulateIsExplained() throws {
        let result = try virtioAdmin(["msix", "get", "0000:00:03.0", "--vf", "0"])
        #expect(result.status != 0)
        #expect(result.error.contains("use --simulate PATH"))
    }

    @Test func corruptStateFileIsAClearError() throws {
        let path = try state()
        try "virtio-admin-simulated-device 1\npf zz\n".write(toFile: path, atomically: true, encoding: .utf8)
        let result = try virtioAdmin(["--simulate", path, "msix", "pool", "0000:3b:00.0"])
        #expect(result.status != 0)
        #expect(result.error.contains("\(path):2: 'zz' is not a PCI address"))
    }

    @Test func concurrentInvocationsSerialiseOnThePF() throws {
        let path = try state(vfs: 16, extra: ["--pool", "256"])
        let results = Mutex<[Int: Int32]>([:])
        DispatchQueue.concurrentPerform(iterations: 16) { vf in
            let result = try? virtioAdmin(["--simulate", path, "msix", "set", "0000:3b:00.0", "--vf", "\(vf)", "--vectors", "\(3 + vf % 5)"])
            results.withLock { $0[vf] = result?.status ?? -1 }
        }
        #expect(results.withLock { $0.values.allSatisfy { $0 == 0 } && $0.count == 16 })
        for vf in 0..<16 {
            let get = try virtioAdmin(["--simulate", path, "msix", "get", "0000:3b:00.0", "--vf", "\(vf)", "--json"])
            #expect((try json(get.output) as? [String: Any])?["vectors"] as? Int == 3 + vf % 5)
        }
    }
}

/// The device model writes its own sysfs tree; lspci and the project's decoder agree on it.
@Suite(.serialized) struct SimulatedTreeCLITests {
    @Test func treeOfAProvisionedDeviceMatchesLspci() throws {
        let directory = makeTemporaryDirectory("cli-tree")
        let state = directory + "/pf.state"
        #expect(try virtioAdmin(["simulate", "create", state, "--vfs", "4", "--total-vfs", "6"]).status == 0)
        #expect(try virtioAdmin(["--simulate", state, "msix", "set", "0000:3b:00.0", "--vf", "2", "--vectors", "7"]).status == 0)
        let root = directory + "/sys"
        let written = try virtioAdmin(["simulate", "sysfs", root, "--from", state])
        #expect(written.status == 0, "\(written.error)")
        let list = try #require(try json(try virtioAdmin(["--sysfs-root", root, "list", "--json"]).output) as? [[String: Any]])
        #expect(list.count == 5)
        #expect((list[0]["sriov"] as? [String: Any])?["totalVFs"] as? Int == 6)
        #expect(list[3]["vfMSIXCount"] as? Int == 7)
        let show = try #require(try json(try virtioAdmin(["--sysfs-root", root, "show", "0000:3b:00.3", "--json"]).output) as? [String: Any])
        #expect((show["msix"] as? [String: Any])?["tableSize"] as? Int == 7)
        guard lspciPath != nil else { print("skipped lspci comparison: lspci is not installed"); return }
        let lspci = try lspciFunctions(["-A", "linux-sysfs", "-O", "sysfs.path=\(root)/bus/pci"])
        #expect(lspci["0000:3b:00.3"]?.msix?.count == 7)
        #expect(lspci["0000:3b:00.0"]?.sriov?.totalVFs == 6 && lspci["0000:3b:00.0"]?.sriov?.numVFs == 4)
        #expect(lspci["0000:3b:00.0"]?.virtioCaps.map(\.kind) == ["CommonCfg", "ISR", "DeviceCfg", "Notify", "<unknown>"])
    }
}
