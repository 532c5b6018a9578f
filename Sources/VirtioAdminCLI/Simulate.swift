import ArgumentParser
import PCIConfig
import VirtioSimulator
import VirtioSpec

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create simulated virtio SR-IOV devices (no hardware needed).",
        subcommands: [SimulateCreate.self, SimulateSysfs.self, SimulateNumVFs.self])
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

    func run() throws {
        if let from {
            let device: SimulatedSRIOVDevice
            do { device = try SimulatedDeviceStore.load(from) } catch { throw CLIError(error.description) }
            defer { device.stop() }
            do { try device.sysfsTree().write(to: directory) } catch { throw CLIError(error.description) }
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
        do { try tree.write(to: directory) } catch { throw CLIError(error.description) }
        print("Wrote a simulated virtio \(deviceType.name) PF \(address) with \(vfs) of \(total) VFs under \(directory).")
        print("Try: virtio-admin --sysfs-root \(directory) list")
    }
}

struct SimulateNumVFs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "numvfs",
        abstract: "Change the simulated PF's NumVFs (as writing sysfs sriov_numvfs does).")
    @Argument(help: ArgumentHelp("State file.", valueName: "PATH")) var path: String
    @Argument(help: "New NumVFs (0 to TotalVFs).") var count: Int

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
        }
        print("\(path): NumVFs is now \(count).")
    }
}
