import Testing
import VirtioAdminDriver
import VirtioConformance
import VirtioSimulator
import VirtioTransport

/// The strict device model passes every conformance check it can be given; each
/// deliberately non-conforming variant fails exactly the checks aimed at its defect.
struct ConformanceTests {
    static func run(_ configure: (inout SimulatedDeviceConfiguration) -> Void = { _ in }, fault: SimulatedFault? = nil) async throws -> ConformanceReport {
        var configuration = SimulatedDeviceConfiguration()
        configure(&configuration)
        let device = SimulatedSRIOVDevice(configuration: configuration)
        defer { device.stop() }
        if let fault { device.setFault(fault) }
        let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
        let macs = device.members.map(\.mac)
        let report = await ConformanceSuite(transport: transport, allocator: device.memory, numVFs: device.numVFs).run()
        #expect(device.memory.releasedMemoryAccesses == 0)
        #expect(device.members.map(\.mac) == macs, "the in-order check restores VF 0's MAC")
        #expect(device.pfStatus == [] || fault == .slowReset, "left reset")
        return report
    }

    static func failed(_ report: ConformanceReport) -> Set<String> { Set(report.results.filter { $0.outcome == .fail }.map(\.check.id)) }

    @Test func strictModelPassesEveryCheck() async throws {
        let withVFs = try await Self.run()
        #expect(Self.failed(withVFs).isEmpty, "\(withVFs.results.filter { $0.outcome != .pass })")
        #expect(Set(withVFs.results.filter { $0.outcome == .skip }.map(\.check.id)) == ["vf-enable"], "only the VF Enable rule needs NumVFs 0")
        let withoutVFs = try await Self.run { $0.numVFs = 0 }
        #expect(Self.failed(withoutVFs).isEmpty)
        #expect(withoutVFs.outcome(of: "vf-enable") == .pass)
        #expect(ConformanceSuite.checks.count == 13 && withVFs.results.count == 13)
    }

    @Test(arguments: [
        ("no LIST_QUERY bits 0/1", ["list-query-lists-itself"]),
        ("opcode checked before group", ["group-checked-first"]),
        ("LIST_USE not enforced", ["list-use-enforced", "reset-clears-list-use"]),
        ("reset keeps the LIST_USE list", ["reset-clears-list-use"]),
        ("out-of-order processing", ["in-order"]),
        ("short result failed", ["truncation"]),
        ("SR-IOV list commands without VFs (Linux-compatible)", ["vf-enable"]),
        ("slow reset", ["reset"]),
        ("admin queue counted in num_queues", ["admin-queue-fields"]),
    ])
    func variantFailsExactlyItsChecks(variant: String, expected: [String]) async throws {
        let report: ConformanceReport
        switch variant {
        case "no LIST_QUERY bits 0/1": report = try await Self.run { $0.strictness.listsListCommands = false }
        case "opcode checked before group": report = try await Self.run { $0.strictness.groupCheckedFirst = false }
        case "LIST_USE not enforced": report = try await Self.run { $0.strictness.enforceListUse = false }
        case "reset keeps the LIST_USE list": report = try await Self.run { $0.strictness.resetClearsListUse = false }
        case "out-of-order processing": report = try await Self.run { $0.strictness.inOrderProcessing = false }
        case "short result failed": report = try await Self.run { $0.strictness.truncateShortResults = false }
        case "SR-IOV list commands without VFs (Linux-compatible)":
            report = try await Self.run { $0.numVFs = 0; $0.strictness.listCommandsWithoutVFs = true }
        case "admin queue counted in num_queues": report = try await Self.run { $0.strictness.numQueuesExcludesAdminQueues = false }
        default: report = try await Self.run(fault: .slowReset)
        }
        #expect(Self.failed(report) == Set(expected), "\(variant): \(report.results.filter { $0.outcome == .fail }.map { "\($0.check.id): \($0.detail)" })")
    }
}
