import Testing
import FeatureBitsResourceManager
import MSIXResourceManager
import VirtioAdminDriver
import VirtioAdminTestKit
import VirtioSimulator
import VirtioSpec
import VirtioTransport
import ResourceManager

/// Every device-model fault × every operation: a typed outcome within a bounded time, no
/// hang, no crash, no lost or duplicated completion, the device left reset or consistent.
/// The outcome table is printed with the test output (and copied into RELIABILITY.md).
struct FaultMatrixTests {
    static let operations = ["negotiation", "queue setup", "msix get", "msix set", "msix pool", "features get", "features set", "features caps", "concurrent load"]
    static let faults: [SimulatedFault?] = [nil] + SimulatedFault.allCases.map { $0 }

    /// The outcome a cell must have; nil = success.
    static func expected(_ fault: SimulatedFault?, _ operation: String) -> String? {
        guard let fault else { return nil }
        switch (fault, operation) {
        case (.refuseFeaturesOK, "negotiation"), (.refuseFeaturesOK, "queue setup"): return "featuresRefused"
        case (.noAdminQueue, "negotiation"): return "noAdminQueue"
        case (.queueSizeZero, "negotiation"), (.queueSizeZero, "queue setup"): return "queueUnavailable"
        case (.surpriseRemoval, _): return "deviceRemoved"
        case (_, "queue setup"): return nil  // admin-queue faults do not touch a regular queue
        case (.refuseFeaturesOK, _), (.noAdminQueue, _), (.queueSizeZero, _): return nil  // only bring-up reads these
        case (.neverComplete, "negotiation"): return "timeout"
        case (.neverComplete, _): return "timeout"
        case (.outOfRangeID, _), (.duplicateID, _), (.usedLengthTooLarge, _): return "deviceMisbehaved"
        case (.needsResetMidFlight, _): return "deviceNeedsReset"
        // Both act at close. slowReset: the reset is not confirmed within the driver's bound,
        // so the rings and slots are quarantined (a hand-driven regular queue just waits the
        // reset out). lateWrite: the reset is read back (the device writes first) before
        // anything is released.
        case (.slowReset, "queue setup"): return nil
        case (.slowReset, _): return "ok+quarantined"
        case (.lateWrite, _): return nil
        case (.transientEAGAIN, _): return nil  // retried: EAGAIN has no side effects
        }
    }

    /// The name of an outcome: "ok" or the error case (nested transport errors by their own case).
    static func name(_ error: any Error) -> String {
        if case AdminError.transport(let inner) = error { return name(inner) }
        if let transport = error as? TransportError {
            if case .surpriseRemoval = transport { return "deviceRemoved" }
            return Mirror(reflecting: transport).children.first?.label ?? "\(transport)"
        }
        return Mirror(reflecting: error).children.first?.label ?? "\(error)"
    }

    /// The device model with a slow reset 30× the driver's reset bound (the model's reset runs
    /// on real time: a driver thread descheduled for longer than the reset takes would see it
    /// confirmed) and short enough for the hand-driven regular queue, which waits it out.
    static var configuration: SimulatedDeviceConfiguration {
        var configuration = SimulatedDeviceConfiguration()
        configuration.slowResetDuration = .milliseconds(300)
        return configuration
    }

    /// After the driver let go: lets a slow or late reset take effect (the device writes
    /// what it still holds), then counts accesses the strict IOMMU refused on released memory.
    static func releasedAccesses(_ device: SimulatedSRIOVDevice, _ fault: SimulatedFault?) async -> Int {
        if fault == .slowReset { device.finishPendingReset() }
        device.settle()
        return device.memory.releasedMemoryAccesses
    }

    /// One cell: its outcome, and how much time passed on the driver's (test) clock.
    func run(_ fault: SimulatedFault?, _ operation: String) async -> (outcome: String, consistent: Bool, completions: Bool, released: Int, driverTime: Duration) {
        let clock = ManualServiceClock()
        var options = AdminQueueDriver.Options()
        options.defaultTimeout = .milliseconds(150)  // on the test clock: the ticker moves it
        options.resetTimeout = .milliseconds(10)  // a spin on device_status in real time
        options.clock = clock
        // One step is one timeout: a command the device swallows fails on the poller's next wake-up.
        let start = clock.nowNanoseconds
        let result = await withTicking(clock, step: options.defaultTimeout) { await run(fault, operation, options: options) }
        return (result.outcome, result.consistent, result.completions, result.released, .nanoseconds(clock.nowNanoseconds - start))
    }

    func run(_ fault: SimulatedFault?, _ operation: String, options: AdminQueueDriver.Options) async -> (outcome: String, consistent: Bool, completions: Bool, released: Int) {
        if operation == "negotiation" || operation == "queue setup" {
            let device = SimulatedSRIOVDevice(configuration: Self.configuration)
            defer { device.stop() }
            if let fault { device.setFault(fault) }
            do {
                let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
                if operation == "negotiation" {
                    let driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
                    if case .memoryQuarantined? = driver.close() {
                        return ("ok+quarantined", true, true, await Self.releasedAccesses(device, fault))
                    }
                } else {
                    // (a regular queue, driven by hand: its ring memory stays allocated)
                    try transport.negotiate(required: [])
                    let rings = try device.memory.allocate(length: 8192, alignment: 4096)
                    _ = try transport.setUpQueue(0, size: 16, descriptorArea: rings.deviceAddress, driverArea: rings.deviceAddress + 256,
                                                 deviceArea: rings.deviceAddress + 1024)
                    try transport.reset()
                }
                let consistent = device.pfStatus == [] || fault == .surpriseRemoval || fault == .slowReset
                return ("ok", consistent, true, await Self.releasedAccesses(device, fault))
            } catch {
                let status = device.pfStatus
                return (Self.name(error), status == [] || status.contains(.failed) || fault == .surpriseRemoval, true,
                        await Self.releasedAccesses(device, fault))
            }
        }
        // The driver on the device model, as an AdminGroup opens it (without the sysfs view).
        let device = SimulatedSRIOVDevice(configuration: Self.configuration)
        defer { device.stop() }
        let driver: AdminQueueDriver
        do {
            let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
            driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory, options: options)
        } catch {
            return ("setup failed: \(error)", false, false, 0)
        }
        if let fault { device.setFault(fault) }
        let msix = MSIXResourceManager()
        let features = FeatureBitsResourceManager()
        var outcome = "ok"
        var completionsOK = true
        do {
            switch operation {
            case "msix get": _ = try await msix.vectors(of: 1, driver: driver)
            case "msix set": try await msix.setVectors(3, of: 1, driver: driver)
            case "msix pool": _ = try await msix.pool(driver: driver)
            case "features get": _ = try await features.features(of: 1, driver: driver)
            case "features set": try await features.setFeatures([.version1, FeatureSet(bit: 5)], of: 1, driver: driver)
            case "features caps": _ = try await features.capabilities(of: 1, driver: driver)
            default:
                let results = await withTaskGroup(of: String.self) { tasks in
                    for vf in 0..<64 {
                        tasks.addTask {
                            do throws(AdminError) { _ = try await msix.vectors(of: vf % 8, driver: driver); return "ok" } catch { return Self.name(error) }
                        }
                    }
                    return await tasks.reduce(into: [String]()) { $0.append($1) }
                }
                completionsOK = results.count == 64
                let stats = driver.statistics
                completionsOK = completionsOK && stats.completed <= stats.submitted
                outcome = results.first { $0 != "ok" } ?? "ok"
            }
        } catch {
            outcome = Self.name(error)
        }
        let status = device.pfStatus
        let consistent = fault == .surpriseRemoval || status == [] || (status.contains(.driverOK) && !status.contains(.deviceNeedsReset))
        if case .memoryQuarantined? = driver.close(), outcome == "ok" { outcome = "ok+quarantined" }
        return (outcome, consistent, completionsOK, await Self.releasedAccesses(device, fault))
    }

    @Test(.timeLimit(.minutes(3))) func everyFaultTimesEveryOperation() async throws {
        var table: [[String]] = []
        for fault in Self.faults {
            var row = [fault?.rawValue ?? "(none)"]
            for operation in Self.operations {
                let result = await run(fault, operation)
                // Bounded on the driver's clock, not the machine's: at most a few timeouts of
                // 150 ms each pass before every cell ends (a hang never ends: the time limit).
                #expect(result.driverTime <= .seconds(3), "\(fault?.rawValue ?? "none") × \(operation) took \(result.driverTime) of the driver's time")
                let wanted = Self.expected(fault, operation) ?? "ok"
                #expect(result.outcome == wanted, "\(fault?.rawValue ?? "none") × \(operation): \(result.outcome), expected \(wanted)")
                #expect(result.consistent, "\(fault?.rawValue ?? "none") × \(operation): device neither reset nor consistent")
                #expect(result.completions, "\(fault?.rawValue ?? "none") × \(operation): lost or duplicated completion")
                #expect(result.released == 0, "\(fault?.rawValue ?? "none") × \(operation): the device reached released memory \(result.released) times")
                row.append(result.outcome)
            }
            table.append(row)
        }
        let header = ["fault \\ operation"] + Self.operations
        var lines = ["| " + header.joined(separator: " | ") + " |", "|" + String(repeating: " --- |", count: header.count)]
        lines += table.map { "| " + $0.joined(separator: " | ") + " |" }
        print("Fault-injection matrix (\(Self.faults.count - 1) faults × \(Self.operations.count) operations):\n" + lines.joined(separator: "\n"))
    }
}
