import Foundation
import Testing
import VirtioSimulator
import VirtioTestSupport

/// End-to-end: the `virtio-admin` binary on a simulated sysfs tree and on this host (read-only).
@Suite(.serialized) struct ListShowTests {
    func simulatedRoot(vfs: Int = 3, total: Int = 8) throws -> String {
        let root = makeTemporaryDirectory("cli-sysfs")
        let result = try virtioAdmin(["simulate", "sysfs", root, "--vfs", "\(vfs)", "--total-vfs", "\(total)"])
        #expect(result.status == 0, "\(result.error)")
        return root
    }

    @Test func listJSONOnSimulatedTree() throws {
        let root = try simulatedRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let result = try virtioAdmin(["--sysfs-root", root, "list", "--json"])
        #expect(result.status == 0)
        let entries = try #require(try json(result.output) as? [[String: Any]])
        #expect(entries.count == 4)
        let pf = entries[0]
        #expect(pf["address"] as? String == "0000:3b:00.0")
        #expect(pf["deviceID"] as? Int == 0x1041)
        #expect(pf["type"] as? String == "net")
        #expect(pf["role"] as? String == "pf")
        #expect(pf["driver"] is NSNull)
        #expect(pf["physfn"] is NSNull)
        let sriov = try #require(pf["sriov"] as? [String: Any])
        #expect(sriov["totalVFs"] as? Int == 8 && sriov["numVFs"] as? Int == 3)
        #expect(pf["virtfns"] as? [String] == ["0000:3b:00.1", "0000:3b:00.2", "0000:3b:00.3"])
        for vf in entries.dropFirst() {
            #expect(vf["role"] as? String == "vf")
            #expect(vf["physfn"] as? String == "0000:3b:00.0")
            #expect(vf["sriov"] is NSNull)
        }
    }

    @Test func globalOptionWorksBeforeAndAfterTheSubcommand() throws {
        let root = try simulatedRoot(vfs: 1, total: 2)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let before = try virtioAdmin(["--sysfs-root", root, "list", "--json"])
        let after = try virtioAdmin(["list", "--json", "--sysfs-root=\(root)"])
        #expect(before.status == 0 && after.status == 0)
        #expect(before.output == after.output)
    }

    @Test func showJSONOnSimulatedPF() throws {
        let root = try simulatedRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let result = try virtioAdmin(["--sysfs-root", root, "show", "3b:00.0", "--json"])
        #expect(result.status == 0, "\(result.error)")
        let object = try #require(try json(result.output) as? [String: Any])
        #expect(object["address"] as? String == "0000:3b:00.0")
        let caps = try #require(object["virtioCapabilities"] as? [[String: Any]])
        #expect(caps.map { $0["cfgType"] as? String } == ["common", "isr", "device", "notify", "pci"])
        #expect(caps[0]["length"] as? Int == 0x40)
        #expect(caps[3]["notifyOffMultiplier"] as? Int == 4)
        #expect(caps[0]["notifyOffMultiplier"] == nil)
        let msix = try #require(object["msix"] as? [String: Any])
        #expect(msix["tableSize"] as? Int == 8 && msix["tableBAR"] as? Int == 0 && msix["tableOffset"] as? Int == 0x4000)
        #expect(msix["pbaBAR"] as? Int == 0 && msix["pbaOffset"] as? Int == 0x6000)
        let sriov = try #require(object["sriov"] as? [String: Any])
        #expect(sriov["totalVFs"] as? Int == 8 && sriov["initialVFs"] as? Int == 8 && sriov["numVFs"] as? Int == 3)
        #expect(sriov["firstVFOffset"] as? Int == 1 && sriov["vfStride"] as? Int == 1 && sriov["vfDeviceID"] as? Int == 0x1041)
        let bars = try #require(object["bars"] as? [[String: Any]])
        #expect(bars.count == 1 && bars[0]["size"] as? Int == 0x8000 && bars[0]["kind"] as? String == "memory64")
        let vf = try #require(try json(try virtioAdmin(["--sysfs-root", root, "show", "0000:3b:00.2", "--json"]).output) as? [String: Any])
        #expect(vf["sriov"] is NSNull)
        #expect(vf["physfn"] as? String == "0000:3b:00.0")
    }

    @Test(arguments: [
        (["show", "zz"], "'zz' is not a PCI address"),
        (["show", "0000:3b:07.0"], "0000:3b:07.0: no such PCI function"),
        (["show", "0000:00:00.0"], "0000:00:00.0: not a virtio function (vendor 0x8086, device 0x0d57"),
        (["list", "--backend", "udev"], "--backend udev reads the host's /sys only"),
    ])
    func errorsAreOneSentence(arguments: [String], message: String) throws {
        let root = try simulatedRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let result = try virtioAdmin(["--sysfs-root", root] + arguments)
        #expect(result.status != 0)
        #expect(result.error.contains(message), "stderr was: \(result.error)")
        #expect(result.error.split(separator: "\n").count <= 1 || result.error.contains("Usage") == false)
        #expect(result.output.isEmpty)
    }

    @Test func missingSysfsRootIsExplained() throws {
        let result = try virtioAdmin(["--sysfs-root", "/nonexistent-root", "list"])
        #expect(result.status != 0)
        #expect(result.error.contains("/nonexistent-root/bus/pci/devices does not exist"))
    }

    @Test func hostListMatchesSysfs() throws {
        let result = try virtioAdmin(["list", "--json"])
        #expect(result.status == 0)
        let entries = try #require(try json(result.output) as? [[String: Any]])
        let expected = try FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").filter { name in
            (try? String(contentsOfFile: "/sys/bus/pci/devices/\(name)/vendor", encoding: .utf8))?.hasPrefix("0x1af4") ?? false
        }.sorted()
        #expect(entries.compactMap { $0["address"] as? String } == expected)
        for entry in entries {
            let address = entry["address"] as! String
            let device = try String(contentsOfFile: "/sys/bus/pci/devices/\(address)/device", encoding: .utf8)
            #expect(entry["deviceID"] as? Int == Int(device.dropFirst(2).trimmingCharacters(in: .whitespacesAndNewlines), radix: 16))
            let driver = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/bus/pci/devices/\(address)/driver"))
                .map { URL(fileURLWithPath: $0).lastPathComponent }
            #expect(entry["driver"] as? String == driver)
        }
    }
}
