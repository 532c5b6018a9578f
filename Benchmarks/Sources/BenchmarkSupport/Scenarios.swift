import FeatureBitsResourceManager
import MSIXResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioSimulator
import VirtioSpec
import VirtioTransport

#if canImport(Glibc)
import Glibc
#endif

/// A simulated PF with its admin queue open.
public struct Bench: Sendable {
    public let device: SimulatedSRIOVDevice
    public let driver: AdminQueueDriver

    public static func open(vfs: Int, timing: DeviceTiming, queueSize: Int = 256) async throws -> Bench {
        var configuration = SimulatedDeviceConfiguration()
        configuration.totalVFs = vfs
        configuration.numVFs = vfs
        configuration.vfMSIXPool = vfs * 8
        configuration.maximumQueueSize = 1024
        let device = SimulatedSRIOVDevice(configuration: configuration)
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        var options = AdminQueueDriver.Options()
        options.queueSize = queueSize
        options.defaultTimeout = .seconds(60)
        let driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
        device.setTiming(timing)
        return Bench(device: device, driver: driver)
    }

    public func close() {
        driver.close()
        device.stop()
    }
}

public let msix = MSIXResourceManager()
public let featureBits = FeatureBitsResourceManager()
public let provisionedFeatures: FeatureSet = [.version1, FeatureSet(bit: 5), FeatureSet(bit: 16)]

/// P1: every VF gets MSI-X vectors and features; `inFlight` commands at most at once
/// (1 = the serialised driver).
public func provisionAll(_ bench: Bench, vfs: Int, inFlight: Int) async throws {
    if inFlight == 1 {
        for vf in 0..<vfs {
            try await msix.setVectors(4, of: vf, driver: bench.driver)
            try await featureBits.setFeatures(provisionedFeatures, of: vf, driver: bench.driver)
        }
        return
    }
    // `inFlight` workers, each taking every inFlight-th command: no task per command.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<min(inFlight, vfs * 2) {
            group.addTask {
                var index = worker
                while index < vfs * 2 {
                    let vf = index / 2
                    if index % 2 == 0 {
                        try await msix.setVectors(4, of: vf, driver: bench.driver)
                    } else {
                        try await featureBits.setFeatures(provisionedFeatures, of: vf, driver: bench.driver)
                    }
                    index += inFlight
                }
            }
        }
        try await group.waitForAll()
    }
}

/// P2: `total` MSIX_GET commands with `inFlight` at once.
public func commandLoop(_ bench: Bench, total: Int, inFlight: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<inFlight {
            group.addTask {
                var index = worker
                while index < total {
                    _ = try await msix.vectors(of: index % 64, driver: bench.driver)
                    index += inFlight
                }
            }
        }
        try await group.waitForAll()
    }
}

/// Wall time of `body` in seconds.
nonisolated(nonsending) public func measure(_ body: () async throws -> Void) async rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    try await body()
    let elapsed = clock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// The best (least disturbed) of `runs` measurements.
nonisolated(nonsending) public func best(_ runs: Int, _ body: () async throws -> Double) async rethrows -> Double {
    var result = Double.infinity
    for _ in 0..<runs { result = min(result, try await body()) }
    return result
}

/// P3: a fake sysfs tree with one PF and `vfs` VFs under a fresh directory.
public func makeTree(vfs: Int) throws -> String {
    let root = "/tmp/virtio-admin-bench-\(getpid())-\(vfs)"
    var tree = SimulatedSysfsTree(totalVFs: vfs, numVFs: vfs)
    tree.vfMSIXCounts = []
    try tree.write(to: root)
    return root
}

public func runProcess(_ path: String, _ arguments: [String]) -> Int32 {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    defer { posix_spawn_file_actions_destroy(&actions) }
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status
}

/// Runs a program with an environment; returns (wall seconds, peak RSS in KiB, exit status).
public func runMeasured(_ path: String, _ arguments: [String], environment: [String: String]) -> (seconds: Double, rssKiB: Int, status: Int32) {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let clock = ContinuousClock()
    let start = clock.now
    guard posix_spawn(&pid, path, &actions, nil, argv, envp) == 0 else { return (0, 0, -1) }
    var status: Int32 = 0
    var usage = rusage()
    wait4(pid, &status, 0, &usage)
    let elapsed = clock.now - start
    return (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, usage.ru_maxrss, status)
}
