import ArgumentParser
import Foundation
import PCIConfig
import VirtioAdminDriver
import VirtioConformance
import VirtioLinux
import VirtioSimulator
import VirtioSpec
import VirtioTransport

/// `virtio-admin conformance PF`: the admin-facility conformance checks (VirtioConformance).
struct Conformance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a PF's admin facility against the virtio 1.4 device-side rules (PASS/FAIL/SKIP per check).",
        discussion: """
            Checks (each with the spec lines it comes from; 'virtio-admin conformance --list' prints them):
            \(ConformanceSuite.checks.map { "  \($0.id): \($0.rule) [\($0.spec)]" }.joined(separator: "\n"))

            The PF is reset several times; if it lists the project's MAC_GET/MAC_SET, VF 0's MAC
            is changed and restored. A real PF must be bound to vfio-pci (or uio_pci_generic);
            --simulate PATH checks a simulated PF (its state file is not changed).
            Exit status 1 when a check fails or the admin queue cannot be opened.
            JSON: {device, passed, failed, skipped, checks: [{id, outcome, rule, spec, detail}]}.
            """)

    @Argument(help: ArgumentHelp("The PF's PCI address.", valueName: "PF")) var pf: String?
    @Flag(help: "List the checks and exit.") var list = false
    @OptionGroup var options: AdminOptions

    struct Row: Encodable { let id: String; let outcome: String; let rule: String; let spec: String; let detail: String }
    struct Output: Encodable { let device: String; let passed: Int; let failed: Int; let skipped: Int; let checks: [Row] }

    func run() async throws {
        if list {
            for check in ConformanceSuite.checks { print("\(check.id)\t\(check.rule) [\(check.spec)]") }
            return
        }
        guard let pf else { throw CLIError("conformance needs the PF's PCI address (or --list).") }
        let address = try parseAddress(pf)
        let report: ConformanceReport
        var driverOptions = AdminQueueDriver.Options()
        driverOptions.defaultTimeout = .milliseconds(options.timeout)
        let trace: (@Sendable (AdminTraceEvent) -> Void)? = options.trace ? printTrace : nil
        if let path = options.simulate {
            report = try await SimulatedDeviceStore.withLock(path) { () async throws -> ConformanceReport in
                let device: SimulatedSRIOVDevice
                do { device = try SimulatedDeviceStore.load(path) } catch { throw CLIError("\(error)") }
                defer { device.stop() }
                guard device.pfAddress == address else { throw CLIError("\(path) simulates PF \(device.pfAddress); \(address) is not in it.") }
                let transport: ModernPCITransport
                do { transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()]) } catch { throw CLIError("\(error)") }
                return await ConformanceSuite(transport: transport, allocator: device.memory, numVFs: device.numVFs,
                                              driverOptions: driverOptions, trace: trace).run()
            }
        } else {
            let opened: OpenedFunction
            let numVFs: Int
            do {
                numVFs = try SysfsEnumerator(root: options.sysfsRoot).function(at: address).sriov?.numVFs ?? 0
                opened = try RealDeviceOpener(sysfsRoot: options.sysfsRoot).open(address)
            } catch {
                throw CLIError("\(error) (Without such hardware, use --simulate PATH; see 'virtio-admin simulate create --help'.)")
            }
            // VFIO hands the device IOVAs: it must translate them (ACCESS_PLATFORM).
            driverOptions.requireAccessPlatform = opened.vfio != nil
            let transport: ModernPCITransport
            do { transport = try ModernPCITransport(config: opened.config, bars: opened.bars) } catch { throw CLIError(error.description) }
            report = await ConformanceSuite(transport: transport, allocator: opened.allocator, numVFs: numVFs,
                                            driverOptions: driverOptions, trace: trace).run()
        }
        if options.json {
            try printJSON(Output(device: "\(report.device)", passed: report.passed, failed: report.failed, skipped: report.skipped,
                                 checks: report.results.map { Row(id: $0.check.id, outcome: $0.outcome.rawValue, rule: $0.check.rule, spec: $0.check.spec, detail: $0.detail) }))
        } else {
            print("\(report.device): admin facility conformance (virtio 1.4, \(ConformanceSuite.checks.count) checks)")
            for result in report.results {
                print("\(result.outcome.rawValue)  \(result.check.id): \(result.check.rule) [\(result.check.spec)]")
                print("      \(result.detail)")
            }
            print("\(report.passed) passed, \(report.failed) failed, \(report.skipped) skipped")
        }
        if let error = report.openError { throw CLIError(error.description) }
        if report.failed > 0 { throw ExitCode(1) }
    }
}
