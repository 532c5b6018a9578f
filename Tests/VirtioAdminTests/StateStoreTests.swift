import PCIConfig
import Testing
import VirtioAdmin
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The device model's state file (`simulate create`, every `--simulate` command): what one
/// run leaves, the next one finds. Its per-VF lines are written and read on the bytes.
@Suite struct StateStoreTests {
    func device(vfs: Int, numVFs: Int? = nil) -> SimulatedSRIOVDevice {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = vfs
        configuration.numVFs = numVFs ?? vfs
        configuration.vfMSIXPool = vfs * 8
        configuration.timing = DeviceTiming(latency: .microseconds(50), parallelism: 8)
        let members = (0..<vfs).map { index in
            MemberResources(msixVectors: index % 9 + 1,
                            features: index == 5 ? FeatureSet(rawValue: 0) : FeatureSet(rawValue: (UInt128(1) << 127) | UInt128(index * 0x10001)),
                            mac: [0x52, 0x54, 0xab, 0x3b, UInt8(index >> 8), UInt8(index & 0xff)], inUse: index % 3 == 0)
        }
        return SimulatedSRIOVDevice(configuration: configuration, members: members)
    }

    /// Every VF's resources, the counters and the configuration come back as they were; the
    /// text written again is the same, byte for byte.
    @Test func aLargeStateRoundTrips() throws {
        let original = device(vfs: 1024, numVFs: 700)
        defer { original.stop() }
        var counters = SimulatedCounters()
        counters.resets = 7
        counters.notifies = 12345
        counters.adminCommands = 4103
        counters.adminErrors = 2
        counters.adminCommandsByOpcode = [0x0: 2, 0x49: 1024]
        original.restoreCounters(counters)
        let text = SimulatedDeviceStore.encode(original)
        let decoded = try SimulatedDeviceStore.decode(text)
        defer { decoded.stop() }
        #expect(decoded.members == original.members)
        #expect(decoded.numVFs == 700 && decoded.configuration.totalVFs == 1024 && decoded.configuration.vfMSIXPool == 8192)
        #expect(decoded.currentTiming == DeviceTiming(latency: .microseconds(50), parallelism: 8))
        #expect(decoded.counters.resets == 7 && decoded.counters.adminCommands == 4103 && decoded.counters.adminCommandsByOpcode[0x49] == 1024)
        #expect(SimulatedDeviceStore.encodeBytes(decoded) == Array(text.utf8))
    }

    /// The per-VF line as the file holds it (written literally here, not by the encoder).
    @Test func theVFLineIsWrittenAsTheFormatSays() throws {
        let model = device(vfs: 8)
        defer { model.stop() }
        let lines = SimulatedDeviceStore.encode(model).split(separator: "\n").map(String.init)
        #expect(lines.contains("vf 3 vectors=4 features=0x80000000000000000000000000030003 mac=52:54:ab:3b:00:03 in-use=1"))
        #expect(lines.contains("vf 5 vectors=6 features=0x0 mac=52:54:ab:3b:00:05 in-use=0"))
    }

    /// A `vf` line in another form (fields in another order, capitals, one-digit MAC bytes)
    /// reads as the canonical one; a broken line is refused with its line number.
    @Test func otherFormsReadTheSameAndBrokenLinesAreRefused() throws {
        let model = device(vfs: 4)
        defer { model.stop() }
        let text = SimulatedDeviceStore.encode(model)
        let canonical = "vf 2 vectors=3 features=0x80000000000000000000000000020002 mac=52:54:ab:3b:00:02 in-use=0"
        #expect(text.contains(canonical + "\n"))
        let reordered = text.replacingOccurrences(canonical, "vf 2 in-use=0 mac=52:54:AB:3b:0:2 features=0X80000000000000000000000000020002 vectors=3")
        let decoded = try SimulatedDeviceStore.decode(reordered)
        defer { decoded.stop() }
        #expect(decoded.members == model.members)
        let lineNumber = text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0 == canonical }! + 1
        for (broken, message) in [("vf 2 vectors=oops features=0x1 mac=52:54:ab:3b:00:02 in-use=0", "'oops' is not a count"),
                                  ("vf 2 vectors=3 features=0x1 mac=52:54:ab:3b:00 in-use=0", "'52:54:ab:3b:00' is not a MAC address"),
                                  ("vf 2 vectors=3 features=0xzz mac=52:54:ab:3b:00:02 in-use=0", "'0xzz' is not a feature mask")] {
            #expect(throws: SimulatedStateError.malformed(path: "<state>", line: lineNumber, message: message)) {
                try SimulatedDeviceStore.decode(text.replacingOccurrences(canonical, broken))
            }
        }
        let missing = text.replacingOccurrences(canonical + "\n", "")
        #expect(throws: SimulatedStateError.malformed(path: "<state>", line: missing.split(separator: "\n", omittingEmptySubsequences: false).count,
                                                      message: "expected one vf line for each of the 4 VFs")) {
            try SimulatedDeviceStore.decode(missing)
        }
        #expect(throws: SimulatedStateError.malformed(path: "<state>", line: 1, message: "not a simulated device state file (expected 'virtio-admin-simulated-device 1')")) {
            try SimulatedDeviceStore.decode("")
        }
    }
}

extension String {
    /// `self` with every `target` replaced (no Foundation in this target).
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

/// `policy apply` on a model with a state file saves the state once, after the closing
/// reset, and a save that fails is in the PF's report.
@Suite struct PolicyApplySavesTests {
    func temporaryDirectory() -> String {
        return makeTemporaryDirectory("apply-saves-test")
    }

    @Test func oneSaveAfterTheResetAndAFailedSaveIsReported() async throws {
        let directory = temporaryDirectory()
        defer { _ = system("rm -rf '\(directory)'") }
        let state = directory + "/pf.state", root = directory + "/pf.state.sys"
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = 16
        configuration.numVFs = 16
        configuration.vfMSIXPool = 128
        let created = SimulatedSRIOVDevice(configuration: configuration)
        try SimulatedDeviceStore.save(created, to: state)
        created.stop()
        try SimulatedPFOpener.ensureSysfsTree(forState: state, at: root)
        let policy = try ProvisioningPolicy(text: "[[pf]]\nmatch = { type = \"net\" }\n  [[pf.vf]]\n  vfs = \"all\"\n  msix-vectors = 5\n", file: "test.toml")
        let pf = PCIAddress("0000:3b:00.0")!
        let opener = SimulatedPFOpener(address: pf, statePath: state, sysfsRoot: root)
        let reports = try await PolicyApplication(policy: policy, sysfsRoot: root, opener: { _ in opener }).apply()
        #expect(reports.first?.changed == 16 && reports.first?.error == nil)
        #expect(opener.saves == 1, "one save, on release")
        let saved = try SimulatedDeviceStore.load(state)
        #expect(saved.members.allSatisfy { $0.msixVectors == 5 })
        #expect(saved.counters.resets == 2, "the closing reset is in the saved state")
        saved.stop()

        // A PF no rule matches is reported with its VFs (found without them, read for the report).
        let other = try ProvisioningPolicy(text: "[[pf]]\nmatch = { type = \"block\" }\n  [[pf.vf]]\n  vfs = \"all\"\n  msix-vectors = 5\n", file: "test.toml")
        let unmatched = try await PolicyApplication(policy: other, sysfsRoot: root, opener: { _ in opener }).apply()
        #expect(unmatched.first?.rule == nil && unmatched.first?.vfAddresses.count == 16 && unmatched.first?.vfAddresses[15]?.description == "0000:3b:02.0")

        // The temporary file cannot be made: the save fails, and the report says so.
        mkdir(state + ".tmp.\(getpid())", 0o755)
        let failing = SimulatedPFOpener(address: pf, statePath: state, sysfsRoot: root)
        let failed = try await PolicyApplication(policy: policy, sysfsRoot: root, opener: { _ in failing }).apply()
        #expect(failed.first?.unchanged == 16 && failing.saves == 0)
        #expect(failed.first?.error?.contains(state + ".tmp.") == true, "\(String(describing: failed.first?.error))")
    }
}
