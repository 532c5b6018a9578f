import Foundation
import PCIConfig
import ResourceManager
import Testing
import VirtioAdmin
import VirtioAdminDriver
import VirtioLinux
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The owner of a PF's admin queue, on the device model in memory.
@Suite struct AdminGroupTests {
    func temporaryDirectory() -> String {
        return makeTemporaryDirectory("admin-group-test")
    }

    func open(vfs: Int = 8) async throws -> (SimulatedSRIOVDevice, AdminGroup) {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = vfs
        configuration.numVFs = vfs
        configuration.vfMSIXPool = vfs * 8
        let device = SimulatedSRIOVDevice(configuration: configuration)
        let group = try await AdminGroup.open(opener: SimulatedPFOpener(device: device, sysfsRoot: temporaryDirectory()),
                                              registry: PluginRegistry(builtInPlugins()))
        return (device, group)
    }

    /// The real opener, on a tree whose PF is unbound (its `resource0` a plain file): it
    /// leaves Bus Master Enable clear — the admin driver sets it once its reset is confirmed —
    /// and hands over the closure that sets it; the default open (entropy, probe) sets it.
    @Test func theLinuxOpenerLeavesBusMasteringToTheDriver() throws {
        let root = temporaryDirectory()
        let tree = SimulatedSysfsTree(totalVFs: 1, numVFs: 0)
        try tree.write(to: root)
        let directory = root + "/bus/pci/devices/\(tree.pfAddress)"
        #expect(FileManager.default.createFile(atPath: directory + "/resource0", contents: Data(count: Int(SimulatedBARLayout.size))))
        func command() throws -> UInt16 {
            let bytes = try #require(FileManager.default.contents(atPath: directory + "/config"))
            return UInt16(bytes[4]) | UInt16(bytes[5]) << 8
        }
        func clearCommand() throws {
            let handle = try #require(FileHandle(forUpdatingAtPath: directory + "/config"))
            try handle.seek(toOffset: 4)
            try handle.write(contentsOf: Data([0, 0]))
            try handle.close()
        }
        try clearCommand()
        let access = try LinuxPFOpener(address: tree.pfAddress, sysfsRoot: root, lockDirectory: root + "/locks").open()
        #expect(try command() & PCIHeader.commandBusMaster == 0, "not set at open")
        #expect(access.enableBusMaster?() == true)
        #expect(try command() & PCIHeader.commandBusMaster != 0, "set by the closure the driver calls")
        try clearCommand()
        _ = try RealDeviceOpener(sysfsRoot: root).open(tree.pfAddress)
        #expect(try command() & PCIHeader.commandBusMaster != 0, "the default open sets it")
    }

    @Test func openedOnceKeptOpenClosedOnce() async throws {
        let (device, group) = try await open()
        #expect(device.counters.resets == 1, "opening resets the PF once")
        #expect(group.vfAddresses.count == 8 && group.vfIndex(of: PCIAddress("0000:3b:00.3")!) == 2)
        let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
        let requests = (0..<8).map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 3)) }
        for _ in 0..<3 {
            let outcomes = await provisioner.apply(requests)
            #expect(outcomes.allSatisfy { $0.succeeded })
        }
        #expect(device.counters.resets == 1, "batches never reset the PF")
        #expect(device.members.allSatisfy { $0.msixVectors == 3 })
        group.close()
        group.close()
        #expect(device.counters.resets == 2, "closing resets it once (the device lets go of the rings)")
        device.stop()
    }

    @Test func recoversOnlyWhenTheDeviceNeedsAReset() async throws {
        let (device, group) = try await open()
        let needless = try await group.recoverIfNeeded()
        #expect(needless == false)
        #expect(device.counters.resets == 1)
        device.setFault(.needsResetMidFlight)
        let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
        let failed = await provisioner.apply([VFRequest(vf: 0, desired: DesiredResources(msixVectors: 4))])
        #expect(failed.first?.error == .deviceNeedsReset(device: group.address), "\(String(describing: failed.first?.error))")
        device.setFault(.needsResetMidFlight, false)
        let recovered = try await group.recoverIfNeeded()
        #expect(recovered == true)
        #expect(group.recoveryCount == 1)
        let resetsAfterRecovery = device.counters.resets
        #expect(resetsAfterRecovery > 1)
        let again = await provisioner.apply([VFRequest(vf: 0, desired: DesiredResources(msixVectors: 4))])
        #expect(again.first?.succeeded == true && device.member(0).msixVectors == 4)
        #expect(device.counters.resets == resetsAfterRecovery)
        group.close()
        device.stop()
    }

    @Test func bulkOutcomesFollowRequestOrderAndProgressCountsEveryVF() async throws {
        let (device, group) = try await open(vfs: 32)
        device.setTiming(DeviceTiming(latency: .microseconds(20), parallelism: 4, completionOrder: .shuffled(seed: 7)))
        let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
        let requests = (0..<32).reversed().map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 1 + $0 % 4)) }
        let seen = ProgressLog()
        let outcomes = await provisioner.apply(requests, progress: { done, all in seen.add(done, all) })
        #expect(outcomes.map(\.vf) == requests.map(\.vf))
        #expect(outcomes.allSatisfy { $0.succeeded })
        #expect(seen.values == (1...32).map { [$0, 32] })
        for vf in 0..<32 { #expect(device.member(vf).msixVectors == 1 + vf % 4) }
        #expect(group.driver.statistics.peakInFlight > 4, "VFs were in flight together")
        group.close()
        device.stop()
    }
}

final class ProgressLog: @unchecked Sendable {
    var values: [[Int]] = []
    func add(_ done: Int, _ all: Int) { values.append([done, all]) }
}

/// `--vf` is read once at the command line into a VFSelector; an address is resolved under the PF.
@Suite struct VFSelectorTests {
    /// Opening reads the PF once and each VF's `driver` link once (the in-use check), and a
    /// VF with a driver still stops it (unless the caller turns the check off).
    @Test func openingReadsOneDriverLinkPerVFAndRefusesABoundVF() async throws {
        func openCounting(vfs: Int, bound: [Int: String] = [:], refuse: Bool = true) async throws -> (SimulatedSRIOVDevice, Int) {
            var configuration = SimulatedDeviceConfiguration()
            configuration.totalVFs = vfs
            configuration.numVFs = vfs
            configuration.vfMSIXPool = vfs * 8
            let device = SimulatedSRIOVDevice(configuration: configuration)
            let root = makeTemporaryDirectory("admin-group-in-use")
            defer { _ = system("rm -rf '\(root)'") }
            var tree = device.sysfsTree()
            tree.vfDrivers = bound
            try tree.write(to: root)
            var options = AdminGroup.Options()
            let counter = SysfsReadCounter()
            options.sysfsReads = counter
            options.refuseWhenVFsInUse = refuse
            do {
                let group = try await AdminGroup.open(opener: SimulatedPFOpener(device: device, sysfsRoot: root), registry: PluginRegistry(builtInPlugins()), options: options)
                group.close()
            } catch {
                device.stop()
                throw error
            }
            return (device, counter.reads)
        }
        let (small, smallReads) = try await openCounting(vfs: 8)
        let (large, largeReads) = try await openCounting(vfs: 40)
        small.stop()
        large.stop()
        // Each VF: its driver link alone (the PF's layout places the VFs; two virtfn links confirm it).
        #expect(largeReads - smallReads == 32, "\(largeReads) reads for 40 VFs, \(smallReads) for 8")
        await #expect {
            _ = try await openCounting(vfs: 40, bound: [30: "virtio-pci", 2: "vfio-pci"])
        } throws: { error in
            guard case VirtioAdminError.vfsInUse(let pf, let busy) = error else { return false }
            return pf == PCIAddress("0000:3b:00.0")! && busy == ["VF 2 bound to vfio-pci", "VF 30 bound to virtio-pci"]
        }
        let (forced, forcedReads) = try await openCounting(vfs: 40, bound: [2: "vfio-pci"], refuse: false)
        #expect(forced.counters.resets == 2 && forcedReads == largeReads - 40, "without the check: opened, and no driver link read")
        forced.stop()
    }

    @Test func indexAddressAndBadTextEachReadOnce() throws {
        #expect(try VFSelector(parsing: "3") == .index(VFNumber(index: 3)!))
        #expect(try VFSelector(parsing: "0000:3b:00.4") == .address(PCIAddress("0000:3b:00.4")!))
        #expect(throws: VFSelectorError(message: "--vf must be a VF index (0, 1, …), not '-1'.")) { try VFSelector(parsing: "-1") }
        #expect(throws: VFSelectorError(message: "--vf must be a VF index (0, 1, …), not '70000'.")) { try VFSelector(parsing: "70000") }
        #expect(throws: VFSelectorError(message: "--vf 'three' is neither a VF index (0, 1, …) nor a PCI address.")) { try VFSelector(parsing: "three") }
    }
}

/// The simulated PF's sysfs view, as `--simulate` commands prepare it.
@Suite struct SimulatedSysfsViewTests {
    func temporaryDirectory() -> String {
        return makeTemporaryDirectory("sysfs-view-test")
    }

    /// A command with `--simulate` makes sure the PF's sysfs view exists; when it does, the
    /// state file is not decoded again (only its `pf` line is read).
    @Test func theSimulatedSysfsViewIsWrittenOnceAndTheStateDecodedOnlyThen() throws {
        let directory = temporaryDirectory()
        defer { _ = system("rm -rf '\(directory)'") }
        let state = directory + "/pf.state", root = directory + "/sys"
        var configuration = SimulatedDeviceConfiguration()
        configuration.pfAddress = PCIAddress("0000:5e:00.0")!
        configuration.totalVFs = 4
        configuration.numVFs = 4
        let device = SimulatedSRIOVDevice(configuration: configuration)
        try SimulatedDeviceStore.save(device, to: state)
        device.stop()
        #expect(try SimulatedDeviceStore.pfAddress(inState: state) == PCIAddress("0000:5e:00.0")!)
        try SimulatedPFOpener.ensureSysfsTree(forState: state, at: root)
        #expect(access(root + "/bus/pci/devices/0000:5e:00.0/config", F_OK) == 0, "the view was written")
        // A later line broken: the view exists, so nothing past the pf line is read.
        let file = fopen(state, "a")
        fputs("vf 0 vectors=oops\n", file)
        fclose(file)
        try SimulatedPFOpener.ensureSysfsTree(forState: state, at: root)
        // Without the view the state is decoded, and the broken line is found.
        _ = system("rm -rf '\(root)'")
        #expect(throws: VirtioAdminError.self) { try SimulatedPFOpener.ensureSysfsTree(forState: state, at: root) }
    }
}
