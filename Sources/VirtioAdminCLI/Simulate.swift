import ArgumentParser
import PCIConfig
import VirtioSimulator
import VirtioProjectCommands
import VirtioSpec
import VirtioAdminDriver

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create simulated virtio SR-IOV devices (no hardware needed).",
        subcommands: [SimulateCreate.self, SimulateSysfs.self, SimulateNumVFs.self, SimulateShow.self])
}

struct SimulateSysfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sysfs",
        abstract: "Write a fake sysfs tree with a simulated virtio PF and its VFs.",
        discussion: """
            DIR plays the role of /sys: the tree has DIR/bus/pci/devices/<address> links,
            config, resource, sriov_* attributes and physfn/virtfnN links, so that
              virtio-admin --sysfs-root DIR list
              virtio-admin --sysfs-root DIR show 0000:3b:00.0
              lspci -A linux-sysfs -O sysfs.path=DIR/bus/pci -vvv
            all see the same device. A non-virtio host bridge at 0000:00:00.0 is included.
            """)

    @Argument(help: ArgumentHelp("Directory to write the tree into (created if missing).", valueName: "DIR"))
    var directory: String

    @Option(help: "Number of VFs enabled (sriov_numvfs).")
    var vfs: Int = 4

    @Option(name: .customLong("total-vfs"), help: "TotalVFs of the PF (default: the --vfs value, at least 1).")
    var totalVFs: Int?

    @Option(help: "Device type of PF and VFs (net, block, …).")
    var type: String = "net"

    @Option(help: "PCI address of the PF.")
    var pf: String = "0000:3b:00.0"

    @Option(help: ArgumentHelp("Write the tree of the simulated PF in this state file (its VFs' MSI-X counts as provisioned) instead.", valueName: "STATE"))
    var from: String?

    @Option(name: .customLong("bind-vfs"), help: ArgumentHelp("Show every VF bound to DRIVER (a host whose VFs are in use).", valueName: "DRIVER"))
    var bindVFs: String?

    func run() throws {
        if let from {
            let device: SimulatedSRIOVDevice
            do { device = try SimulatedDeviceStore.load(from) } catch { throw CLIError(error.description) }
            defer { device.stop() }
            var tree = device.sysfsTree()
            if let bindVFs { for index in 0..<tree.numVFs { tree.vfDrivers[index] = bindVFs } }
            do { try tree.write(to: directory) } catch { throw CLIError(error.description) }
            print("Wrote the sysfs tree of simulated PF \(device.pfAddress) (\(device.numVFs) VFs) under \(directory).")
            return
        }
        guard let deviceType = VirtioDeviceType(name: type) else {
            throw CLIError("'\(type)' is not a virtio device type; try net, block, console, entropy.")
        }
        let address = try parseAddress(pf)
        let total = totalVFs ?? max(vfs, 1)
        guard vfs >= 0, total >= 1, total <= Int(UInt16.max), vfs <= total else {
            throw CLIError("--vfs must be between 0 and TotalVFs (\(total)), and TotalVFs between 1 and 65535.")
        }
        var tree = SimulatedSysfsTree(totalVFs: total, numVFs: vfs)
        tree.pfAddress = address
        tree.pfType = deviceType
        tree.vfType = deviceType
        if let bindVFs { for index in 0..<vfs { tree.vfDrivers[index] = bindVFs } }
        do { try tree.write(to: directory) } catch { throw CLIError(error.description) }
        print("Wrote a simulated virtio \(deviceType.name) PF \(address) with \(vfs) of \(total) VFs under \(directory).")
        print("Try: virtio-admin --sysfs-root \(directory) list")
    }
}

struct SimulateNumVFs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "numvfs",
        abstract: "Change the simulated PF's NumVFs (as writing sysfs sriov_numvfs does).",
        discussion: "Waits while another process (a running 'serve --simulate PATH') owns the simulated PF.")
    @Argument(help: ArgumentHelp("State file.", valueName: "PATH")) var path: String
    @Argument(help: "New NumVFs (0 to TotalVFs).") var count: Int
    @Option(name: .long, help: ArgumentHelp("The same state file (as given to every command); must match PATH.", valueName: "PATH")) var simulate: String?

    func validate() throws {
        if let simulate, simulate != path { throw ValidationError("--simulate \(simulate) and PATH \(path) name different state files.") }
    }

    func run() async throws {
        try await SimulatedDeviceStore.withLock(path) {
            let device: SimulatedSRIOVDevice
            do { device = try SimulatedDeviceStore.load(path) } catch { throw CLIError("\(error)") }
            defer { device.stop() }
            guard (0...device.configuration.totalVFs).contains(count) else {
                throw CLIError("NumVFs must be 0 to TotalVFs (\(device.configuration.totalVFs)).")
            }
            do { try device.setNumVFs(count) } catch { throw CLIError("\(error)") }
            do { try SimulatedDeviceStore.save(device, to: path) } catch { throw CLIError("\(error)") }
            try rewriteSimulatedTree(device, state: path)
        }
        print("\(path): NumVFs is now \(count).")
    }
}

struct SimulateShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the simulated PF's counters and each VF's state.",
        discussion: """
            Counters (kept in the state file across processes): resets (writes of 0 to the
            PF's device_status), admin commands by opcode, notifies, admin commands and
            errors. Then each VF: MSI-X vectors, features, MAC, in use.
            JSON: {pf, numVFs, totalVFs, timing: {latencyNanoseconds, parallelism},
            counters: {resets, notifies, adminCommands, adminErrors, byOpcode: {"0x0": N, …}},
            vfs: [{vf, address, msixVectors, features, mac, inUse}]}.
            """)
    @Argument(help: ArgumentHelp("State file (or --simulate PATH).", valueName: "PATH")) var path: String?
    @Option(name: .long, help: ArgumentHelp("The state file, as every command takes it.", valueName: "PATH")) var simulate: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (path ?? simulate) != nil else { throw ValidationError("name the state file: 'simulate show PATH'.") }
        if let path, let simulate, path != simulate { throw ValidationError("--simulate \(simulate) and PATH \(path) name different state files.") }
    }

    func run() throws {
        let path = self.path ?? simulate!
        let device: SimulatedSRIOVDevice
        do { device = try SimulatedDeviceStore.load(path) } catch { throw CLIError(error.description) }
        defer { device.stop() }
        let counters = device.counters
        let configuration = device.configuration
        let timing = device.currentTiming
        let byOpcode = counters.adminCommandsByOpcode.sorted { $0.key < $1.key }
        func mac(_ bytes: [UInt8]) -> String { bytes.map { hex($0, width: 2).dropFirst(2) }.joined(separator: ":") }
        let members = device.members
        if json {
            try printJSON(JSONValue.object([
                ("pf", .string(device.pfAddress.description)), ("numVFs", .int(device.numVFs)), ("totalVFs", .int(configuration.totalVFs)),
                ("timing", .object([("latencyNanoseconds", .int(Int(timing.latency.nanoseconds))), ("parallelism", .int(timing.parallelism))])),
                ("counters", .object([
                    ("resets", .int(counters.resets)), ("notifies", .int(counters.notifies)), ("adminCommands", .int(counters.adminCommands)),
                    ("adminErrors", .int(counters.adminErrors)), ("byOpcode", .object(byOpcode.map { (hex($0.key, width: 1), JSONValue.int($0.value)) })),
                ])),
                ("vfs", .array(members.enumerated().map { index, member in
                    .object([("vf", .int(index)), ("address", .string(configuration.vfAddress(index).description)), ("msixVectors", .int(member.msixVectors)),
                             ("features", .string(member.features.hexMask)), ("mac", .string(mac(member.mac))), ("inUse", .bool(member.inUse))])
                })),
            ]))
            return
        }
        print("PF \(device.pfAddress): \(device.numVFs) of \(configuration.totalVFs) VFs; latency \(timing.latency.nanoseconds / 1000) µs, parallelism \(timing.parallelism)")
        print("counters: resets \(counters.resets), admin commands \(counters.adminCommands) (errors \(counters.adminErrors)), notifies \(counters.notifies)")
        let names = ProjectOpcodeTable.default.names
        print("by opcode: " + (byOpcode.isEmpty ? "none" : byOpcode.map { "\(names[AdminOpcode($0.key)] ?? AdminOpcode($0.key).specName) (\(hex($0.key, width: 1))) \($0.value)" }.joined(separator: ", ")))
        for (index, member) in members.enumerated() {
            print("  VF \(index) \(configuration.vfAddress(index)): \(member.msixVectors) MSI-X vectors, features \(member.features.hexMask), MAC \(mac(member.mac))\(member.inUse ? ", in use" : "")")
        }
    }
}
