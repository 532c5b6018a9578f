import Logging
import PCIConfig
import VirtioLinux
import VirtioProvisioning
import VirtioSystem

/// Why the policy file could not be used. Each case reads as one sentence naming the file.
package enum PolicyFileError: Error, Sendable, CustomStringConvertible {
    case missing(path: String)
    case unreadable(SystemCallError)
    /// Running as root, a policy others could write is refused (as sshd and sudo do).
    case untrusted(path: String, reason: String)
    case invalid(PolicyError)

    package var description: String {
        switch self {
        case let .missing(path):
            "cannot read the policy \(path): it does not exist (give one with --policy FILE; 'virtio-admin policy --help' shows the format)."
        case let .unreadable(error): "cannot read the policy \(error.path): \(error.errno)."
        case let .untrusted(path, reason): "refusing the policy \(path): \(reason), and virtio-admin runs as root."
        case let .invalid(error): error.description
        }
    }
}

/// What the udev helper (`udev-event`), the service (`serve`) and `policy apply` are told on
/// their command lines, and what follows from it: the sysfs view, each PF's opener, the
/// policy, the provisioning engine, the listening socket and whether udev is listened to.
/// The command line only fills this in and prints what comes back.
package struct ServiceSettings: Sendable {
    package var policyPath = ProvisioningPolicy.standardPath
    /// The simulated PF's state file, instead of hardware.
    package var simulate: String?
    /// `--sysfs-root`; `nil`: the simulated PF's tree (`PATH.sys`) or `/sys`.
    package var sysfsRoot: String?
    package var socketPath = "/run/virtio-admin/serve.sock"
    /// Where a real PF's ownership lock lives when no service runs.
    package var lockDirectory = "/run/virtio-admin"
    /// Per-command timeout.
    package var commandTimeout: Duration = .seconds(5)
    /// How long `udev-event` waits for the service's answer before doing the work itself
    /// (udev gives an event 180 s).
    package var answerTimeout: Duration = .seconds(120)
    /// The clock of every wait (a test's manual clock moves it on).
    package var clock: any ServiceClock = SystemServiceClock()
    /// Whether `udev-event` asks the service first (false: the caller already asked it, and
    /// none answered).
    package var askService = true

    package init() {}

    /// `--sysfs-root`, else the simulated PF's tree (`PATH.sys`), else `/sys`.
    package var resolvedSysfsRoot: String { resolveSysfsRoot(sysfsRoot, simulate: simulate) }

    /// How a PF is reached: the device model in ``simulate``, or the Linux host.
    package func opener(for pf: PCIAddress) -> any PFOpener {
        makePFOpener(pf, simulate: simulate, sysfsRoot: resolvedSysfsRoot, lockDirectory: lockDirectory)
    }

    /// Reads and parses the policy; as root, a file others could write is refused.
    package func loadPolicy() throws(PolicyFileError) -> ProvisioningPolicy {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(policyPath) } catch {
            if error.isNotFound { throw .missing(path: policyPath) }
            throw .unreadable(error)
        }
        if let reason = untrustedFileReason(policyPath) { throw .untrusted(path: policyPath, reason: reason) }
        do { return try ProvisioningPolicy(text: String(decoding: bytes, as: UTF8.self), file: policyPath) } catch { throw .invalid(error) }
    }

    /// The provisioning engine: the service's (`keepOpen`: each PF opened once and kept) or
    /// the one-shot helper's.
    package func makeService(policy: ProvisioningPolicy, logger: Logger, keepOpen: Bool) -> ProvisioningService {
        var options = ProvisioningService.Options()
        options.sysfsRoot = resolvedSysfsRoot
        options.keepOpen = keepOpen
        options.groupOptions.timeout = commandTimeout
        options.clock = clock
        let settings = self
        return ProvisioningService(policy: policy, options: options, logger: logger) { pf in settings.opener(for: pf) }
    }

    /// The service's listening socket, and its path when this process made it (and so
    /// unlinks it): systemd's fd 3 when `LISTEN_FDS` is 1 and `LISTEN_PID` is `processID`
    /// (socket activation; systemd keeps the path), else a new socket at ``socketPath``.
    package func listeningSocket(environment: [String: String], processID: Int32) throws(VirtioAdminError) -> (fd: Int32, path: String?) {
        if environment["LISTEN_FDS"] == "1", environment["LISTEN_PID"] == String(processID) { return (3, nil) }
        return (try ServiceSocket.listen(at: socketPath), socketPath)
    }

    /// The service listens to udev itself only on a host's `/sys` (never a simulated PF's
    /// tree), unless told not to.
    package func listensToUdev(disabled: Bool) -> Bool { !disabled && simulate == nil && resolvedSysfsRoot == "/sys" }

    /// `udev-event`: hands `event` to the service when one answers on ``socketPath``;
    /// otherwise (none listens, or no answer within ``answerTimeout``) loads the policy and
    /// handles the event itself, taking the PF's lock. Logs the outcome once.
    package func handleUdevEvent(_ event: UdevEvent, logger: Logger) async throws(PolicyFileError) -> HelperOutcome {
        if askService, let reply = ServiceSocket.send(event, to: socketPath, timeout: answerTimeout) {
            if reply.hasPrefix("ok ") {
                logger.info("\(reply.dropFirst(3)) (via service)")
                return HelperOutcome(succeeded: true, viaService: true, summary: String(reply.dropFirst(3)))
            }
            let text = reply.hasPrefix("error ") ? String(reply.dropFirst(6)) : reply
            logger.error("\(text) (via service)")
            return HelperOutcome(succeeded: false, viaService: true, summary: text)
        }
        let policy = try loadPolicy()
        let service = makeService(policy: policy, logger: logger, keepOpen: false)
        let outcome = await service.handle(event)
        await service.shutDown()
        if outcome.succeeded, !outcome.summary.hasPrefix("provisioned") {
            logger.info("\(event.action.rawValue) \(event.address): \(outcome.summary)")
        }
        return HelperOutcome(succeeded: outcome.succeeded, viaService: false, summary: outcome.summary)
    }
}

/// What `udev-event` did with one event.
package struct HelperOutcome: Sendable {
    package var succeeded: Bool
    /// The service answered (else the helper did the work itself).
    package var viaService: Bool
    package var summary: String
}

/// `--sysfs-root`, else the simulated PF's tree (`PATH.sys`), else `/sys`.
package func resolveSysfsRoot(_ root: String?, simulate: String?) -> String {
    root ?? simulate.map(SimulatedPFOpener.defaultSysfsRoot(forState:)) ?? "/sys"
}

/// The opener of a PF: the device model when a state file is named, else the Linux host.
package func makePFOpener(_ pf: PCIAddress, simulate: String?, sysfsRoot: String, lockDirectory: String) -> any PFOpener {
    if let simulate { return SimulatedPFOpener(address: pf, statePath: simulate, sysfsRoot: sysfsRoot) }
    return LinuxPFOpener(address: pf, sysfsRoot: sysfsRoot, lockDirectory: lockDirectory)
}
