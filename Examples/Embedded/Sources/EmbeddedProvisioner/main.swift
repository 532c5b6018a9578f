// Provision every VF of an SR-IOV PF: 4 MSI-X vectors and a fixed feature set, the way an
// appliance's firmware would at boot. The VirtioAdmin library only; no CLI, no Foundation.
//
//   EmbeddedProvisioner                 the device model (in memory), no hardware needed
//   EmbeddedProvisioner 0000:3b:00.0    a real PF bound to vfio-pci or uio_pci_generic
import PCIConfig
import ResourceManager
import VirtioAdmin
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec

#if canImport(Glibc)
import Glibc
#endif

let wanted: FeatureSet = [.version1, .accessPlatform, FeatureSet(bit: 5) /* MAC */, FeatureSet(bit: 16) /* STATUS */]

// The only line that differs between hardware and the model: how the PF is reached.
let opener: any PFOpener
if CommandLine.arguments.count > 1 {
    guard let address = PCIAddress(CommandLine.arguments[1]) else {
        print("'\(CommandLine.arguments[1])' is not a PCI address (DDDD:BB:DD.F).")
        exit(2)
    }
    opener = LinuxPFOpener(address: address)
} else {
    var configuration = SimulatedDeviceConfiguration()
    configuration.totalVFs = 8
    configuration.numVFs = 8
    configuration.timing = DeviceTiming(latency: .microseconds(50), parallelism: 8)  // a device that takes time
    var template = Array("/tmp/embedded-sysfs-XXXXXX".utf8CString)
    guard let directory = mkdtemp(&template) else { print("cannot make a directory for the model's sysfs view"); exit(1) }
    opener = SimulatedPFOpener(device: SimulatedSRIOVDevice(configuration: configuration), sysfsRoot: String(cString: directory))
}

do {
    // One owner of the PF's admin queue: opened once, VFs' commands in flight together (as many as the queue holds).
    let group = try await AdminGroup.open(opener: opener, registry: PluginRegistry(builtInPlugins()))
    let requests = group.vfAddresses.keys.sorted().map { VFRequest(vf: $0, desired: DesiredResources(msixVectors: 4, featuresMask: wanted)) }
    let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
    let outcomes = await provisioner.apply(requests)
    for outcome in outcomes {
        let held = await provisioner.held(vf: outcome.vf)
        let status = outcome.error.map { "failed: \($0)" } ?? (outcome.changes.isEmpty ? "unchanged" : "provisioned")
        print("VF \(outcome.vf): \(status); \(held.msixVectors ?? 0) MSI-X vectors, features \(held.features?.hexMask ?? "?")")
    }
    let statistics = group.driver.statistics
    print("\(statistics.submitted) admin commands, at most \(statistics.peakInFlight) in flight (\(group.access.mode))")
    group.close()  // reset: the device lets go of the rings before the process ends
    if outcomes.contains(where: { !$0.succeeded }) { exit(1) }
} catch {
    print("provisioning failed: \(error)")
    exit(1)
}
