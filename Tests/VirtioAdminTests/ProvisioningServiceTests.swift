import Logging
import PCIConfig
import ResourceManager
import Testing
import VirtioAdmin
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec

#if canImport(Glibc)
import Glibc
#endif

/// The provisioning service's engine in process: per-PF workers, batches, removal.
@Suite struct ProvisioningServiceTests {
    static let policyText = """
        [[pf]]
        match = { address = "0000:3b:00.0" }
          [[pf.vf]]
          vfs = "all"
          msix-vectors = 4
        """

    func makeService(vfs: Int, latency: Duration = .zero) throws -> (SimulatedSRIOVDevice, ProvisioningService) {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = vfs
        configuration.numVFs = vfs
        configuration.vfMSIXPool = vfs * 8
        configuration.timing = DeviceTiming(latency: latency, parallelism: 4)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        var template = Array("/tmp/service-test-XXXXXX".utf8CString)
        let root = String(cString: mkdtemp(&template)!)
        try device.sysfsTree().write(to: root)
        var options = ProvisioningService.Options()
        options.sysfsRoot = root
        let opener = SimulatedPFOpener(device: device, sysfsRoot: root)
        let service = ProvisioningService(policy: try ProvisioningPolicy(text: Self.policyText, file: "p.toml"), options: options,
                                          logger: Logger(label: "test")) { _ in opener }
        return (device, service)
    }

    func event(_ action: String, _ address: String) throws -> UdevEvent {
        try UdevEvent(environment: ["ACTION": action, "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/\(address)"])
    }

    @Test func theSameVFWaitingTwiceIsReadOnce() async throws {
        let (device, service) = try makeService(vfs: 4, latency: .milliseconds(2))
        let add = try event("add", "0000:3b:00.2")
        let outcomes = await withTaskGroup(of: EventOutcome.self) { group in
            for _ in 0..<6 { group.addTask { await service.handle(add) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.succeeded }, "\(outcomes.map(\.summary))")
        #expect(outcomes.filter { $0.summary.contains("MSI-X vectors 2 -> 4") }.count >= 1)
        let byOpcode = device.counters.adminCommandsByOpcode
        #expect(byOpcode[0x41] == 1, "one MSIX_SET: \(byOpcode)")
        #expect((byOpcode[0x40] ?? 0) < 6, "waiting requests for one VF share a read: \(byOpcode)")
        #expect(device.counters.resets == 1)
        await service.shutDown()
        device.stop()
    }

    @Test func manyVFEventsShareFewBatches() async throws {
        let (device, service) = try makeService(vfs: 64, latency: .microseconds(500))
        let outcomes = await withTaskGroup(of: EventOutcome.self) { group in
            for vf in 0..<64 {
                let routing = 0x3b00 + 1 + vf
                let address = PCIAddress(domain: 0, routingID: UInt16(routing)).description
                group.addTask { await service.handle(try! self.event("add", address)) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.succeeded && $0.summary.contains("MSI-X vectors 2 -> 4") }, "\(outcomes.prefix(2).map(\.summary))")
        let batches = await service.batchCount(pf: PCIAddress("0000:3b:00.0")!)
        #expect(batches >= 1 && batches <= 8, "64 VF events in \(batches) batches")
        #expect(device.counters.resets == 1)
        #expect(device.counters.adminCommandsByOpcode[0x41] == 64)
        await service.shutDown()
        device.stop()
    }

    @Test func removingThePFClosesItsQueueAndALaterEventOpensItAgain() async throws {
        let (device, service) = try makeService(vfs: 2)
        #expect(await service.handle(try event("add", "0000:3b:00.1")).succeeded)
        #expect(service.openPFs == [PCIAddress("0000:3b:00.0")!])
        #expect(device.counters.resets == 1)
        #expect(await service.handle(try event("remove", "0000:3b:00.0")).succeeded)
        #expect(service.openPFs.isEmpty)
        #expect(device.counters.resets == 2, "closed: the device let go of the rings")
        #expect(await service.handle(try event("add", "0000:3b:00.2")).succeeded)
        #expect(device.counters.resets == 3)
        #expect(device.member(1).msixVectors == 4)
        await service.shutDown()
        device.stop()
    }
}
