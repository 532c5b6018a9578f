import ArgumentParser
import Foundation
import PCIConfig
import VirtioAdmin
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
            --simulate PATH checks a simulated PF.
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
        var driverOptions = AdminQueueDriver.Options()
        driverOptions.defaultTimeout = .milliseconds(options.timeout)
        let trace: (@Sendable (AdminTraceEvent) -> Void)? = options.trace ? printTrace : nil
        // The same opener as every admin command: the device model or the Linux host.
        let opener = options.opener(address)
        let access: PFAccess
        let numVFs: Int
        do {
            try await opener.lock(wait: .seconds(10), clock: SystemServiceClock())
            try opener.prepare()
            numVFs = try SysfsEnumerator(root: opener.sysfsRoot).function(at: address).sriov?.numVFs ?? 0
            access = try opener.open()
        } catch {
            opener.release()
            let hint = options.simulate == nil ? " (Without such hardware, use --simulate PATH; see 'virtio-admin simulate create --help'.)" : ""
            throw CLIError("\(error)" + hint)
        }
        defer { opener.release() }
        // VFIO hands the device IOVAs: it must translate them (ACCESS_PLATFORM).
        driverOptions.requireAccessPlatform = access.iovaDMA
        let transport: ModernPCITransport
        do { transport = try ModernPCITransport(config: access.config, bars: access.bars) } catch { throw CLIError(error.description) }
        let report = await ConformanceSuite(transport: transport, allocator: access.allocator, numVFs: numVFs,
                                            driverOptions: driverOptions, trace: trace).run()
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
