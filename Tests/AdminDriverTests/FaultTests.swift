import Testing
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import MSIXResourceManager

/// Each injected fault ends in a typed error within a bounded time, and the device is left
/// reset (or consistent); the driver can be reinitialised afterwards.
struct FaultTests {
    static let faultMatrix: [(SimulatedFault, String)] = [
        (.outOfRangeID, "deviceMisbehaved"), (.duplicateID, "deviceMisbehaved"), (.usedLengthTooLarge, "deviceMisbehaved"),
        (.needsResetMidFlight, "deviceNeedsReset"), (.surpriseRemoval, "deviceRemoved"), (.neverComplete, "timeout"),
    ]

    @Test(arguments: faultMatrix)
    func faultDuringCommands(fault: SimulatedFault, expected: String) async throws {
        let clock = ManualServiceClock()
        var options = AdminQueueDriver.Options()
        options.clock = clock
        let group = try await SimulatedAdminGroup(plugins: [MSIXResourceManager()], options: options)
        defer { group.shutDown() }
        let msix = MSIXResourceManager()
        group.device.setFault(fault)
        let start = clock.nowNanoseconds
        var errors: [AdminError] = []
        await withTicking(clock, step: .milliseconds(50)) { await withTaskGroup(of: AdminError?.self) { tasks in
            for vf in 0..<8 {
                tasks.addTask {
                    do throws(AdminError) {
                        _ = try await msix.vectors(of: vf, driver: group.driver, timeout: .milliseconds(300))
                        return nil
                    } catch { return error }
                }
            }
            for await error in tasks { if let error { errors.append(error) } }
        } }
        // Bounded time on the driver's clock: a timeout at its deadline (to the ticker's
        // 50 ms step), anything else before it.
        #expect(clock.nowNanoseconds - start <= 350_000_000, "bounded time: \(clock.nowNanoseconds - start) ns")
        if expected == "timeout" { #expect(clock.nowNanoseconds - start >= 300_000_000) }
        #expect(!errors.isEmpty)
        for error in errors {
            let name = Mirror(reflecting: error).children.first?.label ?? "\(error)"
            #expect(name == expected, "\(fault): got \(error)")
        }
        if expected != "timeout" {
            #expect(group.device.pfStatus == [] || fault == .surpriseRemoval, "\(fault): device left reset")
            group.device.setFault(fault, false)
            try await group.driver.reinitialize()
            #expect(try await msix.vectors(of: 0, driver: group.driver) == 2, "\(fault): the driver recovers after reinitialise")
        }
    }

    @Test func malformedCommandBytesNeverCrashTheDevice() async throws {
        let group = try await SimulatedAdminGroup(plugins: [])
        defer { group.shutDown() }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let opcode = AdminOpcode(UInt16.random(in: 0...0x60, using: &generator))
            let data = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            guard opcode != .listUse else { continue }
            let response = try? await group.driver.submit(AdminCommand(opcode: opcode, member: GroupMemberID(rawValue: UInt64.random(in: 0...12, using: &generator)),
                                                                       data: data, resultLength: 32))
            if let response, response.status != .ok {
                // Statuses of the spec's table: resource objects and device parts answer ENXIO
                // (no such object), EEXIST, ENOSPC and ENOMEM too.
                #expect([AdminStatus.einval, .ebusy, .enxio, .eexist, .enospc, .enomem].contains(response.status))
            }
        }
        #expect(group.device.pfStatus.contains(.driverOK))
        #expect(!group.device.pfStatus.contains(.deviceNeedsReset))
    }
}
