import ArgumentParser
import Foundation
import Logging
import PCIConfig
import ResourceManager
import VirtioAdminDriver
import VirtioLinux
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioLock

/// Options of the udev helper and the service.
struct HelperOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The provisioning policy.", valueName: "FILE")) var policy: String = ProvisioningPolicy.standardPath
    @Option(name: .long, help: ArgumentHelp("Act on the simulated PF in PATH instead of hardware.", valueName: "PATH")) var simulate: String?
    @Option(name: .customLong("sysfs-root"), help: ArgumentHelp("Mount point of sysfs.", valueName: "DIR")) var sysfsRoot: String = "/sys"
    @Option(help: ArgumentHelp("The service's socket (udev-event talks to it when it runs).", valueName: "PATH"))
    var socket: String = "/run/virtio-admin/serve.sock"
    @Option(name: .customLong("lock-dir"), help: ArgumentHelp("Where per-PF locks live when no service runs.", valueName: "DIR"))
    var lockDirectory: String = "/run/virtio-admin"
    @Flag(help: "Log each step (debug level).") var verbose = false
    @Flag(help: "Log errors only.") var quiet = false
    @Option(help: ArgumentHelp("Per-command timeout in milliseconds.", valueName: "MS")) var timeout: Int = 5000

    func makeLogger(_ label: String) -> Logger {
        let level: Logger.Level = quiet ? .error : (verbose ? .debug : .info)
        LoggingBootstrap.once(level: level)
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }

    func loadPolicy() throws -> ProvisioningPolicy {
        let text: String
        do { text = try String(contentsOfFile: policy, encoding: .utf8) } catch {
            throw CLIError("cannot read the policy \(policy): \((error as NSError).localizedDescription).")
        }
        try checkTrustedFile(policy)
        do { return try ProvisioningPolicy(text: text, file: policy) } catch { throw CLIError(error.description) }
    }
}

/// When running as root, a policy file others could write is refused (as sshd and sudo do).
func checkTrustedFile(_ path: String) throws {
    if let reason = untrustedFileReason(path) {
        throw CLIError("refusing the policy \(path): \(reason), and virtio-admin runs as root.")
    }
}

/// One stderr log line per message: `virtio-admin[pid]: LEVEL: message k=v …` (journald keeps it whole).
struct LineLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    let label: String
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "virtio-admin[\(getpid())]: \(event.level): \(event.message)\(fields.isEmpty ? "" : " " + fields)\n"
        FileHandle.standardError.write(Data(text.utf8))
    }
}

enum LoggingBootstrap {
    nonisolated(unsafe) static var done = false
    static func once(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var handler = LineLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// What handling one event did.
struct EventOutcome {
    var summary: String
    var succeeded: Bool
}

/// Handles validated udev events: prepares PFs, provisions VFs, forgets removed functions.
struct EventHandler {
    let options: HelperOptions
    let policy: ProvisioningPolicy
    let logger: Logger

    var enumerator: SysfsEnumerator { SysfsEnumerator(root: options.sysfsRoot) }

    func handle(_ event: UdevEvent) async -> EventOutcome {
        let start = ContinuousClock.now
        switch event.action {
        case .remove:
            logger.info("forgot \(event.address) (removed)")
            return EventOutcome(summary: "forgot \(event.address)", succeeded: true)
        case .bind, .unbind, .change:
            logger.debug("ignored \(event.action.rawValue) of \(event.address)")
            return EventOutcome(summary: "ignored \(event.action.rawValue)", succeeded: true)
        case .add:
            break
        }
        let function: VirtioFunction
        do { function = try enumerator.function(at: event.address) } catch {
            if case .notVirtio = error { return EventOutcome(summary: "ignored: \(event.address) is not a virtio function", succeeded: true) }
            logger.error("\(error.description)")
            return EventOutcome(summary: error.description, succeeded: false)
        }
        switch function.role {
        case .pf:
            return preparePF(function)
        case .function:
            return EventOutcome(summary: "ignored: \(event.address) has no SR-IOV role", succeeded: true)
        case .vf:
            let outcome = await provisionVF(function)
            let elapsed = ContinuousClock.now - start
            let milliseconds = Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000
            if outcome.succeeded {
                logger.info("\(outcome.summary)", metadata: ["ms": "\(String(format: "%.1f", milliseconds))"])
            } else {
                logger.error("\(outcome.summary)", metadata: ["ms": "\(String(format: "%.1f", milliseconds))"])
            }
            return outcome
        }
    }

    func rule(for pf: VirtioFunction) -> PFRule? {
        policy.rule(address: pf.address, vendorID: pf.vendorID, deviceID: pf.deviceID, subsystemVendorID: pf.subsystemVendorID,
                    subsystemID: pf.subsystemID, type: pf.type)
    }

    /// A PF appeared: hold its future VFs' drivers back (sriov_drivers_autoprobe = 0), so
    /// each VF is provisioned before a driver binds; the helper probes the VF afterwards.
    func preparePF(_ pf: VirtioFunction) -> EventOutcome {
        guard let rule = rule(for: pf) else { return EventOutcome(summary: "no policy matches PF \(pf.address)", succeeded: true) }
        guard rule.holdVFDrivers else { return EventOutcome(summary: "PF \(pf.address): VF drivers not held (hold-vf-drivers = false)", succeeded: true) }
        let path = enumerator.directory(of: pf.address) + "/" + SysfsAttribute.sriovDriversAutoprobe
        do {
            try "0".write(toFile: path, atomically: false, encoding: .utf8)
            logger.info("prepared PF \(pf.address): sriov_drivers_autoprobe=0 (VFs wait for provisioning)")
            return EventOutcome(summary: "prepared PF \(pf.address)", succeeded: true)
        } catch {
            logger.error("PF \(pf.address): cannot write \(path): \(error.localizedDescription)")
            return EventOutcome(summary: "cannot hold VF drivers of \(pf.address)", succeeded: false)
        }
    }

    func provisionVF(_ vf: VirtioFunction) async -> EventOutcome {
        guard let pfAddress = vf.physfn else { return EventOutcome(summary: "\(vf.address): VF without physfn", succeeded: false) }
        let pf: VirtioFunction
        do { pf = try enumerator.function(at: pfAddress) } catch { return EventOutcome(summary: error.description, succeeded: false) }
        guard let index = pf.virtfns.first(where: { $0.value == vf.address })?.key else {
            return EventOutcome(summary: "\(vf.address): not among the virtfn links of PF \(pfAddress)", succeeded: false)
        }
        guard let rule = rule(for: pf), let desired = policy.desired(for: index, under: rule) else {
            probe(vf.address, hold: rule(for: pf)?.holdVFDrivers ?? false)
            return EventOutcome(summary: "no policy for PF \(pfAddress) VF \(index); nothing to do", succeeded: true)
        }
        do {
            let changes = try await withPFSession(pf: pf) { session in
                try await Provisioner(driver: session.driver, memberType: session.memberType).apply(vf: index, desired: desired)
            }
            probe(vf.address, hold: rule.holdVFDrivers)
            let text = changes.isEmpty ? "already as the policy says (no change)" : changes.map { change -> String in
                switch change.kind {
                case let .msixVectors(from, to): "MSI-X vectors \(from) -> \(to)"
                case let .features(from, to): "features \(from.hexMask) -> \(to.hexMask)"
                }
            }.joined(separator: "; ")
            return EventOutcome(summary: "provisioned \(vf.address) (PF \(pfAddress) VF \(index)): \(text)", succeeded: true)
        } catch {
            if desired.onFailure == .bindAnyway { probe(vf.address, hold: rule.holdVFDrivers) }
            let after = desired.onFailure == .keepUnbound ? " VF left without a driver (on-failure = keep-unbound)." : ""
            return EventOutcome(summary: "provisioning \(vf.address) (PF \(pfAddress) VF \(index)) failed: \(error)\(after)", succeeded: false)
        }
    }

    /// Lets the VF's driver bind now that it is provisioned (it was held back).
    func probe(_ address: PCIAddress, hold: Bool) {
        guard hold else { return }
        do { try address.description.write(toFile: options.sysfsRoot + "/bus/pci/drivers_probe", atomically: false, encoding: .utf8) } catch {
            logger.debug("drivers_probe for \(address): \(error.localizedDescription)")
        }
    }

    /// Runs `body` with the PF's admin queue, one process at a time per PF.
    func withPFSession<T>(pf: VirtioFunction, _ body: (AdminSession) async throws -> T) async throws -> T {
        var admin = try AdminOptions.parse([])
        admin.simulate = options.simulate
        admin.sysfsRoot = options.sysfsRoot
        admin.timeout = options.timeout
        if options.simulate != nil {
            return try await withAdminSession(pf: pf.address.description, options: admin, body)
        }
        // Opening a real PF's admin queue resets the PF: never while its VFs are in use.
        let busy = pf.virtfns.sorted { $0.key < $1.key }.compactMap { index, address -> String? in
            guard let driver = (try? enumerator.function(at: address))?.driver else { return nil }
            return "VF \(index) bound to \(driver)"
        }
        guard busy.isEmpty else {
            throw CLIError("PF \(pf.address) has VFs in use (\(busy.joined(separator: ", "))); opening its admin queue would reset the PF. Run 'virtio-admin serve', which keeps the queue open.")
        }
        try FileManager.default.createDirectory(atPath: options.lockDirectory, withIntermediateDirectories: true)
        return try await SimulatedDeviceStore.withLock(options.lockDirectory + "/\(pf.address).pf") {
            try await withAdminSession(pf: pf.address.description, options: admin, body)
        }
    }
}

struct UdevEventCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udev-event",
        abstract: "Handle one udev event for a PCI function (run by udev; reads ACTION, DEVPATH, SUBSYSTEM, PCI_SLOT_NAME, PCI_ID).",
        discussion: """
            On 'add' of a VF it provisions the VF through its PF's admin queue as the policy
            says, then lets the VF's driver bind (drivers_probe); on 'add' of a PF it sets
            sriov_drivers_autoprobe to 0 so VF drivers wait for provisioning; on 'remove' it
            forgets the function. Re-running converges: only what differs is changed.
            When 'virtio-admin serve' runs (its socket exists) the event is handed to it;
            otherwise the helper takes a per-PF lock and opens the admin queue itself.
            Every environment value is validated first; a bad one is refused and logged,
            and nothing is touched.
            """)
    @OptionGroup var options: HelperOptions

    func run() async throws {
        let logger = options.makeLogger("udev-event")
        let event: UdevEvent
        do { event = try UdevEvent(environment: ProcessInfo.processInfo.environment) } catch {
            logger.error("\(error.description)")
            throw ExitCode(2)
        }
        if let reply = sendToService(event) {
            if reply.hasPrefix("ok ") { logger.info("\(reply.dropFirst(3)) (via service)"); return }
            logger.error("\(reply.dropFirst(6)) (via service)")
            throw ExitCode(1)
        }
        let policy = try options.loadPolicy()
        let outcome = await EventHandler(options: options, policy: policy, logger: logger).handle(event)
        if !outcome.succeeded { throw ExitCode(1) }
        if !outcome.summary.hasPrefix("provisioned") { logger.info("\(event.action.rawValue) \(event.address): \(outcome.summary)") }
    }

    /// Hands the event to the running service; nil when none listens.
    func sendToService(_ event: UdevEvent) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard var address = unixSocketAddress(options.socket) else { return nil }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return nil }
        let line = event.wireLine + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        let text = readLine(fd, limit: 4096)
        return text.isEmpty ? "error the service closed the connection without answering" : text
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Own the PFs' admin queues and handle udev events from 'virtio-admin udev-event' (socket activation or --socket).",
        discussion: """
            Only one process can own a PF's admin queue, and udev runs events in parallel: the
            service takes one event at a time from its Unix socket, so N simultaneous VF events
            for one PF are applied one after another, and it keeps each real PF's queue open
            (opening resets the PF, which must not happen while its VFs are in use). Under
            systemd it takes the socket from virtio-admin.socket (LISTEN_FDS).
            """)
    @OptionGroup var options: HelperOptions
    @Option(name: .customLong("max-events"), help: "Exit after this many events (tests).") var maxEvents: Int?

    func run() async throws {
        let logger = options.makeLogger("serve")
        let policy = try options.loadPolicy()
        let listener = try listeningSocket(logger)
        defer { close(listener) }
        logger.info("serving on \(options.socket)")
        let handler = EventHandler(options: options, policy: policy, logger: logger)
        var handled = 0
        while maxEvents.map({ handled < $0 }) ?? true {
            let client = accept(listener, nil, nil)
            if client < 0 { if errno == EINTR { continue }; throw CLIError("accept on \(options.socket) failed: \(String(cString: strerror(errno))).") }
            let line = readLine(client, limit: 4096)
            let reply: String
            do {
                let event = try UdevEvent(environment: UdevEvent.environment(fromWire: line))
                let outcome = await handler.handle(event)
                reply = (outcome.succeeded ? "ok " : "error ") + outcome.summary
            } catch {
                logger.error("\(error)")
                reply = "error \(error)"
            }
            _ = (reply + "\n").withCString { write(client, $0, strlen($0)) }
            close(client)
            handled += 1
        }
    }

    func listeningSocket(_ logger: Logger) throws -> Int32 {
        // systemd socket activation: fd 3 when LISTEN_PID is us.
        let environment = ProcessInfo.processInfo.environment
        if environment["LISTEN_FDS"] == "1", environment["LISTEN_PID"] == String(getpid()) { return 3 }
        try FileManager.default.createDirectory(atPath: (options.socket as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        unlink(options.socket)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CLIError("socket() failed: \(String(cString: strerror(errno))).") }
        guard var address = unixSocketAddress(options.socket) else { throw CLIError("socket path \(options.socket) is too long.") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw CLIError("cannot listen on \(options.socket): \(String(cString: strerror(errno))).") }
        chmod(options.socket, 0o600)
        return fd
    }
}

/// A `sockaddr_un` for `path`, or nil when the path does not fit.
func unixSocketAddress(_ path: String) -> sockaddr_un? {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
        for (index, byte) in bytes.enumerated() { buffer[index] = byte }
    }
    return address
}

/// One newline-terminated line from a socket (at most about `limit` bytes), without the newline.
func readLine(_ fd: Int32, limit: Int) -> String {
    var bytes = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 1024)
    while bytes.count < limit {
        let got = read(fd, &buffer, buffer.count)
        if got <= 0 { break }
        bytes += buffer[0..<got]
        if bytes.last == 0x0a { break }
    }
    return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .newlines)
}
