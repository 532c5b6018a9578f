import ArgumentParser
import Foundation
import PCIConfig
import VirtioLinux
import VirtioSpec
import VirtioTransport
import Virtqueue

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
        do {
            let transport = try ModernPCITransport(config: opened.config, bars: opened.bars)
            let features = try transport.negotiate(required: [.version1], wanted: [.accessPlatform, .eventIndex])
            let queue = try SplitVirtqueue(size: 8, allocator: opened.allocator, eventIndex: features.contains(.eventIndex))
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
            defer { opened.allocator.release(buffer) }
            try queue.add(readable: [], writable: [DMABuffer(address: buffer.deviceAddress, length: UInt32(bytes))])
            if queue.publish() { notifier.notify() }
            var received = 0
            let deadline = Date().addingTimeInterval(5)
            while received == 0 {
                if let eventFD {
                    var value: UInt64 = 0
                    var poll = pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0)
                    guard Glibc.poll(&poll, 1, 5000) == 1, read(eventFD, &value, 8) == 8, value > 0 else {
                        throw CLIError("\(address): no MSI-X interrupt arrived within 5 s.")
                    }
                }
                try queue.takeCompletions { received = Int($0.length) }
                if received == 0 && Date() > deadline { throw CLIError("\(address): the device returned no entropy within 5 s.") }
            }
            let data = Array(buffer.bytes.prefix(received))
            try transport.reset()
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

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read a user-space-bound function's registers: device status, offered features, queues, admin queue fields.",
        discussion: "The function must be bound to vfio-pci or uio_pci_generic. JSON: {status, statusBits, features, numQueues, adminQueueIndex, adminQueueNum, mode}.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS")) var address: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let address = try parseAddress(address)
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
