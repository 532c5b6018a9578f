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
import VirtioSystem
import VirtioAdmin

/// Options of the udev helper and the service.
struct HelperOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The provisioning policy.", valueName: "FILE")) var policy: String = ProvisioningPolicy.standardPath
    @Option(name: .long, help: ArgumentHelp("Act on the simulated PF in PATH instead of hardware.", valueName: "PATH")) var simulate: String?
    @Option(name: .customLong("sysfs-root"), help: ArgumentHelp("Mount point of sysfs (default /sys; with --simulate PATH, PATH.sys).", valueName: "DIR")) var sysfsRoot: String?
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

    /// What the library's service setup is told (the decisions are made there).
    var settings: ServiceSettings {
        var settings = ServiceSettings()
        settings.policyPath = policy
        settings.simulate = simulate
        settings.sysfsRoot = sysfsRoot
        settings.socketPath = socket
        settings.lockDirectory = lockDirectory
        settings.commandTimeout = .milliseconds(timeout)
        return settings
    }

    var resolvedSysfsRoot: String { settings.resolvedSysfsRoot }

    func loadPolicy() throws -> ProvisioningPolicy {
        do { return try settings.loadPolicy() } catch { throw CLIError(error.description) }
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
        let text = "virtio-admin[\(Sys.processID)]: \(event.level): \(event.message)\(fields.isEmpty ? "" : " " + fields)\n"
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
        var settings = options.settings
        settings.askService = !UdevEventClient.serviceAsked  // the thin client already asked, and none answered
        let outcome: HelperOutcome
        do { outcome = try await settings.handleUdevEvent(event, logger: logger) } catch { throw CLIError(error.description) }
        if !outcome.succeeded { throw ExitCode(1) }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Own the PFs' admin queues and provision VFs as they appear (socket activation or --socket, and udev itself).",
        discussion: """
            Only one process can own a PF's admin queue, and opening it resets the PF. The
            service opens each PF once, at the first event that needs it, and keeps its admin
            queue open until it exits: it never resets a PF while it runs, except to recover
            from DEVICE_NEEDS_RESET. Events come from 'virtio-admin udev-event' clients on its
            Unix socket (each answered with its own VF's outcome) and, on a host, from udev
            itself (libudev monitor), so 1024 VFs created at once need no helper processes.
            They are handled concurrently; VF events for one PF that arrive while a batch
            runs are coalesced into the next batch, whose commands are all in flight on the
            PF's admin queue at once. A simulated PF's state is saved after each batch.
            SIGTERM or SIGINT: finish what is in flight, save, exit 0. Under systemd it takes
            its socket from virtio-admin.socket (LISTEN_FDS).
            """)
    @OptionGroup var options: HelperOptions
    @Option(name: .customLong("max-events"), help: "Exit after this many events (tests).") var maxEvents: Int?
    @Flag(name: .customLong("no-udev-monitor"), help: "Take events only from the socket (the monitor runs only on a host's /sys, never with --simulate).")
    var noUdevMonitor = false
    @Option(name: .customLong("ready-file"), help: ArgumentHelp("Exists while the udev monitor listens; the udev rule then runs no helper for VF events.", valueName: "PATH"))
    var readyFile: String = "/run/virtio-admin/monitor.ready"

    func run() async throws {
        let logger = options.makeLogger("serve")
        let policy = try options.loadPolicy()
        let settings = options.settings
        let (listener, socketPath): (Int32, String?)
        do { (listener, socketPath) = try settings.listeningSocket(environment: ProcessInfo.processInfo.environment, processID: Sys.processID) } catch {
            throw CLIError(error.description)
        }
        var monitor: UdevMonitor?
        if settings.listensToUdev(disabled: noUdevMonitor) {
            do { monitor = try UdevMonitor() } catch { logger.warning("no udev monitor (\(error.description)); events come from the socket only") }
        }
        let stop = StopFlag()
        signal(SIGPIPE, SIG_IGN)  // a client that went away is an error on its socket, not the service's end
        let signals = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                logger.info("signal \(number): finishing what is in flight")
                stop.stop()
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        logger.info("serving on \(options.socket)\(monitor == nil ? "" : " and the udev monitor")")
        let service = settings.makeService(policy: policy, logger: logger, keepOpen: true)
        await service.serve(listener: listener, socketPath: socketPath, monitor: monitor, readyFile: readyFile, maxEvents: maxEvents, stop: stop)
        logger.info("stopped; every PF's admin queue closed")
    }
}
