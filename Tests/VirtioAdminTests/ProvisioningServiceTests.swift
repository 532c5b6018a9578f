import Logging
import PCIConfig
import ResourceManager
import Testing
import VirtioAdmin
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import VirtioTestSupport

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
        let root = makeTemporaryDirectory("service-test")
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

    /// The first events of a PF's VFs come together, each in a task of its own: one of them
    /// reads the PF (512 `virtfn` links here), the others wait for that read.
    @Test func vfEventsThatComeTogetherReadTheirPFOnce() async throws {
        let (device, service) = try makeService(vfs: 512)
        let outcomes = await withTaskGroup(of: EventOutcome.self) { group in
            for vf in 0..<64 {
                let address = PCIAddress(domain: 0, routingID: UInt16(0x3b00 + 1 + vf)).description
                group.addTask { await service.handle(try! self.event("add", address)) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.succeeded }, "\(outcomes.prefix(2).map(\.summary))")
        #expect(service.pfReadCount == 1, "the PF was read \(service.pfReadCount) times")
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

    func readText(_ path: String) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(fd, &buffer, buffer.count)
        return String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
    }

    func vfAddress(_ index: Int) -> String { PCIAddress(domain: 0, routingID: UInt16(0x3b00 + 1 + index)).description }

    /// Once an event has read the PF, a VF event of that PF costs one link read (`physfn`),
    /// not the VF's attributes; a function whose `physfn` does not name that PF goes the long
    /// way (and is not taken for a VF).
    @Test func vfEventsOfAKnownPFAreFoundByThePFsVirtfnLink() async throws {
        let (device, service) = try makeService(vfs: 64)
        #expect(await service.handle(try event("add", vfAddress(0))).succeeded)
        #expect(service.addEventReads.inFull == 1 && service.addEventReads.byLink == 0)
        let outcomes = await withTaskGroup(of: EventOutcome.self) { group in
            for vf in 1..<63 { group.addTask { await service.handle(try! self.event("add", self.vfAddress(vf))) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.succeeded && $0.summary.contains("MSI-X vectors 2 -> 4") }, "\(outcomes.prefix(2).map(\.summary))")
        #expect(service.addEventReads.byLink == 62 && service.addEventReads.inFull == 1, "\(service.addEventReads)")
        // NumVFs was written again and the PF's virtfn63 now names another function (VF 0's
        // address): the layout the service read no longer holds, so VF 63's event is read in
        // full — and a PF `change` event makes the service read the PF again.
        let last = vfAddress(63)
        let pfDirectory = service.options.sysfsRoot + "/bus/pci/devices/\(device.pfAddress)"
        let target = Sys.readLink(pfDirectory + "/virtfn0") ?? "missing"
        #expect(unlink(pfDirectory + "/virtfn63") == 0 && symlink(target, pfDirectory + "/virtfn63") == 0)
        let outcome = await service.handle(try event("add", last))
        #expect(!outcome.succeeded && outcome.summary.contains("not a VF of PF"), "\(outcome.summary)")
        #expect(service.addEventReads.inFull == 2 && service.addEventReads.byLink == 62, "\(service.addEventReads)")
        #expect(device.member(63).msixVectors == 2 && device.counters.adminCommandsByOpcode[0x41] == 63, "nothing sent for VF 63")
        #expect(await service.handle(try event("change", device.pfAddress.description)).succeeded)
        #expect(service.cachedPFs.isEmpty, "the PF is read again after its change event")
        await service.shutDown()
        device.stop()
    }

    /// A VF that could not be let go to its driver (the `drivers_probe` write failed) is left
    /// without one: its event fails and says why, though its resources were set.
    @Test func aFailedDriverProbeFailsTheEvent() async throws {
        let (device, service) = try makeService(vfs: 2)
        let probe = service.options.sysfsRoot + "/bus/pci/drivers_probe"
        #expect(unlink(probe) == 0 && mkdir(probe, 0o700) == 0, "drivers_probe replaced by a directory: writes fail")
        let outcome = await service.handle(try event("add", vfAddress(1)))
        #expect(!outcome.succeeded, "\(outcome.summary)")
        #expect(outcome.summary.contains("MSI-X vectors 2 -> 4") && outcome.summary.contains("drivers_probe") && outcome.summary.contains(probe),
                "\(outcome.summary)")
        #expect(device.member(1).msixVectors == 4)
        await service.shutDown()
        device.stop()
    }

    /// Each provisioned VF is let go to its driver (`drivers_probe`, held back by default)
    /// before its event is answered, on at most `probeThreads` threads however many events
    /// come at once (a thread per event contended on the file).
    @Test func driverProbesRunOnAFewThreads() async throws {
        let (device, service) = try makeService(vfs: 64, latency: .microseconds(200))
        #expect(service.options.probeThreads == 2)
        let probe = service.options.sysfsRoot + "/bus/pci/drivers_probe"
        let outcomes = await withTaskGroup(of: (String, EventOutcome).self) { group in
            for vf in 0..<64 {
                let address = vfAddress(vf)
                group.addTask {
                    let outcome = await service.handle(try! self.event("add", address))
                    // Answered after its own probe, or a later one, was written.
                    let written = self.readText(probe)
                    return (written, outcome)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { $0.1.succeeded })
        let addresses = Set((0..<64).map(vfAddress))
        #expect(outcomes.allSatisfy { addresses.contains($0.0) }, "\(outcomes.map(\.0).prefix(3))")
        let threads = service.probeThreads
        #expect(threads.peakConcurrency >= 1 && threads.peakConcurrency <= 2 && threads.started < 64, "\(threads)")
        await service.shutDown()
        device.stop()
    }
}
