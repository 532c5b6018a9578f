import VirtioAdmin
import VirtioProvisioning
import VirtioSystem

/// `virtio-admin udev-event` while the service runs: a thin client. Before ArgumentParser,
/// Foundation, the policy or the plugin registry are touched, it reads the event from the
/// environment, hands it to the service's socket and prints the answer as the full command
/// would (`virtio-admin[PID]: LEVEL: …` on stderr). When no service answers, or the arguments
/// are anything but the helper's own options, the full command runs instead.
enum UdevEventClient {
    /// Set once the client asked the service and none answered: the full command does not ask again.
    nonisolated(unsafe) static var serviceAsked = false

    struct Options {
        var socket = "/run/virtio-admin/serve.sock"
        var quiet = false
    }

    /// The helper's options (`HelperOptions`), or nil for anything else (help, an unknown
    /// option, a value that does not parse): the full parser then answers.
    static func parse(_ arguments: [String]) -> Options? {
        let withValue: Set<String> = ["--policy", "--simulate", "--sysfs-root", "--socket", "--lock-dir", "--timeout"]
        var options = Options()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--quiet" { options.quiet = true; continue }
            if argument == "--verbose" { continue }
            var name = argument
            var value: String?
            if let equals = argument.utf8.firstIndex(of: 0x3d) {
                name = String(argument[..<equals])
                value = String(argument[argument.utf8.index(after: equals)...])
            }
            guard withValue.contains(name) else { return nil }
            if value == nil {
                guard index < arguments.count else { return nil }
                value = arguments[index]
                index += 1
            }
            guard let value else { return nil }
            if name == "--timeout", Int(value) == nil { return nil }
            if name == "--socket" { options.socket = value }
        }
        return options
    }

    /// Handles the event through the service and exits, or returns for the full command.
    static func runIfServiceAnswers(_ arguments: [String]) {
        guard let options = parse(arguments) else { return }
        let event: UdevEvent
        do { event = try UdevEvent(environment: environment()) } catch {
            log("error", error.description)
            Sys.exitProcess(2)
        }
        serviceAsked = true
        guard let reply = ServiceSocket.send(event, to: options.socket) else { return }
        if reply.hasPrefix("ok ") {
            if !options.quiet { log("info", reply.dropFirst(3) + " (via service)") }
            Sys.exitProcess(0)
        }
        log("error", (reply.hasPrefix("error ") ? reply.dropFirst(6) : Substring(reply)) + " (via service)")
        Sys.exitProcess(1)
    }

    /// The event's variables from the process environment, without Foundation.
    static func environment() -> [String: String] {
        var result: [String: String] = [:]
        for name in ["ACTION", "SUBSYSTEM", "DEVPATH", "PCI_SLOT_NAME", "PCI_ID"] { result[name] = Sys.environment(name) }
        return result
    }

    /// One line as `LineLogHandler` writes it (no metadata on this path).
    static func log(_ level: String, _ message: some StringProtocol) {
        Sys.writeStandardError("virtio-admin[" + String(Sys.processID) + "]: " + level + ": " + message + "\n")
    }
}
