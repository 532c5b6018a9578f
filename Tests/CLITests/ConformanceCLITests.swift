import Foundation
import Testing
import VirtioTestSupport

/// Runs `virtio-admin` on a GCD thread: waiting for the child never blocks the test
/// runner's cooperative pool (2 threads on a 2-core machine).
func virtioAdminOffPool(_ arguments: [String]) async throws -> (status: Int32, output: String, error: String) {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try virtioAdmin(arguments) }) }
    }
}

/// `virtio-admin conformance`, `probe --simulate` and a PF opened with no VFs, as a user runs them.
@Suite(.serialized) struct ConformanceCLITests {
    func state(vfs: Int) async throws -> String {
        let path = makeTemporaryDirectory("cli-conformance") + "/pf.state"
        let result = try await virtioAdminOffPool(["simulate", "create", path, "--vfs", "\(vfs)", "--total-vfs", "8"])
        #expect(result.status == 0, "\(result.error)")
        return path
    }

    @Test func conformanceOfTheSimulatedPF() async throws {
        let path = try await state(vfs: 8)
        let result = try await virtioAdminOffPool(["--simulate", path, "conformance", "0000:3b:00.0"])
        #expect(result.status == 0, "\(result.output)\(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.first == "0000:3b:00.0: admin facility conformance (virtio 1.4, 13 checks)")
        #expect(lines.contains("PASS  invalid-group: a reserved group type fails with EINVAL / Q_INVALID_GROUP [admin.tex:88-93,344-357]"))
        #expect(lines.contains { $0.hasPrefix("SKIP  vf-enable:") })
        #expect(lines.last == "12 passed, 0 failed, 1 skipped")
    }

    @Test func conformanceJSONWithVFEnableClear() async throws {
        let path = try await state(vfs: 0)
        let result = try await virtioAdminOffPool(["--simulate", path, "conformance", "0000:3b:00.0", "--json"])
        #expect(result.status == 0, "\(result.error)")
        let object = try #require(try json(result.output) as? [String: Any])
        #expect(object["failed"] as? Int == 0)
        let checks = try #require(object["checks"] as? [[String: Any]])
        #expect(checks.count == 13)
        let vfEnable = try #require(checks.first { $0["id"] as? String == "vf-enable" })
        #expect(vfEnable["outcome"] as? String == "PASS" && vfEnable["spec"] as? String == "admin.tex:417-423")
        let list = try await virtioAdminOffPool(["conformance", "--list"])
        #expect(list.output.split(separator: "\n").count == 13)
    }

    @Test func conformanceOfAPFWithoutAnAdminQueueExitsWithStatus1() async throws {
        let path = try await state(vfs: 2)
        // The same PF without VIRTIO_F_ADMIN_VQ (bit 41) among its features.
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let edited = text.split(separator: "\n").map { line -> String in
            guard line.hasPrefix("pf-features "), let mask = UInt128(line.dropFirst("pf-features 0x".count), radix: 16) else { return String(line) }
            return "pf-features 0x" + String(mask & ~(UInt128(1) << 41), radix: 16)
        }.joined(separator: "\n") + "\n"
        try edited.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await virtioAdminOffPool(["--simulate", path, "conformance", "0000:3b:00.0"])
        #expect(result.status == 1)
        #expect(result.output.contains("0 passed, 0 failed, 13 skipped"), "\(result.output)")
        #expect(result.error.contains("0000:3b:00.0: the device does not offer VIRTIO_F_ADMIN_VQ"), "\(result.error)")
    }

    @Test func pfWithNoVFsOpensAndVFsNeedSRIOVNegotiated() async throws {
        let path = try await state(vfs: 0)
        // VFs cannot be enabled before the PF's driver negotiated VIRTIO_F_SR_IOV.
        let early = try await virtioAdminOffPool(["simulate", "numvfs", path, "2"])
        #expect(early.status != 0 && early.error.contains("VFs cannot be enabled: the PF's driver has not negotiated VIRTIO_F_SR_IOV"))
        // The PF opens with no VFs; the SR-IOV group's LIST_QUERY gets EINVAL (0x16) / INVALID_GROUP (4).
        let commands = try await virtioAdminOffPool(["--simulate", path, "--trace", "commands", "0000:3b:00.0"])
        #expect(commands.status == 0, "\(commands.error)")
        #expect(commands.error.contains("admin< 16 00 04 00 00 00 00 00"))
        #expect(commands.output.contains("note: 0000:3b:00.0: the SR-IOV group's commands are unavailable until VFs are enabled"))
        let get = try await virtioAdminOffPool(["--simulate", path, "msix", "get", "0000:3b:00.0", "--vf", "0"])
        #expect(get.status != 0)
        // probe shows what the driver negotiated, SR_IOV among it.
        let probe = try await virtioAdminOffPool(["--simulate", path, "probe", "0000:3b:00.0", "--json"])
        let object = try #require(try json(probe.output) as? [String: Any])
        #expect((object["negotiatedFeatures"] as? [String])?.contains("SR_IOV") == true)
        #expect((object["negotiatedFeatures"] as? [String])?.contains("ORDER_PLATFORM") == true)
        #expect(object["statusBits"] as? String == "0x0f (ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK)")
        // Now VFs can be enabled, and the SR-IOV group is negotiated when a command needs it.
        #expect(try await virtioAdminOffPool(["simulate", "numvfs", path, "2"]).status == 0)
        let after = try await virtioAdminOffPool(["--simulate", path, "msix", "get", "0000:3b:00.0", "--vf", "1"])
        #expect(after.output == "VF 1: 2 MSI-X vectors\n", "\(after.error)")
    }
}

/// A one-shot command interrupted by SIGINT resets the PF before it exits.
@Suite(.serialized) struct InterruptCLITests {
    @Test func sigintResetsThePFBeforeExit() async throws {
        let path = makeTemporaryDirectory("cli-interrupt") + "/pf.state"
        let created = try await virtioAdminOffPool(["simulate", "create", path, "--vfs", "2"])
        #expect(created.status == 0)
        // Every command takes 3 s in this device model.
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("timing latency-ns=3000000000 parallelism=1\n".utf8))
        handle.closeFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: virtioAdminPath)
        process.arguments = ["--simulate", path, "--trace", "--timeout", "10000", "msix", "get", "0000:3b:00.0", "--vf", "0"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        // LIST_QUERY/LIST_USE of both groups take 4 × 3 s; interrupt once the first is on
        // the queue (its trace line is out).
        let (text, elapsed) = await withCheckedContinuation { (continuation: CheckedContinuation<(String, Duration), Never>) in
            DispatchQueue.global().async {
                var text = ""
                while !text.contains("admin> ") {
                    let chunk = errors.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    text += String(decoding: chunk, as: UTF8.self)
                }
                let start = ContinuousClock.now
                process.interrupt()  // SIGINT
                process.waitUntilExit()
                text += String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                continuation.resume(returning: (text, ContinuousClock.now - start))
            }
        }
        #expect(process.terminationStatus == 130)
        #expect(elapsed < .seconds(2.5), "it did not wait for the 3 s command")
        #expect(text.contains("virtio-admin: interrupted by signal 2."))
        #expect(text.contains("virtio-admin: 0000:3b:00.0: admin queue closed; device_status reads 0 (reset)."), "\(text)")
    }
}
