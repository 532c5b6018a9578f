import PCIConfig
import Testing
import VirtioAdmin
import VirtioProvisioning
import VirtioSimulator
import VirtioTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The entry points the public API added for users who cannot reach `package` declarations:
/// the model's sysfs view, and policy apply by PF address.
@Suite struct PublicAPITests {
    func temporaryDirectory() -> String {
        return makeTemporaryDirectory("public-api-test")
    }

    func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, 256, file) != nil else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .filter { !$0.isWhitespace }
    }

    func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func model(vfs: Int) -> SimulatedSRIOVDevice {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = vfs
        configuration.numVFs = vfs
        configuration.vfMSIXPool = vfs * 8
        return SimulatedSRIOVDevice(configuration: configuration)
    }

    /// `writeSysfs(to:)` lays the PF and its VFs out as Linux does (the attribute names and
    /// links of Documentation/ABI/testing/sysfs-bus-pci).
    @Test func writeSysfsShowsThePFAndItsVFsAsLinuxDoes() throws {
        let device = model(vfs: 3)
        defer { device.stop() }
        let root = temporaryDirectory()
        try device.writeSysfs(to: root)
        let pf = root + "/bus/pci/devices/0000:3b:00.0"
        #expect(read(pf + "/vendor") == "0x1af4")
        #expect(read(pf + "/sriov_totalvfs") == "3")
        #expect(read(pf + "/sriov_numvfs") == "3")
        for index in 0..<3 {
            let vf = "0000:3b:00.\(index + 1)"
            #expect(link(pf + "/virtfn\(index)")?.hasSuffix(vf) == true, "virtfn\(index) names \(vf)")
            #expect(link(root + "/bus/pci/devices/\(vf)/physfn")?.hasSuffix("0000:3b:00.0") == true)
        }
        #expect(link(pf + "/virtfn3") == nil, "no fourth VF")
    }

    /// `apply(to:)`: every PF of the view when none is named, changes what differs, and
    /// refuses a VF's address with a sentence naming its PF.
    @Test func applyWorksOnTheViewsPFsAndRefusesAVF() async throws {
        let device = model(vfs: 4)
        defer { device.stop() }
        let root = temporaryDirectory()
        try device.writeSysfs(to: root)
        let policy = try ProvisioningPolicy(text: """
            [[pf]]
            match = { type = "net" }
              [[pf.vf]]
              vfs = "all"
              msix-vectors = 3
              features = ["VERSION_1", "MAC"]
            """, file: "test.toml")
        let application = PolicyApplication(policy: policy, sysfsRoot: root, opener: { _ in
            SimulatedPFOpener(device: device, sysfsRoot: root)
        })
        let reports = try await application.apply()
        #expect(reports.map(\.pf.description) == ["0000:3b:00.0"])
        #expect(reports.first?.changed == 4 && reports.first?.failed == 0)
        #expect(device.members.allSatisfy { $0.msixVectors == 3 })
        let again = try await application.apply(to: [PCIAddress("0000:3b:00.0")!])
        #expect(again.first?.changed == 0 && again.first?.unchanged == 4, "a second apply changes nothing")

        let vf = PCIAddress("0000:3b:00.2")!
        do {
            _ = try await application.apply(to: [vf])
            Issue.record("a VF's address was accepted as a PF")
        } catch {
            guard case let .vfNotPF(address, pf) = error else { Issue.record("\(error)"); return }
            #expect(address == vf && pf == PCIAddress("0000:3b:00.0"))
        }
    }
}
