import PCIConfig
import ResourceManager
import VirtioAdmin
import VirtioProvisioning
import FeatureBitsResourceManager
import MSIXResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioSimulator
import VirtioSpec
import VirtioSystem
import VirtioTransport

#if canImport(Glibc)
import Glibc
#endif

/// A simulated PF with its admin queue open.
public struct Bench: Sendable {
    public let device: SimulatedSRIOVDevice
    public let driver: AdminQueueDriver

    /// - Parameters:
    ///   - ownThread: the device model processes its queues on a thread of its own.
    ///   - onModelThreadStart: with `ownThread`, runs first on the model's thread (the
    ///     allocation counter marks that thread there).
    public static func open(vfs: Int, timing: DeviceTiming, queueSize: Int = 256, ownThread: Bool = false,
                            onModelThreadStart: (@Sendable () -> Void)? = nil) async throws -> Bench {
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
        if ownThread { device.processQueuesOnOwnThread(onThreadStart: onModelThreadStart) }
        return Bench(device: device, driver: driver)
    }

    public func close() {
        driver.close()
        device.stop()
    }
}

let msix = MSIXResourceManager()
let featureBits = FeatureBitsResourceManager()
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

/// P2 through the batch API: `total` MSIX_GET commands in batches of `batch` (one doorbell
/// and one wait per batch), from one task.
public func batchLoop(_ bench: Bench, total: Int, batch: Int) async throws {
    let commands = (0..<batch).map { msixGetCommand(vf: $0 % 64) }
    var done = 0
    while done < total {
        let results = await bench.driver.submitBatch(done + batch <= total ? commands : Array(commands.prefix(total - done)))
        for result in results { _ = try result.get() }
        done += results.count
    }
}

/// P2 through the batch API from `submitters` tasks at once, each sending batches of
/// `batch` (so that the device works on one batch while the driver places the next).
public func concurrentBatchLoop(_ bench: Bench, total: Int, batch: Int, submitters: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<submitters {
            group.addTask {
                let share = total / submitters + (worker < total % submitters ? 1 : 0)
                try await batchLoop(bench, total: share, batch: batch)
            }
        }
        try await group.waitForAll()
    }
}

/// P2 through the per-command async API on an ``AdminBatcher``: `inFlight` tasks, whose
/// commands the batcher gathers into batches.
public func batcherLoop(_ bench: Bench, total: Int, inFlight: Int) async throws {
    let batcher = AdminBatcher(driver: bench.driver)
    try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<inFlight {
            group.addTask {
                var index = worker
                while index < total {
                    _ = try await msix.vectors(of: index % 64, driver: batcher)
                    index += inFlight
                }
            }
        }
        try await group.waitForAll()
    }
}

/// MSIX_GET of VF `vf`, as the plugin sends it.
public func msixGetCommand(vf: Int) -> AdminCommand {
    AdminCommand(opcode: AdminOpcode(0x40), member: GroupMemberID(vfIndex: vf), resultLength: 8)
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

/// P3: enumerates every virtio function of the sysfs view under `root` (SysfsEnumerator).
@discardableResult
public func enumerateFunctions(root: String) throws -> Int {
    try SysfsEnumerator(root: root).functions().count
}

/// Starts `path` with its output to /dev/null; its pid, or -1 when it could not start.
public func spawnQuietly(_ path: String, _ arguments: [String]) -> pid_t {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    defer { posix_spawn_file_actions_destroy(&actions) }
    guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return -1 }
    return pid
}

/// Runs `path` to its end, output to /dev/null; its wait status, or -1 when it could not start.
public func runProcess(_ path: String, _ arguments: [String]) -> Int32 {
    let pid = spawnQuietly(path, arguments)
    guard pid > 0 else { return -1 }
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

// MARK: P6 — the product's provisioning paths

public struct ProvisioningPathTimes: Sendable {
    public var library: Double
    public var apply: Double
    public var start: Double
    public var service: Double
    public var serviceResets: Int
    /// The service's clients against a server thread that answers at once.
    public var clientsAlone: Double
}

/// 1024 VFs by one policy through: the library's bulk provisioner in this process (the
/// baseline), `policy apply` in a cold process, and a running service receiving one event
/// per VF concurrently — each on a fresh model with the same timing; each the best of `rounds`,
/// the rounds interleaved.
public func measureProvisioningPaths(binary: String, vfs: Int, timing: DeviceTiming, rounds: Int = 5) async throws -> ProvisioningPathTimes {
    let directory = "/tmp/virtio-admin-bench-p6-\(getpid())"
    _ = runProcess("/bin/mkdir", ["-p", directory])
    defer { _ = runProcess("/bin/rm", ["-rf", directory]) }
    let policyText = "[[pf]]\nmatch = { type = \"net\" }\n  [[pf.vf]]\n  vfs = \"all\"\n  msix-vectors = 4\n  features = [\"VERSION_1\", \"MAC\", \"MQ\"]\n"
    let policyPath = directory + "/policy.toml"
    let file = fopen(policyPath, "w")
    fputs(policyText, file)
    fclose(file)
    chmod(policyPath, 0o644)
    let policy = try ProvisioningPolicy(text: policyText, file: policyPath)
    let create = ["simulate", "create", "--vfs", "\(vfs)", "--pool", "\(vfs * 8)", "--latency-us", "\(timing.latency.nanoseconds / 1000)", "--parallelism", "\(timing.parallelism)"]

    // Each path's figure is its best of `rounds`, the rounds interleaved (library, `policy
    // apply`, a process start, the service, the clients alone, in turn), so that every
    // figure and its baseline come from the same minutes of a noisy host.
    var library = Double.infinity
    var apply = Double.infinity
    var start = Double.infinity
    var service = Double.infinity
    var resets = -1
    // The same clients against a server thread that answers each at once: what the
    // harness's own side costs (a floor under the service's figure, not subtracted).
    let listener = try? UnixSocket.listen(at: directory + "/floor.sock")
    var floor = Double.infinity
    for run in 0..<rounds {
        // Baseline: the library, in process, on a model in memory (open not counted).
        do {
            var configuration = SimulatedDeviceConfiguration()
            configuration.totalVFs = vfs
            configuration.numVFs = vfs
            configuration.vfMSIXPool = vfs * 8
            configuration.timing = timing
            let device = SimulatedSRIOVDevice(configuration: configuration)
            let root = directory + "/lib-sys"
            _ = runProcess("/bin/rm", ["-rf", root])
            let group = try await AdminGroup.open(opener: SimulatedPFOpener(device: device, sysfsRoot: root), registry: PluginRegistry(builtInPlugins()))
            let rule = policy.pfs[0]
            let requests = policy.requests(for: group.vfAddresses, under: rule)
            let provisioner = Provisioner(driver: group.driver, memberType: group.memberType)
            let seconds = await measure { _ = await provisioner.apply(requests) }
            library = min(library, seconds)
            group.close()
            device.stop()
        }

        // policy apply, one cold process, on a fresh state.
        let applyState = directory + "/apply\(run).state"
        _ = runProcess(binary, Array(create[0...1]) + [applyState] + Array(create[2...]))
        let measured = runMeasured(binary, ["policy", "apply", "--policy", policyPath, "--simulate", applyState, "--quiet"], environment: [:])
        if measured.status == 0 { apply = min(apply, measured.seconds) } else { print("policy apply failed: status \(measured.status)") }
        start = min(start, runMeasured(binary, ["policy", "check", policyPath], environment: [:]).seconds)

        // The service: 1024 events at once from clients of this process, on a fresh state.
        let state = directory + "/serve\(run).state"
        _ = runProcess(binary, Array(create[0...1]) + [state] + Array(create[2...]))
        let socketPath = directory + "/serve.sock"
        guard let server = spawn(binary, ["serve", "--policy", policyPath, "--simulate", state, "--socket", socketPath, "--quiet"]) else {
            print("service: \(binary) could not be started")
            continue
        }
        for _ in 0..<500 where access(socketPath, F_OK) != 0 { usleep(10_000) }
        // Open the PF first (one event), as a running service has done before VFs come.
        _ = sendServiceEvents(socketPath, vfs: 0..<1)
        var answered = 0
        let seconds = await measure { answered = sendServiceEvents(socketPath, vfs: 1..<vfs) }
        // A round whose events were not all answered ok is not a time of the service's.
        if answered == vfs - 1 { service = min(service, seconds) } else { print("service: \(vfs - 1 - answered) of \(vfs - 1) events not answered ok") }
        // Every answer came after its batch's state was saved: the counters of the run so far.
        let text = String(decoding: (try? readAll(state)) ?? [], as: UTF8.self)
        let runResets = text.split(separator: "\n").first { $0.hasPrefix("counters ") }
            .flatMap { $0.split(separator: " ").first { $0.hasPrefix("resets=") } }.flatMap { Int($0.dropFirst(7)) } ?? -1
        resets = max(resets, runResets)
        kill(server, SIGTERM)
        var status: Int32 = 0
        waitpid(server, &status, 0)

        if let listener {
            let count = vfs - 1
            if let server = JoinableThread({
                for _ in 0..<count {
                    guard case .success(let client) = UnixSocket.accept(listener) else { continue }
                    _ = UnixSocket.readLine(client, limit: 4096)
                    UnixSocket.sendAll(client, Array("ok 0000:00:00.0: nothing to do\n".utf8))
                    UnixSocket.close(client)
                }
            }) {
                floor = min(floor, await measure { _ = sendServiceEvents(directory + "/floor.sock", vfs: 1..<vfs) })
                server.join()
            }
        }
    }

    if let listener { UnixSocket.close(listener) }
    return ProvisioningPathTimes(library: library, apply: apply, start: start, service: service, serviceResets: resets, clientsAlone: floor)
}

/// The child's process ID, or `nil` when it could not be started (never 0: a `kill(0, …)`
/// would signal this process's whole group).
func spawn(_ path: String, _ arguments: [String]) -> pid_t? {
    var pid: pid_t = 0
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, path, nil, nil, argv, environ) == 0, pid > 0 else { return nil }
    return pid
}

func readAll(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "r") else { return [] }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count <= 0 { break }
        bytes += buffer[0..<count]
    }
    return bytes
}

/// VF add events for `vfs`, all at once from this one thread, as many `udev-event` clients
/// would send them: every connection is opened and its event line written before any
/// answer is read; then the answers are read in turn (the wall time is the last answer's;
/// each read is one call, without polling). The number answered "ok". One thread rather
/// than a thread per client: 1023 threads' creation alone took 50–70 ms on a two-core
/// machine, most of the service's allowance, against a server that answered at once.
func sendServiceEvents(_ path: String, vfs: Range<Int>) -> Int {
    var lines: [[UInt8]] = []
    for vf in vfs {
        let address = PCIAddress(domain: 0, routingID: UInt16(0x3b00 + 1 + vf)).description
        guard let event = try? UdevEvent(environment: ["ACTION": "add", "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/\(address)"]) else { return 0 }
        lines.append(Array((event.wireLine + "\n").utf8))
    }
    var open: [Int32] = []
    open.reserveCapacity(lines.count)
    defer { open.forEach { UnixSocket.close($0) } }
    for line in lines {
        // A blocking connect: the listener's backlog (1024) takes them all.
        guard let fd = try? UnixSocket.connect(to: path, receiveTimeout: .seconds(10)) else { return 0 }
        open.append(fd)
        UnixSocket.sendAll(fd, line)
    }
    var ok = 0
    for fd in open where UnixSocket.readLine(fd, limit: 4096).hasPrefix("ok ") { ok += 1 }
    return ok
}
