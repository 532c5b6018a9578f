import Foundation
import Synchronization
import Testing
import VirtioTestSupport

/// The udev helper end to end: the binary, the device model's state file and its fake sysfs tree.
@Suite(.serialized) struct HelperTests {
    static let policy = """
        [defaults]
        on-failure = "keep-unbound"

        [[pf]]
        match = { address = "0000:3b:00.0", type = "net" }
          [[pf.vf]]
          vfs = "0-3"
          msix-vectors = 4
          features = ["VERSION_1", "MAC", "MQ"]
          [[pf.vf]]
          vfs = "4-7"
          msix-vectors = 3
          features-mask = "0x100000020"
        """

    struct Setup {
        let directory: String
        var state: String { directory + "/pf.state" }
        var sys: String { directory + "/sys" }
        var policy: String { directory + "/policy.toml" }
        var helper: [String] { ["udev-event", "--policy", policy, "--simulate", state, "--sysfs-root", sys, "--socket", directory + "/none.sock"] }
    }

    func setup(vfs: Int, total: Int = 8) throws -> Setup {
        let setup = Setup(directory: makeTemporaryDirectory("helper"))
        #expect(try virtioAdmin(["simulate", "create", setup.state, "--vfs", "\(vfs)", "--total-vfs", "\(total)"]).status == 0)
        #expect(try virtioAdmin(["simulate", "sysfs", setup.sys, "--from", setup.state]).status == 0)
        try Self.policy.write(toFile: setup.policy, atomically: true, encoding: .utf8)
        chmod(setup.policy, 0o644)
        return setup
    }

    /// udev-event with the environment of an event for `address`.
    func event(_ setup: Setup, _ action: String, _ address: String, extra: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["ACTION"] = action
        environment["SUBSYSTEM"] = "pci"
        environment["DEVPATH"] = "/devices/pci0000:00/\(address)"
        environment["PCI_SLOT_NAME"] = address
        environment["PCI_ID"] = "1AF4:1041"
        environment.merge(extra) { $1 }
        return try virtioAdmin(setup.helper, environment: environment)
    }

    func vfState(_ setup: Setup) throws -> [String] {
        try String(contentsOfFile: setup.state, encoding: .utf8).split(separator: "\n").filter { $0.hasPrefix("vf ") }.map(String.init)
    }

    @Test func hotplugFlowProvisionsEveryVFExactlyOnce() throws {
        let setup = try setup(vfs: 0)
        // A PF appears: its VF drivers are held back.
        let pf = try event(setup, "add", "0000:3b:00.0")
        #expect(pf.status == 0, "\(pf.error)")
        #expect(try String(contentsOfFile: setup.sys + "/bus/pci/devices/0000:3b:00.0/sriov_drivers_autoprobe", encoding: .utf8) == "0")
        // The PF's driver opens it (0 VFs: the SR-IOV group does not exist yet) and negotiates
        // VIRTIO_F_SR_IOV, without which VFs cannot be enabled.
        #expect(try virtioAdmin(["simulate", "numvfs", setup.state, "8"]).status != 0)
        #expect(try virtioAdmin(["--simulate", setup.state, "commands", "0000:3b:00.0"]).status == 0)
        // sriov_numvfs goes to 8; the VFs appear in sysfs; 8 add events arrive at once.
        #expect(try virtioAdmin(["simulate", "numvfs", setup.state, "8"]).status == 0)
        #expect(try virtioAdmin(["simulate", "sysfs", setup.sys, "--from", setup.state]).status == 0)
        let addresses = (1...7).map { "0000:3b:00.\($0)" } + ["0000:3b:01.0"]
        let logs = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: addresses.count) { index in
            let result = try? event(setup, "add", addresses[index])
            logs.withLock { $0.append("\(result?.status ?? -1)|" + (result?.error ?? "")) }
        }
        let all = logs.withLock { $0 }
        #expect(all.allSatisfy { $0.hasPrefix("0|") }, "\(all)")
        let provisioned = all.joined().split(separator: "\n").filter { $0.contains("info: provisioned") && $0.contains("MSI-X vectors 2 -> ") }
        #expect(provisioned.count == 8, "each VF changed exactly once: \(all)")
        // The device model's state is the proof.
        let vfs = try vfState(setup)
        for index in 0..<8 {
            #expect(vfs[index].contains(index < 4 ? "vectors=4 features=0x100400020" : "vectors=3 features=0x100000020"), "\(vfs[index])")
        }
        // Each VF was let go to its driver after provisioning.
        #expect(addresses.contains(try String(contentsOfFile: setup.sys + "/bus/pci/drivers_probe", encoding: .utf8)))

        // Idempotence: the same events again change nothing.
        for address in addresses {
            let again = try event(setup, "add", address)
            #expect(again.status == 0)
            #expect(again.error.contains("already as the policy says (no change)"), "\(again.error)")
        }
        #expect(try vfState(setup) == vfs)
    }

    @Test func killedMidProvisioningConvergesOnRerun() throws {
        let setup = try setup(vfs: 8)
        let addresses = (1...7).map { "0000:3b:00.\($0)" } + ["0000:3b:01.0"]
        var generator = SystemRandomNumberGenerator()
        for (round, address) in addresses.enumerated() {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: virtioAdminPath)
            process.arguments = setup.helper
            var environment = ProcessInfo.processInfo.environment
            environment["ACTION"] = "add"; environment["SUBSYSTEM"] = "pci"
            environment["DEVPATH"] = "/devices/pci0000:00/\(address)"
            process.environment = environment
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(UInt32.random(in: 0...(round % 2 == 0 ? 40_000 : 120_000), using: &generator))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // Whatever was cut short, the state file is whole, and a re-run converges.
        #expect(try vfState(setup).count == 8)
        for address in addresses { #expect(try event(setup, "add", address).status == 0) }
        let vfs = try vfState(setup)
        for index in 0..<8 {
            #expect(vfs[index].contains(index < 4 ? "vectors=4 features=0x100400020" : "vectors=3 features=0x100000020"), "\(vfs[index])")
        }
    }

    @Test(arguments: [
        (["DEVPATH": "/sys/bus/pci/devices/0000:3b:00.1"], "DEVPATH '/sys/bus/pci/devices/0000:3b:00.1' is not under /devices"),
        (["DEVPATH": "/devices/pci0000:00/../../etc/0000:3b:00.1"], "has an empty, '.' or '..' component"),
        (["DEVPATH": "/devices/pci0000:00/0000:3b:00.9", "PCI_SLOT_NAME": "0000:3b:00.9"], "does not end in a PCI address"),
        (["PCI_SLOT_NAME": "0000:3b:00.2"], "PCI_SLOT_NAME '0000:3b:00.2' does not match DEVPATH"),
        (["SUBSYSTEM": "usb"], "SUBSYSTEM 'usb' is not pci"),
        (["ACTION": "explode"], "ACTION 'explode' is not one of"),
        (["PCI_ID": "1af4-1041"], "PCI_ID '1af4-1041' is not VVVV:DDDD"),
        (["DEVPATH": "/devices/pci0000:00/0000:3b:00.1;reboot"], "character outside"),
    ])
    func badEnvironmentsAreRefusedAndTouchNothing(overrides: [String: String], message: String) throws {
        let setup = try setup(vfs: 8)
        let before = try String(contentsOfFile: setup.state, encoding: .utf8)
        let result = try event(setup, "add", "0000:3b:00.1", extra: overrides)
        #expect(result.status == 2)
        #expect(result.error.contains("refusing udev event: ") && result.error.contains(message), "\(result.error)")
        #expect(result.error.split(separator: "\n").count == 1, "one log line")
        #expect(try String(contentsOfFile: setup.state, encoding: .utf8) == before)
    }

    @Test(arguments: [
        ("[[pf]]\nmatch = { address = \"0000:3b:00.0\" }\n  [[pf.vf]]\n  vfs = \"0-3\"\n  features = [\"VERSION_1\", \"BOGUS\"]\n", "5:3: unknown feature 'BOGUS'"),
        ("[[pf]]\nmatch = { address = \"0000:3b:00.0\" }\n  [[pf.vf]]\n  msix-vectors = 4096\n", "4:3: msix-vectors 4096 is out of range (0 to 2048"),
        ("[[pf]]\nmatch = { type = \"net\" }\n\n[[pf]]\nmatch = { type = \"net\" }\n", "5:1: duplicate match: the [[pf]] at line 2 already matches type net"),
        ("[[pf]\nmatch = 1\n", "1:6: an array-of-tables header must end with ]]"),
        ("[[pf]]\nmatch = \"unterminated\n", "2:22: a string is not closed on its line"),
        ("[[pf]]\nmatch = { adress = \"0000:3b:00.0\" }\n", "2:11: unknown key 'adress' in [pf[0].match]"),
        ("[[pf]]\nmatch = { address = \"0000:3b:00.0\" }\n  [[pf.vf]]\n  vfs = \"0-3\"\n  [[pf.vf]]\n  vfs = \"2-5\"\n", "6:3: vfs 2-5 overlaps vfs 0-3 at line 4"),
        ("[defaults]\non-failure = \"panic\"\n", "2:1: on-failure must be one of bind-anyway, keep-unbound"),
    ])
    func badPoliciesNameLineAndColumn(text: String, message: String) throws {
        let directory = makeTemporaryDirectory("bad-policy")
        try text.write(toFile: directory + "/p.toml", atomically: true, encoding: .utf8)
        let result = try virtioAdmin(["policy", "check", directory + "/p.toml"])
        #expect(result.status != 0)
        #expect(result.error.contains(directory + "/p.toml:" + message), "\(result.error)")
        let json = try virtioAdmin(["policy", "check", directory + "/p.toml", "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        #expect(object["valid"] as? Bool == false)
        #expect((object["error"] as? [String: Any])?["line"] as? Int == Int(message.prefix { $0 != ":" }))
    }

    @Test func planShowsChangesAndChangesNothing() throws {
        let setup = try setup(vfs: 8)
        let before = try vfState(setup)
        let plan = try virtioAdmin(["policy", "plan", "--policy", setup.policy, "--simulate", setup.state, "--json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(plan.output.utf8)) as? [[String: Any]])
        #expect(rows.count == 16)
        #expect(rows.first?["change"] as? String == "msix-vectors" && rows.first?["from"] as? Int == 2 && rows.first?["to"] as? Int == 4)
        #expect(try vfState(setup) == before)
    }

    @Test func serviceSerialisesConcurrentEvents() throws {
        let setup = try setup(vfs: 8)
        let socket = setup.directory + "/serve.sock"
        let server = Process()
        server.executableURL = URL(fileURLWithPath: virtioAdminPath)
        server.arguments = ["serve", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--socket", socket, "--max-events", "8"]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.terminate() } }
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
        let addresses = (1...7).map { "0000:3b:00.\($0)" } + ["0000:3b:01.0"]
        let outputs = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { index in
            var environment = ProcessInfo.processInfo.environment
            environment["ACTION"] = "add"; environment["SUBSYSTEM"] = "pci"
            environment["DEVPATH"] = "/devices/pci0000:00/\(addresses[index])"
            let result = try? virtioAdmin(["udev-event", "--socket", socket, "--policy", "/nonexistent"], environment: environment)
            outputs.withLock { $0.append("\(result?.status ?? -1)|\(result?.error ?? "")") }
        }
        server.waitUntilExit()
        let all = outputs.withLock { $0 }
        #expect(all.allSatisfy { $0.hasPrefix("0|") && $0.contains("(via service)") }, "\(all)")
        let vfs = try vfState(setup)
        for index in 0..<8 { #expect(vfs[index].contains(index < 4 ? "vectors=4" : "vectors=3"), "\(vfs[index])") }
    }

    @Test func rootRefusesAWritablePolicy() throws {
        guard getuid() == 0 else { print("skipped: the ownership check applies when running as root"); return }
        let setup = try setup(vfs: 8)
        chmod(setup.policy, 0o666)
        let result = try event(setup, "add", "0000:3b:00.1")
        #expect(result.status != 0)
        #expect(result.error.contains("refusing the policy \(setup.policy): it is writable by everyone (mode 666)"), "\(result.error)")
    }

    @Test func installsIntoATemporaryPrefix() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/make") else { print("skipped: make is not installed"); return }
        let destination = makeTemporaryDirectory("install")
        let binary = virtioAdminPath
        let result = try runProgram("/usr/bin/make", ["-C", root, "install-files", "DESTDIR=\(destination)", "PREFIX=/opt/va", "BINARY=\(binary)"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        let rule = try String(contentsOfFile: destination + "/etc/udev/rules.d/99-virtio-admin.rules", encoding: .utf8)
        #expect(rule.contains("RUN+=\"/opt/va/bin/virtio-admin udev-event --quiet\""))
        #expect(try String(contentsOfFile: destination + "/etc/systemd/system/virtio-admin.service", encoding: .utf8).contains("ExecStart=/opt/va/bin/virtio-admin serve"))
        #expect(FileManager.default.fileExists(atPath: destination + "/etc/systemd/system/virtio-admin.socket"))
        let apply = try String(contentsOfFile: destination + "/etc/systemd/system/virtio-admin-apply.service", encoding: .utf8)
        #expect(apply.contains("ExecStart=/opt/va/bin/virtio-admin policy apply") && apply.contains("Before=kubelet.service") && apply.contains("Type=oneshot"))
        #expect(FileManager.default.isExecutableFile(atPath: destination + "/opt/va/bin/virtio-admin"))
        let check = try runProgram(destination + "/opt/va/bin/virtio-admin", ["policy", "check", destination + "/etc/virtio-admin/policy.toml"])
        #expect(check.status == 0, "\(check.error)")
    }

    @Test func monitorRunsAndStops() throws {
        let result = try virtioAdmin(["monitor", "--json", "--timeout", "1"])
        #expect(result.status == 0, "\(result.error)")
    }
}
