import ArgumentParser
import Foundation
import PCIConfig
import VirtioLinux
import VirtioProvisioning
import VirtioSimulator
import VirtioSpec

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
        subcommands: [Check.self, Plan.self])

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
            abstract: "Show what the policy would change on the present PFs' VFs (a dry run: only reads).",
            discussion: "JSON: an array of {pf, vf, change, from, to}.")
        @OptionGroup var options: HelperOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let policy = try options.loadPolicy()
            var pfs: [(address: PCIAddress, vendor: UInt16, device: UInt16, subsystemVendor: UInt16?, subsystem: UInt16?, type: VirtioDeviceType?, numVFs: Int)] = []
            if let state = options.simulate {
                let device: SimulatedSRIOVDevice
                do { device = try SimulatedDeviceStore.load(state) } catch { throw CLIError(error.description) }
                let config = device.pfConfigSpace()
                pfs.append((device.pfAddress, config.vendorID, config.deviceID, config.subsystemVendorID, config.subsystemID, config.virtioDeviceType, device.numVFs))
                device.stop()
            } else {
                do {
                    for function in try SysfsEnumerator(root: options.sysfsRoot).functions() where function.role == .pf {
                        pfs.append((function.address, function.vendorID, function.deviceID, function.subsystemVendorID, function.subsystemID, function.type, function.sriov?.numVFs ?? 0))
                    }
                } catch { throw CLIError(error.description) }
            }
            var rows: [JSONValue] = []
            var lines: [String] = []
            for pf in pfs {
                guard let rule = policy.rule(address: pf.address, vendorID: pf.vendor, deviceID: pf.device, subsystemVendorID: pf.subsystemVendor,
                                             subsystemID: pf.subsystem, type: pf.type) else {
                    lines.append("PF \(pf.address): no rule matches")
                    continue
                }
                var admin = try AdminOptions.parse([])
                admin.simulate = options.simulate
                admin.sysfsRoot = options.sysfsRoot
                let changes = try await withAdminSession(pf: pf.address.description, options: admin) { session in
                    var all: [ProvisioningChange] = []
                    let provisioner = Provisioner(driver: session.driver, memberType: session.memberType)
                    for vf in 0..<pf.numVFs {
                        guard let desired = policy.desired(for: vf, under: rule) else { continue }
                        do { all += try await provisioner.plan(vf: vf, desired: desired) } catch { throw CLIError("\(error)") }
                    }
                    return all
                }
                if changes.isEmpty { lines.append("PF \(pf.address) (\(rule.match)): \(pf.numVFs) VFs already as the policy says") }
                for change in changes {
                    lines.append("PF \(pf.address) \(change)")
                    switch change.kind {
                    case let .msixVectors(from, to):
                        rows.append(.object([("pf", .string(pf.address.description)), ("vf", .int(change.vf)), ("change", .string("msix-vectors")), ("from", .int(from)), ("to", .int(to))]))
                    case let .features(from, to):
                        rows.append(.object([("pf", .string(pf.address.description)), ("vf", .int(change.vf)), ("change", .string("features")), ("from", .string(from.hexMask)), ("to", .string(to.hexMask))]))
                    }
                }
            }
            if json { try printJSON(JSONValue.array(rows)) } else { print(lines.isEmpty ? "No virtio PF present." : lines.joined(separator: "\n")) }
        }
    }
}

struct Monitor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print hotplug events of virtio PCI functions as they happen (libudev monitor).",
        discussion: "With --json, one JSON object a line: {action, address, devpath, vendorID, deviceID, driver, vf}.")
    @Flag(help: "Print JSON lines.") var json = false
    @Option(help: "Stop after this many seconds (default: run until interrupted).") var timeout: Int?
    @Option(help: "Stop after this many events.") var count: Int?
    @Option(help: "Event source: udev (after udev's rules ran) or kernel.") var source: String = "udev"

    func run() throws {
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
