import Foundation
import Synchronization
import Testing
import VirtioTestSupport

/// The provisioning engine end to end, against the device model: the service keeps each PF
/// open and pipelines every VF, `policy apply` is one pipelined run, and the model's
/// counters (resets, admin commands by opcode) are the proof.
@Suite(.serialized) struct ProvisioningEngineTests {
    static let everyVF = """
        [[pf]]
        match = { address = "0000:3b:00.0" }
          [[pf.vf]]
          vfs = "all"
          msix-vectors = 4
          features = ["VERSION_1", "MAC", "MQ"]
        """

    struct Setup {
        let directory: String
        var state: String { directory + "/pf.state" }
        var sys: String { directory + "/sys" }
        var policy: String { directory + "/policy.toml" }
        var socket: String { directory + "/serve.sock" }
    }

    func setup(vfs: Int, policy: String = everyVF, extra: [String] = [], bindVFs: String? = nil) async throws -> Setup {
        let setup = Setup(directory: makeTemporaryDirectory("engine"))
        let create = try await va(["simulate", "create", setup.state, "--vfs", "\(vfs)", "--pool", "\(vfs * 8)"] + extra)
        #expect(create.status == 0, "\(create.error)")
        let tree = try await va(["simulate", "sysfs", setup.sys, "--from", setup.state] + (bindVFs.map { ["--bind-vfs", $0] } ?? []))
        #expect(tree.status == 0, "\(tree.error)")
        try policy.write(toFile: setup.policy, atomically: true, encoding: .utf8)
        chmod(setup.policy, 0o644)
        return setup
    }

    /// The VF addresses of the model's PF 0000:3b:00.0 (first VF offset 1, stride 1).
    func vfAddress(_ index: Int) -> String {
        let routing = 0x3b00 + 1 + index
        return String(format: "0000:%02x:%02x.%x", routing >> 8, (routing >> 3) & 0x1f, routing & 7)
    }

    func show(_ setup: Setup) async throws -> [String: Any] {
        let result = try await va(["simulate", "show", setup.state, "--json"])
        #expect(result.status == 0, "\(result.error)")
        return try #require(try json(result.output) as? [String: Any])
    }

    func counters(_ setup: Setup) async throws -> (resets: Int, byOpcode: [String: Int]) {
        let counters = try #require(try await show(setup)["counters"] as? [String: Any])
        return (counters["resets"] as? Int ?? -1, counters["byOpcode"] as? [String: Int] ?? [:])
    }

    func provisionedVFs(_ setup: Setup) async throws -> Int {
        let vfs = try #require(try await show(setup)["vfs"] as? [[String: Any]])
        return vfs.filter { $0["msixVectors"] as? Int == 4 && $0["features"] as? String == "0x100400020" }.count
    }

    /// The service on `setup`'s model; `openFiles` starts it with that RLIMIT_NOFILE (soft, hard) by `prlimit`.
    func startService(_ setup: Setup, extra: [String] = [], log: String? = nil, openFiles: (soft: Int, hard: Int)? = nil) async throws -> Process {
        let server = Process()
        let arguments = ["serve", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--socket", setup.socket] + extra
        if let openFiles {
            server.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            server.arguments = ["--nofile=\(openFiles.soft):\(openFiles.hard)", virtioAdminPath] + arguments
        } else {
            server.executableURL = URL(fileURLWithPath: virtioAdminPath)
            server.arguments = arguments
        }
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            server.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        } else {
            server.standardError = FileHandle.nullDevice
        }
        try? FileManager.default.removeItem(atPath: setup.socket)
        try server.run()
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: setup.socket) { try? await Task.sleep(for: .milliseconds(10)) }
        return server
    }

    func addEnvironment(_ address: String) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["ACTION"] = "add"; environment["SUBSYSTEM"] = "pci"
        environment["DEVPATH"] = "/devices/pci0000:00/\(address)"
        environment["PCI_SLOT_NAME"] = address
        return environment
    }

    /// 256 VF add events from 256 concurrent `udev-event` processes, on a host whose VFs
    /// already have drivers: every VF provisioned, the PF reset exactly once for the run.
    /// Load tests: hundreds of processes and a thousand threads keep both cores busy for
    /// seconds, which would starve the timing-bound tests of other suites running beside them.
    /// `swift test` skips them; `.ci/run` runs them on their own right after it.
    static let loadTests = ProcessInfo.processInfo.environment["VIRTIO_ADMIN_LOAD_TESTS"] == "1"

    @Test(.enabled(if: loadTests, "a load test: run with VIRTIO_ADMIN_LOAD_TESTS=1 (.ci/run does, on its own)"))
    func serviceOpensThePFOnceAndProvisionsEveryVF() async throws {
        let count = 256
        let setup = try await setup(vfs: count, bindVFs: "virtio-pci")
        let log = setup.directory + "/serve.log"
        let server = try await startService(setup, log: log)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        var clients: [(Process, Pipe)] = []
        for index in 0..<count {
            let client = Process()
            client.executableURL = URL(fileURLWithPath: virtioAdminPath)
            client.arguments = ["udev-event", "--socket", setup.socket, "--policy", "/nonexistent"]
            client.environment = addEnvironment(vfAddress(index))
            let pipe = Pipe()
            client.standardError = pipe
            try client.run()
            clients.append((client, pipe))
        }
        let started = clients
        let answers = await offPool {
            started.map { client, pipe in
                let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                client.waitUntilExit()
                return "\(client.terminationStatus)|\(text)"
            }
        }
        #expect(answers.allSatisfy { $0.hasPrefix("0|") && $0.contains("info: provisioned") && $0.contains("(via service)") }, "\(answers.filter { !$0.hasPrefix("0|") }.prefix(3))")
        // Each client got its own VF's outcome.
        for index in 0..<count { #expect(answers[index].contains(vfAddress(index) + " (PF 0000:3b:00.0 VF \(index))"), "\(answers[index])") }
        // While the service runs: one reset, one LIST_QUERY/LIST_USE per group (SR-IOV and
        // self), every VF provisioned.
        let during = try await counters(setup)
        #expect(during.resets == 1, "the PF was reset \(during.resets) times")
        #expect(during.byOpcode["0x0"] == 2 && during.byOpcode["0x1"] == 2, "\(during.byOpcode)")
        #expect(during.byOpcode["0x41"] == count && during.byOpcode["0x49"] == count, "\(during.byOpcode)")
        #expect(try await provisionedVFs(setup) == count)
        // SIGTERM: finish, save, exit 0; closing resets the PF once more (it lets go of the rings).
        kill(server.processIdentifier, SIGTERM)
        await waitForExit(server)
        #expect(server.terminationStatus == 0)
        #expect(try await counters(setup).resets == 2)
        // Every VF went through exactly one logged batch (each followed by one save of the
        // state); how many share a batch depends on how fast the clients arrive (the
        // library test `manyVFEventsShareFewBatches` pins coalescing down).
        let batches = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").filter { $0.contains("info: batch ") }
        let sizes = batches.compactMap { line in line.split(separator: ": ").last.flatMap { Int($0.split(separator: " ").first ?? "") } }
        #expect(sizes.reduce(0, +) == count, "\(batches.prefix(3))")
    }

    /// Events delivered again after the service was killed in the middle of a 1024-VF batch
    /// converge on the policy.
    @Test(.enabled(if: loadTests, "a load test: run with VIRTIO_ADMIN_LOAD_TESTS=1 (.ci/run does, on its own)"))
    func killedServiceConvergesWhenEventsComeAgain() async throws {
        let count = 1024
        let setup = try await setup(vfs: count, extra: ["--latency-us", "40", "--parallelism", "4"])
        let first = try await startService(setup)
        let answered = Atomic<Int>(0)
        let threads = (0..<count).map { index in
            Thread { if sendEvent(setup.socket, "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(self.vfAddress(index))") != nil { answered.add(1, ordering: .relaxed) } }
        }
        threads.forEach { $0.start() }
        try? await Task.sleep(for: .milliseconds(150))
        kill(first.processIdentifier, SIGKILL)
        await waitForExit(first)
        try? await Task.sleep(for: .milliseconds(200))
        // The state file is whole (saved atomically per batch), whatever was cut short.
        let vfsAfterKill = try await show(setup)["vfs"] as? [[String: Any]]
        #expect(vfsAfterKill?.count == count)
        let second = try await startService(setup)
        defer { if second.isRunning { kill(second.processIdentifier, SIGKILL) } }
        let replies = Mutex<[String]>([])
        let again = (0..<count).map { index in
            Thread {
                let reply = sendEvent(setup.socket, "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(self.vfAddress(index))") ?? "none"
                replies.withLock { $0.append(reply) }
            }
        }
        again.forEach { $0.start() }
        for _ in 0..<3000 where replies.withLock({ $0.count }) < count { try? await Task.sleep(for: .milliseconds(10)) }
        let all = replies.withLock { $0 }
        #expect(all.count == count && all.allSatisfy { $0.hasPrefix("ok provisioned") }, "\(all.filter { !$0.hasPrefix("ok") }.prefix(3))")
        kill(second.processIdentifier, SIGTERM)
        await waitForExit(second)
        #expect(try await provisionedVFs(setup) == count)
    }

    /// `policy apply` provisions every VF in one run; a second run only reads.
    @Test func policyApplyIsPipelinedAndIdempotent() async throws {
        let setup = try await setup(vfs: 64, extra: ["--latency-us", "50", "--parallelism", "8"])
        let first = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--json"])
        #expect(first.status == 0, "\(first.error)")
        let report = try #require(try json(first.output) as? [String: Any])
        let vfs = try #require(report["vfs"] as? [[String: Any]])
        #expect(vfs.count == 64 && vfs.allSatisfy { $0["status"] as? String == "changed" })
        #expect(vfs.first?["address"] as? String == "0000:3b:00.1")
        let pf = try #require((report["pfs"] as? [[String: Any]])?.first)
        #expect(pf["commands"] as? Int == 64 * 4, "read MSI-X, read features, set both: \(pf)")
        #expect((pf["peakInFlight"] as? Int ?? 0) > 8, "commands were in flight together: \(pf)")
        #expect(try await provisionedVFs(setup) == 64)
        let before = try await counters(setup)
        #expect(before.resets == 2, "one open, one close")

        let second = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--json"])
        #expect(second.status == 0)
        let again = try #require((try json(second.output) as? [String: Any])?["vfs"] as? [[String: Any]])
        #expect(again.allSatisfy { $0["status"] as? String == "unchanged" })
        let after = try await counters(setup)
        // Only reads: no MSIX_SET (0x41) or FEATURES_SET (0x49) was sent the second time.
        #expect(after.byOpcode["0x41"] == before.byOpcode["0x41"] && after.byOpcode["0x49"] == before.byOpcode["0x49"])
        #expect(after.byOpcode["0x40"] == 128 && after.byOpcode["0x48"] == 128)

        // The same run with one command in flight: the same result, one command at a time.
        let serial = try await self.setup(vfs: 64)
        let one = try await va(["policy", "apply", "--policy", serial.policy, "--simulate", serial.state, "--sysfs-root", serial.sys, "--max-in-flight", "1", "--json"])
        #expect(one.status == 0)
        let onePF = try #require(((try json(one.output) as? [String: Any])?["pfs"] as? [[String: Any]])?.first)
        #expect(onePF["peakInFlight"] as? Int == 1)
        #expect(try await provisionedVFs(serial) == 64)
    }

    /// A VF whose change fails part-way is reported as failed, with what it holds now.
    @Test func policyApplyReportsAPartialFailureWithWhatTheVFHolds() async throws {
        // Bit 50 is outside what the model's VFs can offer: FEATURES_SET is refused after
        // MSIX_SET succeeded.
        let policy = """
            [[pf]]
            match = { address = "0000:3b:00.0" }
              [[pf.vf]]
              vfs = "0-1"
              msix-vectors = 4
              features-mask = "0x4000100000020"
              [[pf.vf]]
              vfs = "2-3"
              msix-vectors = 4
            """
        let setup = try await setup(vfs: 4, policy: policy)
        let result = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--json"])
        #expect(result.status == 1)
        let vfs = try #require((try json(result.output) as? [String: Any])?["vfs"] as? [[String: Any]])
        for vf in vfs.prefix(2) {
            #expect(vf["status"] as? String == "failed")
            #expect((vf["changes"] as? [[String: Any]])?.first?["change"] as? String == "msix-vectors")
            #expect((vf["holding"] as? [String: Any])?["msixVectors"] as? Int == 4, "\(vf)")
            #expect((vf["error"] as? String)?.contains("INVALID_FIELD") == true || (vf["error"] as? String)?.contains("invalid field") == true, "\(vf)")
        }
        #expect(vfs.suffix(2).allSatisfy { $0["status"] as? String == "changed" })
        let text = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys])
        #expect(text.status == 1)
        #expect(text.output.contains("VF 0 (0000:3b:00.1) failed: ") && text.output.contains("it now holds 4 MSI-X vectors"), "\(text.output)")
    }

    /// Bad input is exit status 2 with one sentence; nothing is opened.
    @Test(arguments: [
        (["0000:3b:00.1"], "0000:3b:00.1 is a VF of 0000:3b:00.0, not a PF; name its PF."),
        (["zz"], "'zz' is not a PCI address"),
        (["0000:3b:07.0"], "PF 0000:3b:07.0 is not in the sysfs view"),
    ])
    func policyApplyBadInputIsStatusTwo(pfs: [String], message: String) async throws {
        let setup = try await setup(vfs: 2)
        let result = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys] + pfs)
        #expect(result.status == 2)
        #expect(result.error.contains(message) && result.error.split(separator: "\n").count == 1, "\(result.error)")
        #expect(try await counters(setup).resets == 0)
        let missing = try await va(["policy", "apply", "--policy", setup.directory + "/missing.toml", "--simulate", setup.state])
        #expect(missing.status == 2 && missing.error.contains("it does not exist"), "\(missing.error)")
    }

    /// A PF whose VFs the policy does not reach (here: none enabled) is opened, nothing is
    /// sent for VFs, and the run succeeds.
    @Test func policyApplyOnAPFWithoutVFs() async throws {
        let setup = try await setup(vfs: 0, extra: ["--total-vfs", "4"])
        let result = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.contains("0 VFs: 0 changed, 0 unchanged, 0 failed; 0 admin commands"), "\(result.output)")
    }

    /// A client that goes away before its answer costs the service nothing (no SIGPIPE).
    @Test func serviceSurvivesAClientThatLeaves() async throws {
        let setup = try await setup(vfs: 4)
        let server = try await startService(setup)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        for index in 0..<4 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in for (i, byte) in setup.socket.utf8.enumerated() { buffer[i] = byte } }
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            _ = "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(vfAddress(index))\n".withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        try? await Task.sleep(for: .milliseconds(300))
        #expect(server.isRunning)
        let reply = sendEvent(setup.socket, "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(vfAddress(0))")
        #expect(reply?.hasPrefix("ok provisioned") == true, "\(reply ?? "no answer")")
        kill(server.processIdentifier, SIGTERM)
        await waitForExit(server)
        #expect(server.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: setup.socket), "the service unlinks the socket it made")
    }

    /// `policy apply` interrupted part-way on a simulated PF: the queue is closed (the PF
    /// reset) and what the device did up to then is saved, as a real device keeps it — before,
    /// the state file still said nothing had been done, and the next run repeated it all.
    @Test func anInterruptedPolicyApplyKeepsWhatTheSimulatedDeviceDid() async throws {
        // 64 VFs one after another, 4 commands each, 8 ms each: about two seconds of work.
        let setup = try await setup(vfs: 64, extra: ["--latency-us", "8000", "--parallelism", "1"])
        let apply = Process()
        apply.executableURL = URL(fileURLWithPath: virtioAdminPath)
        apply.arguments = ["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--max-in-flight", "1"]
        let errors = Pipe()
        apply.standardError = errors
        apply.standardOutput = FileHandle.nullDevice
        try apply.run()
        // Interrupted once it holds the PF (its state file's lock) and has worked a while.
        let lockFD = open(setup.state + ".lock", O_RDWR | O_CREAT, 0o600)
        defer { close(lockFD) }
        for _ in 0..<500 {
            guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else { break }
            flock(lockFD, LOCK_UN)
            try? await Task.sleep(for: .milliseconds(10))
        }
        try? await Task.sleep(for: .milliseconds(500))
        kill(apply.processIdentifier, SIGINT)
        let stderr = await offPool { String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
        await waitForExit(apply)
        #expect(apply.terminationStatus == 128 + SIGINT, "\(stderr)")
        #expect(stderr.contains("interrupted by signal 2") && !stderr.contains("NOT saved"), "\(stderr)")
        let provisioned = try await provisionedVFs(setup)
        let counters = try await counters(setup)
        #expect(provisioned > 0 && provisioned < 64, "interrupted part-way: \(provisioned) of 64 VFs provisioned")
        // The saved state agrees with itself: one MSIX_SET and one FEATURES_SET per VF
        // provisioned (give or take the VF in flight), one reset to open and one to close (the
        // command's own close after the handler's finds the queue closed and resets nothing).
        #expect(abs((counters.byOpcode["0x49"] ?? 0) - provisioned) <= 1, "\(counters.byOpcode), \(provisioned) VFs")
        #expect(counters.resets == 2, "\(counters.resets) resets")
    }

    /// The service holds each client's socket until its VF is provisioned: before it takes
    /// any, it raises a low soft open-file limit (systemd's 1024) to 4096 and grows its
    /// descriptor table to that size at once, rather than doubling it while a burst of events
    /// is being accepted (each doubling waits for an RCU grace period, some 10 ms here).
    @Test func theServiceMakesRoomForItsClientsBeforeTakingAny() async throws {
        // The service starts with a soft limit of 1024 under this runner's hard limit (lowering
        // a hard limit needs no privilege; raising one would).
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let hard = Int(min(limit.rlim_max, 8192))
        try #require(hard > 1024, "this runner's hard open-file limit (\(hard)) leaves nothing to raise")
        let setup = try await setup(vfs: 4)
        let server = try await startService(setup, openFiles: (1024, hard))
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        try #require(server.isRunning && FileManager.default.fileExists(atPath: setup.socket), "prlimit or the service did not start")
        #expect(sendEvent(setup.socket, "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(vfAddress(0))")?.hasPrefix("ok provisioned") == true)
        let proc = "/proc/\(server.processIdentifier)"
        let wanted = min(4096, hard)
        let limits = try String(contentsOfFile: proc + "/limits", encoding: .utf8).split(separator: "\n").first { $0.hasPrefix("Max open files") }
        #expect(limits?.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2).joined(separator: " ") == "\(wanted) \(hard)", "\(limits ?? "")")
        let table = try String(contentsOfFile: proc + "/status", encoding: .utf8).split(separator: "\n").first { $0.hasPrefix("FDSize:") }
        #expect((table?.split(separator: "\t").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0) >= wanted, "\(table ?? "")")
        kill(server.processIdentifier, SIGTERM)
        await waitForExit(server)
    }

    /// With few descriptors (a hard limit of 64) the service holds at most 32 clients at
    /// once (fewer by those it has open at start), says so, and leaves the rest waiting in the
    /// listen backlog: 100 clients at once all get their VF provisioned. Taking them all would
    /// leave no descriptor for opening the PF or saving the state, and those events would fail.
    @Test func aServiceShortOfDescriptorsHoldsFewerClientsAndAnswersEveryOne() async throws {
        let count = 100
        let setup = try await setup(vfs: count)
        let log = setup.directory + "/serve.log"
        let server = try await startService(setup, log: log, openFiles: (64, 64))
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let socket = setup.socket
        let lines = (0..<count).map { "ACTION=add SUBSYSTEM=pci DEVPATH=/devices/pci0000:00/\(vfAddress($0))" }
        let answers = await offPool {
            let clients = lines.map { connectAndSend(socket, $0) }
            defer { clients.forEach { $0.map { _ = close($0) } } }
            return clients.map { $0.flatMap(readAnswer) ?? "no answer" }
        }
        #expect(answers.allSatisfy { $0.hasPrefix("ok provisioned") }, "\(answers.filter { !$0.hasPrefix("ok provisioned") }.prefix(3))")
        kill(server.processIdentifier, SIGTERM)
        await waitForExit(server)
        #expect(server.terminationStatus == 0)
        #expect(try await provisionedVFs(setup) == count)
        let said = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").first { $0.contains("the open-file limit lets the service hold ") }
        let held = said.flatMap { $0.split(separator: "hold ").last?.split(separator: " ").first }.flatMap { Int($0) }
        #expect(held.map { $0 >= 1 && $0 <= 32 } == true, "\(said ?? "no line about the limit")")
    }

    /// Without a service, the helper refuses to open (and so reset) a PF whose VFs have
    /// drivers — the same check for a simulated PF as for a real one.
    @Test func helperWithoutServiceRefusesAPFWhoseVFsAreInUse() async throws {
        let setup = try await setup(vfs: 4, bindVFs: "virtio-pci")
        var environment = addEnvironment(vfAddress(1))
        environment["PCI_ID"] = "1AF4:1041"
        let result = try await va(["udev-event", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys,
                                      "--socket", setup.directory + "/none.sock", "--lock-dir", setup.directory], environment: environment)
        #expect(result.status == 1)
        #expect(result.error.contains("PF 0000:3b:00.0 has VFs in use (VF 0 bound to virtio-pci") && result.error.contains("Run 'virtio-admin serve'"), "\(result.error)")
        #expect(try await counters(setup).resets == 0, "the PF was not touched")
    }

    /// `policy apply` finds PFs without reading their VFs, but opening one still checks
    /// every VF's driver: bound VFs refuse the PF (nothing reset, exit 1) unless `--force`.
    @Test func policyApplyRefusesAPFWhoseVFsAreInUseUnlessForced() async throws {
        let setup = try await setup(vfs: 4, bindVFs: "virtio-pci")
        let refused = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys])
        #expect(refused.status == 1)
        #expect((refused.output + refused.error).contains("PF 0000:3b:00.0 has VFs in use (VF 0 bound to virtio-pci"), "\(refused.output) \(refused.error)")
        #expect(try await counters(setup).resets == 0, "the PF was not touched")
        #expect(try await provisionedVFs(setup) == 0)
        let forced = try await va(["policy", "apply", "--policy", setup.policy, "--simulate", setup.state, "--sysfs-root", setup.sys, "--force"])
        #expect(forced.status == 0, "\(forced.error)")
        #expect(try await provisionedVFs(setup) == 4)
    }

    /// The Linux opener runs the same code as far as it can without hardware: on a fake
    /// sysfs tree whose BAR 0 (`resource0`) is a plain file, the in-use check refuses with
    /// the same sentence as for the model; without bound VFs the PF is locked, its BAR
    /// mapped and the driver negotiates through it — and finds no device behind it.
    @Test func linuxOpenerSharesTheCodeAfterOpening() async throws {
        let directory = makeTemporaryDirectory("linux-opener")
        for bound in [true, false] {
            let sys = directory + (bound ? "/bound" : "/free")
            #expect(try await va(["simulate", "sysfs", sys, "--vfs", "2"] + (bound ? ["--bind-vfs", "virtio-pci"] : [])).status == 0)
            let bar = sys + "/devices/pci0000:00/0000:3b:00.0/resource0"
            #expect(FileManager.default.createFile(atPath: bar, contents: Data(count: 0x8000)))
            let result = try await va(["msix", "get", "0000:3b:00.0", "--vf", "0", "--sysfs-root", sys, "--lock-dir", directory + "/locks"])
            #expect(result.status != 0)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: bar))
            if bound {
                #expect(result.error.contains("PF 0000:3b:00.0 has VFs in use (VF 0 bound to virtio-pci, VF 1 bound to virtio-pci); opening its admin queue would reset the PF"), "\(result.error)")
                #expect(bytes.allSatisfy { $0 == 0 }, "the BAR was not touched")
            } else {
                #expect(result.error.contains("0000:3b:00.0: the device does not offer VERSION_1"), "\(result.error)")
                // device_feature_select (common config offset 0) was last set to window 3:
                // the driver read every feature window through the mapped BAR.
                #expect(bytes[0] == 3)
                #expect(FileManager.default.fileExists(atPath: directory + "/locks/0000:3b:00.0.pf.lock"))
            }
        }
    }

    /// `--simulate PATH` works with list and show: the simulated PF and its VFs appear as on a host.
    @Test func listAndShowSeeTheSimulatedPF() async throws {
        let directory = makeTemporaryDirectory("simulate-list")
        #expect(try await va(["simulate", "create", directory + "/pf.state", "--vfs", "3"]).status == 0)
        let list = try await va(["--simulate", directory + "/pf.state", "list", "--json"])
        #expect(list.status == 0, "\(list.error)")
        let rows = try #require(try json(list.output) as? [[String: Any]])
        #expect(rows.map { $0["address"] as? String } == ["0000:3b:00.0", "0000:3b:00.1", "0000:3b:00.2", "0000:3b:00.3"])
        #expect(rows.first?["role"] as? String == "pf")
        let show = try await va(["show", "0000:3b:00.0", "--simulate", directory + "/pf.state"])
        #expect(show.status == 0 && show.output.contains("SR-IOV"), "\(show.output)\(show.error)")
    }

    /// `--simulate PATH` is taken by every command (before or after its name); those that
    /// cannot apply to the model say why in one sentence.
    /// (One setup and one command at a time: the suite must not flood the two cores.)
    @Test func everyCommandTakesSimulate() async throws {
        let commands: [[String]] = [
            ["list"], ["show", "0000:3b:00.0"], ["commands", "0000:3b:00.0"], ["plugins"], ["msix", "pool", "0000:3b:00.0"],
            ["msix", "get", "0000:3b:00.0", "--vf", "1"], ["features", "get", "0000:3b:00.0", "--vf", "0"],
            ["passthru", "0000:3b:00.0", "--opcode", "0x40", "--vf", "0"], ["bind", "0000:3b:00.1", "--driver", "vfio-pci", "--dry-run"],
            ["unbind", "0000:3b:00.1", "--dry-run"], ["restore", "0000:3b:00.1", "--dry-run"], ["entropy", "0000:3b:00.0"], ["monitor", "--timeout", "1"],
            ["probe", "0000:3b:00.0"], ["conformance", "0000:3b:00.0"],
            ["simulate", "show"], ["policy", "plan"], ["policy", "apply"],
        ]
        let setup = try await setup(vfs: 2)
        for arguments in commands {
            for placement in [["--simulate", setup.state] + arguments, arguments + ["--simulate", setup.state]] {
                let extra = arguments.first == "policy" ? ["--policy", setup.policy] : []
                let result = try await va(placement + extra)
                #expect(!result.error.contains("Unknown option"), "\(placement): \(result.error)")
                if result.status != 0 {
                    #expect(result.error.split(separator: "\n").count == 1 && result.error.contains("device model"), "\(placement): \(result.error)")
                }
            }
        }
    }

    /// Every line of the udev rule that a remove event reaches filters on what the event
    /// carries: a removed device's ATTR{} cannot be read (udev then skips the line).
    @Test func udevRuleFiltersRemovalsOnTheEventItself() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let rules = try String(contentsOfFile: root + "/Examples/udev/99-virtio-admin.rules", encoding: .utf8)
        let lines = rules.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") && !$0.hasPrefix("LABEL") }
        let seenByRemove = lines.filter { !$0.contains("ACTION==\"add\"") }
        #expect(!seenByRemove.isEmpty)
        for line in seenByRemove {
            #expect(!line.contains("ATTR{") && !line.contains("ATTRS{") && !line.contains("TEST"), "a remove event reaches: \(line)")
        }
        #expect(seenByRemove.contains { $0.contains("ACTION==\"remove\"") && $0.contains("ENV{PCI_ID}!=\"1AF4:*") && $0.contains("GOTO") })
        // Add events are still filtered on the vendor attribute before anything runs.
        let firstRun = try #require(lines.firstIndex { $0.contains("RUN+=") })
        #expect(lines[..<firstRun].contains { $0.contains("ACTION==\"add\"") && $0.contains("ATTR{vendor}!=\"0x1af4\"") })
    }
}

/// `virtio-admin` run on a GCD thread: waiting for the child never blocks the test
/// runner's cooperative pool (2 threads on a 2-core machine), where timing-bound tests of
/// other suites run.
func va(_ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, output: String, error: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try virtioAdmin(arguments, environment: environment) }) }
    }
}

/// Runs blocking work (reading pipes, waiting for processes) on a GCD thread.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in DispatchQueue.global().async { continuation.resume(returning: body()) } }
}

func waitForExit(_ process: Process) async {
    await offPool { process.waitUntilExit() }
}

/// One event line to the service's socket, and its answer (nil when nothing listens).
func sendEvent(_ path: String, _ line: String) -> String? {
    guard let fd = connectAndSend(path, line) else { return nil }
    defer { close(fd) }
    return readAnswer(fd)
}

/// A client connected to the service at `path` that sent `line`; nil when it could not connect.
func connectAndSend(_ path: String, _ line: String) -> Int32? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in for (index, byte) in path.utf8.enumerated() { buffer[index] = byte } }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    _ = (line + "\n").withCString { write(fd, $0, strlen($0)) }
    return fd
}

/// The service's answer line on `fd` (without its newline), or nil when it closed without one.
func readAnswer(_ fd: Int32) -> String? {
    var bytes = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 1024)
    while true {
        let got = read(fd, &buffer, buffer.count)
        if got <= 0 { break }
        bytes += buffer[0..<got]
        if bytes.last == 0x0a { break }
    }
    return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .newlines)
}
