import ArgumentParser
import Foundation
import PCIConfig
import VirtioLinux
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec
import VirtioAdmin

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check a provisioning policy, or show what it would change on the present devices.",
        discussion: """
            A policy (TOML, default /etc/virtio-admin/policy.toml) matches PFs and gives their VFs
            MSI-X vectors and feature bits:

              [defaults]
              on-failure = "bind-anyway"      # or "keep-unbound"
              hold-vf-drivers = true           # sriov_drivers_autoprobe = 0 until provisioned

              [[pf]]
              match = { address = "0000:3b:00.0" }   # or vendor, device, subsystem-vendor, subsystem-device, type
                [[pf.vf]]
                vfs = "0-3"
                msix-vectors = 4
                features = ["VERSION_1", "MAC", "MQ"]
                [[pf.vf]]
                vfs = "4-7"
                msix-vectors = 2
                features-mask = "0x100000020"
            """,
        subcommands: [Check.self, Plan.self, Apply.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a policy file; errors give line:column.")
        @Argument(help: ArgumentHelp("The policy file.", valueName: "FILE")) var file: String
        @Flag(help: "Print JSON ({valid, pfRules, error: {line, column, message}}).") var json = false

        func run() throws {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw CLIError("cannot read \(file): \((error as NSError).localizedDescription).")
            }
            let parsed = Result { () throws(PolicyError) -> ProvisioningPolicy in try ProvisioningPolicy(text: text, file: file) }
            switch parsed {
            case .success(let policy):
                if json {
                    try printJSON(JSONValue.object([("valid", .bool(true)), ("pfRules", .int(policy.pfs.count))]))
                } else {
                    print("\(file): valid; \(policy.pfs.count) PF rule\(policy.pfs.count == 1 ? "" : "s"): " + policy.pfs.map { "\($0.match) (\($0.vfRules.count) VF rule\($0.vfRules.count == 1 ? "" : "s"))" }.joined(separator: "; "))
                }
            case .failure(let error):
                if json {
                    try printJSON(JSONValue.object([("valid", .bool(false)), ("error", .object([
                        ("line", .int(error.position.line)), ("column", .int(error.position.column)), ("message", .string(error.message)),
                    ]))]))
                    throw ExitCode(1)
                }
                throw CLIError(error.description)
            }
        }
    }

    struct Plan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what the policy would change on the present PFs' VFs (a dry run: no VF is changed).",
            discussion: """
                Each PF is opened as every admin command opens it (which resets the PF, so a PF
                whose VFs have drivers is refused unless --force, and a PF the running service
                owns is waited for); its VFs are only read. JSON: an array of {pf, vf, change, from, to}.
                """)
        @OptionGroup var options: HelperOptions
        @Argument(help: ArgumentHelp("PFs to look at (default: every PF the policy matches).", valueName: "PF")) var pfs: [String] = []
        @Flag(help: "Open a PF even when its VFs have drivers (opening resets the PF).") var force = false
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let reports = try await runPolicy(options: options, pfs: pfs, planOnly: true, maxInFlight: nil, force: force, progress: nil)
            var rows: [JSONValue] = []
            var lines: [String] = []
            for report in reports {
                guard let rule = report.rule else { lines.append("PF \(report.pf): no rule matches"); continue }
                if let error = report.error { lines.append("PF \(report.pf): \(error)"); continue }
                let changes = report.outcomes.flatMap(\.changes)
                if changes.isEmpty { lines.append("PF \(report.pf) (\(rule)): \(report.vfAddresses.count) VFs already as the policy says") }
                for change in changes {
                    lines.append("PF \(report.pf) \(change)")
                    rows.append(changeJSON(change, pf: report.pf))
                }
                for outcome in report.outcomes where !outcome.succeeded {
                    lines.append("PF \(report.pf) VF \(outcome.vf): cannot read: \(outcome.error!)")
                }
            }
            if json { try printJSON(JSONValue.array(rows)) } else { print(lines.isEmpty ? "No virtio PF present." : lines.joined(separator: "\n")) }
            if reports.contains(where: { $0.error != nil || $0.failed > 0 }) { throw ExitCode(1) }
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision every present VF as the policy says, in one pipelined run per PF.",
            discussion: """
                Each PF the policy matches (or each PF named) is opened once; every VF is read
                first and only what differs is written, with as many VFs' commands in flight on
                the PF's admin queue together as it holds. Running it again changes nothing.
                Progress goes to stderr when it is a terminal (not with --quiet); then one line per PF: VFs
                changed, unchanged and failed, commands sent, peak commands in flight, wall
                time, and one line per VF that failed with what it holds now.
                JSON: {pfs: [{pf, rule, changed, unchanged, failed, commands, peakInFlight,
                milliseconds, error}], vfs: [{pf, vf, address, status (changed, unchanged or
                failed), changes: [{change, from, to}], error, holding}]}.
                Exit status: 0 all applied, 1 some VF or PF failed, 2 bad input (policy,
                arguments). Typical use: Examples/systemd/virtio-admin-apply.service at boot.
                """)
        @OptionGroup var options: HelperOptions
        @Argument(help: ArgumentHelp("PFs to provision (default: every PF the policy matches).", valueName: "PF")) var pfs: [String] = []
        @Option(name: .customLong("max-in-flight"), help: ArgumentHelp("VFs worked on at once (default: as many as the PF's admin queue holds commands, each VF having one in flight at a time; 1 sends one command after another).", valueName: "N"))
        var maxInFlight: Int?
        @Flag(help: "Open a PF even when its VFs have drivers (opening resets the PF).") var force = false
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if let maxInFlight, maxInFlight < 1 { throw ValidationError("--max-in-flight must be at least 1.") }
        }

        func run() async throws {
            let showProgress = !options.quiet && isatty(2) == 1
            var progress: (@Sendable (PCIAddress, Int, Int) -> Void)?
            if showProgress { progress = printProgress }
            let reports = try await runPolicy(options: options, pfs: pfs, planOnly: false, maxInFlight: maxInFlight, force: force, progress: progress)
            if json {
                var pfRows: [JSONValue] = []
                var vfRows: [JSONValue] = []
                for report in reports {
                    pfRows.append(.object([
                        ("pf", .string(report.pf.description)), ("rule", report.rule.map(JSONValue.string) ?? .null),
                        ("changed", .int(report.changed)), ("unchanged", .int(report.unchanged)), ("failed", .int(report.failed)),
                        ("commands", .int(report.commands)), ("peakInFlight", .int(report.peakInFlight)),
                        ("milliseconds", .double(report.elapsed.seconds * 1000)), ("error", report.error.map(JSONValue.string) ?? .null),
                    ]))
                    for outcome in report.outcomes {
                        let status = !outcome.succeeded ? "failed" : (outcome.changes.isEmpty ? "unchanged" : "changed")
                        let holding: JSONValue = outcome.holding.map {
                            .object([("msixVectors", $0.msixVectors.map(JSONValue.int) ?? .null), ("features", $0.features.map { .string($0.hexMask) } ?? .null)])
                        } ?? .null
                        vfRows.append(.object([
                            ("pf", .string(report.pf.description)), ("vf", .int(outcome.vf)),
                            ("address", report.vfAddresses[outcome.vf].map { .string($0.description) } ?? .null), ("status", .string(status)),
                            ("changes", .array(outcome.changes.map { changeJSON($0, pf: nil) })),
                            ("error", outcome.error.map { .string($0.description) } ?? .null), ("holding", holding),
                        ]))
                    }
                }
                try printJSON(JSONValue.object([("pfs", .array(pfRows)), ("vfs", .array(vfRows))]))
            } else {
                if reports.isEmpty { print("No virtio PF present.") }
                for report in reports {
                    guard let rule = report.rule else { print("PF \(report.pf): no rule matches"); continue }
                    if let error = report.error, report.outcomes.isEmpty { print("PF \(report.pf) (\(rule)): \(error)"); continue }
                    print("PF \(report.pf) (\(rule)): \(report.outcomes.count) VFs: \(report.changed) changed, \(report.unchanged) unchanged, \(report.failed) failed; "
                          + "\(report.commands) admin commands, peak \(report.peakInFlight) in flight, \(String(format: "%.1f", report.elapsed.seconds * 1000)) ms")
                    for outcome in report.outcomes where !outcome.succeeded {
                        print("  VF \(outcome.vf) (\(report.vfAddresses[outcome.vf].map(\.description) ?? "?")) failed: \(outcome.error!)\(outcome.partialDescription)")
                    }
                    if let error = report.error { print("  \(error)") }
                }
            }
            if reports.contains(where: { $0.error != nil || $0.failed > 0 }) { throw ExitCode(1) }
        }
    }
}

/// Runs the policy over the PFs in the sysfs view (the same engine for `plan` and `apply`).
/// Bad input — the policy, a PF argument, a PF not in the view, an unreadable state file —
/// is one sentence on stderr and exit status 2.
func runPolicy(options: HelperOptions, pfs names: [String], planOnly: Bool, maxInFlight: Int?, force: Bool,
               progress: (@Sendable (PCIAddress, Int, Int) -> Void)?) async throws -> [PFApplyReport] {
    let prepared: (PolicyApplication, [VirtioFunction])
    do {
        prepared = try preparePolicyRun(options: options, pfs: names, planOnly: planOnly, maxInFlight: maxInFlight, force: force)
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("Error: \(error.description)\n".utf8))
        throw ExitCode(2)
    }
    return await prepared.0.run(prepared.1, progress: progress)
}

func preparePolicyRun(options: HelperOptions, pfs names: [String], planOnly: Bool, maxInFlight: Int?, force: Bool) throws -> (PolicyApplication, [VirtioFunction]) {
    let policy = try options.loadPolicy()
    var addresses: [PCIAddress] = []
    for name in names { addresses.append(try parseAddress(name)) }
    var groupOptions = AdminGroup.Options()
    groupOptions.timeout = .milliseconds(options.timeout)
    groupOptions.refuseWhenVFsInUse = !force
    let settings = options.settings
    let (simulate, root) = (settings.simulate, settings.resolvedSysfsRoot)
    if let simulate {
        // The simulated PF's sysfs view exists before PFs are looked for in it.
        do { try SimulatedPFOpener.ensureSysfsTree(forState: simulate, at: root) } catch { throw CLIError(error.description) }
    }
    let application = PolicyApplication(policy: policy, sysfsRoot: root, opener: { pf in settings.opener(for: pf) }, groupOptions: groupOptions, maxInFlight: maxInFlight, planOnly: planOnly)
    do { return (application, try application.pfs(named: addresses)) } catch { throw CLIError(error.description) }
}

/// `PF 0000:3b:00.0: 512/1024 VFs` on one terminal line, rewritten in place.
@Sendable func printProgress(_ pf: PCIAddress, _ done: Int, _ all: Int) {
    guard done == all || done % 16 == 0 else { return }
    FileHandle.standardError.write(Data("\rPF \(pf): \(done)/\(all) VFs\(done == all ? "\n" : "")".utf8))
}

func changeJSON(_ change: ProvisioningChange, pf: PCIAddress?) -> JSONValue {
    var fields: [(String, JSONValue)] = pf.map { [("pf", .string($0.description)), ("vf", .int(change.vf))] } ?? []
    switch change.kind {
    case let .msixVectors(from, to): fields += [("change", .string("msix-vectors")), ("from", .int(from)), ("to", .int(to))]
    case let .features(from, to): fields += [("change", .string("features")), ("from", .string(from.hexMask)), ("to", .string(to.hexMask))]
    }
    return .object(fields)
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

struct Monitor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print hotplug events of virtio PCI functions as they happen (libudev monitor).",
        discussion: "With --json, one JSON object a line: {action, address, devpath, vendorID, deviceID, driver, vf}.")
    @Flag(help: "Print JSON lines.") var json = false
    @Option(help: "Stop after this many seconds (default: run until interrupted).") var timeout: Int?
    @Option(help: "Stop after this many events.") var count: Int?
    @Option(help: "Event source: udev (after udev's rules ran) or kernel.") var source: String = "udev"
    @Option(name: .long, help: ArgumentHelp("Refused: the device model raises no hotplug events (try 'serve --simulate PATH' with 'udev-event' clients).", valueName: "PATH"))
    var simulate: String?

    func run() throws {
        if let simulate {
            throw CLIError("monitor watches the host's udev; the device model in \(simulate) raises no hotplug events (run 'serve --simulate \(simulate)' and hand it events with 'udev-event --socket').")
        }
        let monitor: UdevMonitor
        do { monitor = try UdevMonitor(source: source) } catch { throw CLIError(error.description) }
        let deadline = timeout.map { Date().addingTimeInterval(TimeInterval($0)) }
        var seen = 0
        while count.map({ seen < $0 }) ?? true {
            let remaining = deadline.map { Int32(max(0, $0.timeIntervalSinceNow * 1000)) } ?? -1
            if let deadline, deadline.timeIntervalSinceNow <= 0 { break }
            guard let event = monitor.next(timeoutMilliseconds: remaining) else { continue }
            seen += 1
            if json {
                let object = JSONValue.object([
                    ("action", .string(event.action)), ("address", .string(event.address.description)), ("devpath", .string(event.devpath)),
                    ("vendorID", event.vendorID.map { .int(Int($0)) } ?? .null), ("deviceID", event.deviceID.map { .int(Int($0)) } ?? .null),
                    ("driver", event.driver.map(JSONValue.string) ?? .null), ("vf", .bool(event.isVF)),
                ])
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(object) + Data("\n".utf8))
            } else {
                FileHandle.standardOutput.write(Data("\(event.action) \(event.address) \(event.isVF ? "vf" : "function") \(event.driver ?? "-") \(event.devpath)\n".utf8))
            }
        }
    }
}
