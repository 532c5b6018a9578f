import Foundation
import Testing
import VirtioTestSupport

/// Runs `body` on a thread of its own, not one of the concurrency pool's few (the timing
/// tests running beside it need those), and records its checks here once it is done.
func checkedOffThePool(_ body: @escaping @Sendable (_ check: (Bool, String) -> Void) throws -> Void) async throws {
    let checks = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[(Bool, String)], any Error>) in
        Thread.detachNewThread {
            var checks: [(Bool, String)] = []
            continuation.resume(with: Result { try body { checks.append(($0, $1)) }; return checks })
        }
    }
    for (passed, message) in checks { #expect(passed, Comment(rawValue: message)) }
}

/// `udev-event` while the service runs: the thin client hands the event over without reading
/// the policy, and leaves anything it does not know to the full command.
@Suite(.serialized) struct UdevEventClientTests {
    let directory = makeTemporaryDirectory("udev-client")
    var state: String { directory + "/pf.state" }
    var sys: String { directory + "/sys" }
    var socket: String { directory + "/serve.sock" }

    func environment(_ address: String, action: String = "add") -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["ACTION"] = action
        environment["SUBSYSTEM"] = "pci"
        environment["DEVPATH"] = "/devices/pci0000:00/\(address)"
        environment["PCI_SLOT_NAME"] = address
        return environment
    }

    func vectors(_ vf: Int) throws -> String? {
        try String(contentsOfFile: state, encoding: .utf8).split(separator: "\n").first { $0.hasPrefix("vf \(vf) ") }?
            .split(separator: " ").first { $0.hasPrefix("vectors=") }.map(String.init)
    }

    @Test func whileTheServiceAnswersNoPolicyIsRead() async throws {
        let test = self
        try await checkedOffThePool { check in try test.serviceAnswers(check) }
    }

    func serviceAnswers(_ check: (Bool, String) -> Void) throws {
        check(try virtioAdmin(["simulate", "create", state, "--vfs", "4"]).status == 0, "simulate create")
        check(try virtioAdmin(["simulate", "sysfs", sys, "--from", state]).status == 0, "simulate sysfs")
        let policy = directory + "/policy.toml"
        try "[[pf]]\nmatch = { type = \"net\" }\n  [[pf.vf]]\n  vfs = \"all\"\n  msix-vectors = 4\n".write(toFile: policy, atomically: true, encoding: .utf8)
        chmod(policy, 0o644)
        let garbled = directory + "/garbled.toml"
        try "[[pf]\nmsix-vectors = \"many\"\n".write(toFile: garbled, atomically: true, encoding: .utf8)
        check(try vectors(0) == "vectors=2", "VF 0 keeps 2 vectors")

        // Without a service, the helper reads the policy: the garbled one is an error.
        let alone = try virtioAdmin(["udev-event", "--policy", garbled, "--simulate", state, "--sysfs-root", sys, "--socket", socket],
                                    environment: environment("0000:3b:00.1"))
        check(alone.status != 0 && alone.error.contains(garbled), "\(alone.error)")
        check(try vectors(0) == "vectors=2", "VF 0 keeps 2 vectors")

        let server = Process()
        server.executableURL = URL(fileURLWithPath: virtioAdminPath)
        server.arguments = ["serve", "--policy", policy, "--simulate", state, "--sysfs-root", sys, "--socket", socket, "--max-events", "4"]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.terminate() } }
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }

        // Absent, garbled, a directory: none is read while the service answers.
        for (vf, policyPath) in [(0, garbled), (1, directory + "/absent.toml"), (2, directory)] {
            let address = "0000:3b:00.\(vf + 1)"
            let result = try virtioAdmin(["udev-event", "--policy", policyPath, "--socket", socket], environment: environment(address))
            check(result.status == 0, "\(result.error)")
            check(result.error.hasPrefix("virtio-admin[") && result.error.contains("]: info: provisioned \(address)")
                    && result.error.hasSuffix("(via service)\n"), "\(result.error)")
            check(try vectors(vf) == "vectors=4", "VF \(vf) provisioned to 4 vectors")
        }
        // --quiet: nothing on stderr when all is well; global options before the subcommand are taken too.
        let quiet = try virtioAdmin(["--simulate", state, "udev-event", "--quiet", "--policy=\(garbled)", "--socket=\(socket)", "--timeout", "100"],
                                    environment: environment("0000:3b:00.4"))
        check(quiet.status == 0 && quiet.error.isEmpty, "\(quiet.error)")
        check(try vectors(3) == "vectors=4", "VF 3 provisioned to 4 vectors")
        server.waitUntilExit()
        check(server.terminationStatus == 0, "the service handled exactly the 4 events")
    }

    @Test func whatTheClientDoesNotKnowGoesToTheFullCommand() async throws {
        let test = self
        try await checkedOffThePool { check in try test.fullCommand(check) }
    }

    func fullCommand(_ check: (Bool, String) -> Void) throws {
        // A listener that would accept any event: nothing below may reach it.
        let listener = socket + ".listen"
        let fd = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in listener.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        check(bound == 0 && listen(fd, 8) == 0, "bound == 0 && listen(fd, 8) == 0")

        let help = try virtioAdmin(["udev-event", "--socket", listener, "--help"], environment: environment("0000:3b:00.1"))
        check(help.status == 0 && help.output.contains("USAGE: virtio-admin udev-event"), "\(help.output)")
        let badValue = try virtioAdmin(["udev-event", "--socket", listener, "--timeout", "soon"], environment: environment("0000:3b:00.1"))
        check(badValue.status != 0 && badValue.error.contains("--timeout"), "\(badValue.error)")
        let unknown = try virtioAdmin(["udev-event", "--socket", listener, "--frobnicate"], environment: environment("0000:3b:00.1"))
        check(unknown.status != 0 && unknown.error.contains("--frobnicate"), "\(unknown.error)")
        // A bad environment is refused before any socket is touched (exit 2, one sentence).
        let refused = try virtioAdmin(["udev-event", "--socket", listener], environment: environment("0000:3b:00.1", action: "explode"))
        check(refused.status == 2 && refused.error.contains("refusing udev event: ACTION 'explode' is not one of"), "\(refused.error)")
        // Nothing connected: a non-blocking accept finds no client.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        check(accept(fd, nil, nil) < 0, "no client reached the socket")
    }
}
