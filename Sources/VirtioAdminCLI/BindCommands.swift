import ArgumentParser
import Foundation
import PCIConfig
import VirtioLinux
import VirtioSpec
import VirtioTransport
import Virtqueue
import VirtioAdminDriver
import VirtioSimulator
import VirtioSystem

extension UserSpaceDriver: ExpressibleByArgument {}

struct Bind: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bind a virtio function to vfio-pci or uio_pci_generic (driver_override + drivers_probe).",
        discussion: """
            Refuses a function a kernel driver is using — a virtio-blk disk with a mounted
            filesystem or swap, a network interface that is up, the vsock channel — unless
            --force, and refuses non-virtio functions. 'virtio-admin restore' gives it back.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS")) var address: String
    @Option(help: "User-space driver to bind to.") var driver: UserSpaceDriver = .vfioPCI
    @Flag(help: "Take the function even if a kernel driver is using it.") var force = false
    @Flag(name: .customLong("dry-run"), help: "Print the sysfs writes instead of doing them.") var dryRun = false

    func run() throws {
        let address = try parseAddress(address)
        let binder = DeviceBinder(sysfsRoot: global.sysfsRoot)
        do {
            let plan = try binder.bindPlan(address, to: driver, force: force)
            if dryRun {
                plan.forEach { print($0) }
                return
            }
            let before = (try? SysfsEnumerator(root: global.sysfsRoot).function(at: address))?.driver
            _ = try binder.apply(plan, address: address, expecting: driver.rawValue)
            print("\(address): bound to \(driver.rawValue)\(before.map { " (was \($0))" } ?? " (was unbound)").")
        } catch { throw CLIError(error.description) }
    }
}

struct Unbind: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unbind a virtio function from its driver (same in-use guard as bind).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS")) var address: String
    @Flag(help: "Unbind even if a kernel driver is using it.") var force = false
    @Flag(name: .customLong("dry-run"), help: "Print the sysfs writes instead of doing them.") var dryRun = false

    func run() throws {
        let address = try parseAddress(address)
        let binder = DeviceBinder(sysfsRoot: global.sysfsRoot)
        do {
            let plan = try binder.unbindPlan(address, force: force)
            if dryRun { plan.forEach { print($0) }; return }
            _ = try binder.apply(plan, address: address, expecting: nil)
            print("\(address): unbound.")
        } catch { throw CLIError(error.description) }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Give a function back to its own kernel driver (clear driver_override, reprobe).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS")) var address: String
    @Flag(name: .customLong("dry-run"), help: "Print the sysfs writes instead of doing them.") var dryRun = false

    func run() throws {
        let address = try parseAddress(address)
        let binder = DeviceBinder(sysfsRoot: global.sysfsRoot)
        do {
            let plan = try binder.restorePlan(address)
            if dryRun { plan.forEach { print($0) }; return }
            let driver = try binder.apply(plan, address: address, expecting: "*")
            print("\(address): restored to \(driver ?? "no driver").")
        } catch { throw CLIError(error.description) }
    }
}

struct Entropy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read random bytes from a virtio-rng function through VirtioAdmin's own transport and virtqueue.",
        discussion: """
            The function must be bound to vfio-pci or uio_pci_generic (see 'virtio-admin bind').
            It is reset, negotiated, given one virtqueue, asked for --bytes of entropy, and reset
            again. Prints the bytes in hex (JSON: {bytes, mode, features}).
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The virtio-rng function's PCI address.", valueName: "ADDRESS")) var address: String
    @Option(help: "Bytes to read.") var bytes: Int = 32
    @Flag(help: "Print JSON.") var json = false
    @Flag(name: .customLong("msix"), help: "Wait for the completion's MSI-X interrupt (VFIO eventfd) instead of polling.") var useMSIX = false

    func run() throws {
        let address = try parseAddress(address)
        guard (1...4096).contains(bytes) else { throw CLIError("--bytes must be 1 to 4096.") }
        if let simulate = global.simulate {
            throw CLIError("entropy reads a real virtio-rng function bound to vfio-pci or uio_pci_generic; the device model in \(simulate) simulates an SR-IOV PF and has none.")
        }
        let opened: OpenedFunction
        do { opened = try RealDeviceOpener(sysfsRoot: global.sysfsRoot).open(address) } catch { throw CLIError(error.description) }
        guard opened.config.virtioDeviceType == .entropy else { throw CLIError("\(address): not a virtio entropy device.") }
        // Memory the device may write is released only after its reset is confirmed; if it
        // is not, it is kept until the process exits (and the user is told).
        var transportForCleanup: ModernPCITransport?
        var keep: [AnyObject] = []
        var buffers: [DMARegion] = []
        func quiesce() -> String? {
            guard let transport = transportForCleanup else { return nil }
            do { try transport.reset() } catch {
                keep.forEach { _ = Unmanaged.passRetained($0) }  // never released: the device may still write
                buffers.removeAll()
                return "\(address): the device did not confirm its reset (\(error)); its DMA memory is kept until exit."
            }
            return nil
        }
        defer {
            if let warning = quiesce() { FileHandle.standardError.write(Data((warning + "\n").utf8)) }
            buffers.forEach { opened.allocator.release($0) }
        }
        do {
            let transport = try ModernPCITransport(config: opened.config, bars: opened.bars)
            transportForCleanup = transport
            // VFIO hands the device IOVAs: only a device that translates them (ACCESS_PLATFORM) may have them.
            let iova = opened.vfio != nil
            let features: FeatureSet
            let negotiated = Result { () throws(TransportError) -> FeatureSet in
                try transport.negotiate(required: iova ? [.version1, .accessPlatform] : [.version1], wanted: [.accessPlatform, .eventIndex])
            }
            if case .failure(let error) = negotiated, case let .missingFeatures(_, missing, _) = error, missing.contains(.accessPlatform) {
                throw CLIError("\(address): the device does not offer VIRTIO_F_ACCESS_PLATFORM, so it would take VFIO's IOVAs for physical addresses; refused.")
            }
            features = try negotiated.get()
            let queue = try SplitVirtqueue(size: 8, allocator: opened.allocator, eventIndex: features.contains(.eventIndex))
            keep.append(queue)
            var vector: UInt16?
            var eventFD: Int32?
            if useMSIX, let vfio = opened.vfio {
                eventFD = try vfio.enableMSIX(count: 1).first
                vector = 0
                queue.setInterrupts(enabled: true)
            }
            let notifier = try transport.setUpQueue(0, size: 8, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea,
                                                    deviceArea: queue.deviceArea, msixVector: vector)
            try transport.driverOK()
            let buffer = try opened.allocator.allocate(length: bytes, alignment: 64)
            buffers.append(buffer)
            try queue.add(readable: [], writable: [DMABuffer(address: buffer.deviceAddress, length: UInt32(bytes))])
            if queue.publish() { notifier.notify() }
            var received = 0
            let deadline = Date().addingTimeInterval(5)
            while received == 0 {
                if let eventFD {
                    var value: UInt64 = 0
                    guard Sys.poll(eventFD, timeoutMilliseconds: 5000), withUnsafeMutableBytes(of: &value, { Sys.read(eventFD, into: $0) }) == 8, value > 0 else {
                        throw CLIError("\(address): no MSI-X interrupt arrived within 5 s.")
                    }
                }
                try queue.takeCompletions { received = Int($0.length) }
                if received == 0 && Date() > deadline { throw CLIError("\(address): the device returned no entropy within 5 s.") }
            }
            let data = Array(buffer.bytes.prefix(received))
            if let warning = quiesce() { throw CLIError(warning) }
            transportForCleanup = nil
            if json {
                try printJSON(["bytes": hexBytes(data), "mode": opened.mode, "features": features.names().joined(separator: " "),
                               "interrupt": eventFD != nil ? "msix" : "polling"])
            } else {
                print(hexBytes(data))
                FileHandle.standardError.write(Data("\(address): \(received) bytes via \(opened.mode); \(eventFD != nil ? "MSI-X eventfd" : "polling").\n".utf8))
            }
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("\(error)")
        }
    }
}

struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a user-space-bound function's registers: device status, offered features, queues, admin queue fields.",
        discussion: """
            The function must be bound to vfio-pci or uio_pci_generic. JSON: {status, statusBits, features, \
            numQueues, adminQueueIndex, adminQueueNum, mode}. With --simulate PATH the simulated PF is opened \
            as the admin driver opens it (features negotiated, admin queue up) and probed then; JSON adds \
            negotiatedFeatures.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS")) var address: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let address = try parseAddress(address)
        if let simulate = global.simulate { return try await probeSimulated(address, path: simulate) }
        do {
            let opened = try RealDeviceOpener(sysfsRoot: global.sysfsRoot).open(address)
            let transport = try ModernPCITransport(config: opened.config, bars: opened.bars)
            let status = transport.status
            let features = transport.deviceFeatures()
            let admin = transport.adminQueues
            if json {
                try printJSON(JSONValue.object([
                    ("status", .int(Int(status.rawValue))), ("statusBits", .string(status.description)),
                    ("features", .array(features.names(for: opened.config.virtioDeviceType).map(JSONValue.string))),
                    ("numQueues", .int(transport.numQueues)),
                    ("adminQueueIndex", admin.map { .int($0.index) } ?? .null), ("adminQueueNum", admin.map { .int($0.count) } ?? .null),
                    ("mode", .string(opened.mode)),
                ]))
            } else {
                print("\(address): device_status \(status); features \(features.names(for: opened.config.virtioDeviceType).joined(separator: " ")); num_queues \(transport.numQueues); admin queues \(admin.map { "index \($0.index), count \($0.count)" } ?? "none (common config has no admin fields)")")
                print("access: \(opened.mode)")
            }
        } catch let error as CLIError { throw error } catch { throw CLIError("\(error)") }
    }
}

extension Probe {
    /// Opens the simulated PF as the admin driver does, then reports what a probe of a real
    /// PF reports, plus the features the driver negotiated.
    func probeSimulated(_ address: PCIAddress, path: String) async throws {
        try await SimulatedDeviceStore.withLock(path) {
            let device: SimulatedSRIOVDevice
            do { device = try SimulatedDeviceStore.load(path) } catch { throw CLIError("\(error)") }
            defer { device.stop() }
            guard device.pfAddress == address else { throw CLIError("\(path) simulates PF \(device.pfAddress); \(address) is not in it.") }
            do {
                let transport = try ModernPCITransport(config: device.pfConfigSpace(), bars: [0: device.pfBAR()])
                let driver = try await AdminQueueDriver.open(transport: transport, allocator: device.memory)
                let type = device.configuration.pfType
                let status = transport.status
                let offered = transport.deviceFeatures().names(for: type)
                let negotiated = transport.negotiatedFeatures.names(for: type)
                let admin = transport.adminQueues
                let mode = "simulated PF (\(path)), admin queue open"
                if json {
                    try printJSON(JSONValue.object([
                        ("status", .int(Int(status.rawValue))), ("statusBits", .string(status.description)),
                        ("features", .array(offered.map(JSONValue.string))), ("negotiatedFeatures", .array(negotiated.map(JSONValue.string))),
                        ("numQueues", .int(transport.numQueues)),
                        ("adminQueueIndex", admin.map { .int($0.index) } ?? .null), ("adminQueueNum", admin.map { .int($0.count) } ?? .null),
                        ("mode", .string(mode)),
                    ]))
                } else {
                    print("\(address): device_status \(status); negotiated \(negotiated.joined(separator: " ")); offered \(offered.joined(separator: " ")); num_queues \(transport.numQueues); admin queues \(admin.map { "index \($0.index), count \($0.count)" } ?? "none")")
                    print("access: \(mode)")
                }
                driver.close()
                try SimulatedDeviceStore.save(device, to: path)
            } catch let error as CLIError { throw error } catch { throw CLIError("\(error)") }
        }
    }
}
