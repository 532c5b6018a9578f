// Provision every VF of a (simulated) SR-IOV PF: 4 MSI-X vectors and a fixed feature set,
// the way an appliance's firmware would at boot. Core modules only; no Foundation.
import FeatureBitsResourceManager
import MSIXResourceManager
import VirtioAdminDriver
import VirtioSimulator
import VirtioSpec
import VirtioTransport

#if canImport(Glibc)
import Glibc
#endif

let vfCount = 8
var configuration = SimulatedDeviceConfiguration()
configuration.totalVFs = vfCount
configuration.numVFs = vfCount
let device = SimulatedSRIOVDevice(configuration: configuration)

let msix = MSIXResourceManager()
let features = FeatureBitsResourceManager()
let wanted: FeatureSet = [.version1, .accessPlatform, FeatureSet(bit: 5) /* MAC */, FeatureSet(bit: 16) /* STATUS */]

do {
    let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
    let driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory,
                                                 options: AdminQueueDriver.Options(), opcodeNames: ProjectOpcodeTable.default.names)
    // All VFs at once: the admin queue keeps many commands in flight.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for vf in 0..<vfCount {
            group.addTask {
                try await msix.setVectors(4, of: vf, driver: driver)
                try await features.setFeatures(wanted, of: vf, driver: driver)
            }
        }
        try await group.waitForAll()
    }
    for vf in 0..<vfCount {
        let vectors = try await msix.vectors(of: vf, driver: driver)
        let offered = try await features.features(of: vf, driver: driver)
        print("VF \(vf): \(vectors) MSI-X vectors, features \(offered.hexMask) (\(offered.names(for: .net).joined(separator: " ")))")
    }
    let pool = try await msix.pool(driver: driver)
    print("pool: \(pool.available) of \(pool.total) vectors available")
    driver.close()
} catch {
    print("provisioning failed: \(error)")
    exit(1)
}
