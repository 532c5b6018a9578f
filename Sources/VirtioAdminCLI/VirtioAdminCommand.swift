import VirtioAdmin
import VirtioSimulator
import ArgumentParser

@main
struct VirtioAdminCommand: AsyncParsableCommand {
    /// Options that belong to every subcommand and may also be written before its name
    /// (`virtio-admin --sysfs-root DIR list`). ArgumentParser only reads a subcommand's
    /// options after its name, so these are moved there before parsing.
    static let globalOptionsWithValue: Set<String> = ["--sysfs-root", "--simulate", "--plugin-dir", "--plugin", "--timeout"]
    static let globalFlags: Set<String> = ["--trace", "--json"]
    static let staticSubcommands: Set<String> = ["list", "show", "simulate", "commands", "plugins", "passthru", "run", "help", "bind", "unbind", "restore", "entropy", "probe", "policy", "udev-event", "serve", "monitor", "conformance"]

    static func main() async {
        var arguments = hoistGlobalOptions(Array(CommandLine.arguments.dropFirst()))
        // The udev helper's fast path: the service answers before anything else is loaded.
        if arguments.first == "udev-event" { UdevEventClient.runIfServiceAnswers(Array(arguments.dropFirst())) }
        // `virtio-admin PLUGIN OPERATION PF …` for a plugin without a built-in subcommand.
        if let first = arguments.first, !first.hasPrefix("-"), !staticSubcommands.contains(first) {
            arguments.insert("run", at: 0)
        }
        if !["serve", "monitor"].contains(arguments.first ?? "") { InterruptCleanup.install() }
        await main(arguments)
    }

    static func hoistGlobalOptions(_ arguments: [String]) -> [String] {
        var hoisted: [String] = []
        var rest: [String] = []
        var index = 0
        var seenSubcommand = false
        while index < arguments.count {
            let argument = arguments[index]
            let name = String(argument.split(separator: "=", maxSplits: 1).first ?? "")
            if argument == "--" {
                rest.append(contentsOf: arguments[index...])
                break
            }
            if !seenSubcommand, globalOptionsWithValue.contains(name) {
                hoisted.append(argument)
                if !argument.contains("="), index + 1 < arguments.count {
                    hoisted.append(arguments[index + 1])
                    index += 1
                }
            } else if !seenSubcommand, globalFlags.contains(argument) {
                hoisted.append(argument)
            } else {
                if !argument.hasPrefix("-") { seenSubcommand = true }
                rest.append(argument)
            }
            index += 1
        }
        if let terminator = rest.firstIndex(of: "--") {
            rest.insert(contentsOf: hoisted, at: terminator)
            return rest
        }
        return rest + hoisted
    }

    static let configuration = CommandConfiguration(
        commandName: "virtio-admin",
        abstract: "Inspect virtio PCI functions and manage SR-IOV VFs through the virtio admin facility.",
        discussion: """
            Functions are named by PCI address (DDDD:BB:DD.F, or BB:DD.F for domain 0), as
            lspci -D and /sys/bus/pci/devices spell them.

            Examples:
              virtio-admin list                       every virtio function on this host
              virtio-admin list --json                the same, as JSON
              virtio-admin show 0000:00:03.0          capabilities, BARs, MSI-X, SR-IOV
              virtio-admin simulate sysfs /tmp/sim --vfs 4
              virtio-admin --sysfs-root /tmp/sim list a simulated SR-IOV PF, no hardware

            Admin commands (through the PF's admin virtqueue):
              virtio-admin simulate create /tmp/pf.state --vfs 8
              virtio-admin --simulate /tmp/pf.state commands 0000:3b:00.0
              virtio-admin --simulate /tmp/pf.state msix set 0000:3b:00.0 --vf 0 --vectors 4
              virtio-admin --simulate /tmp/pf.state features get 0000:3b:00.0 --vf 0 --json
              virtio-admin --simulate /tmp/pf.state --trace passthru 0000:3b:00.0 --opcode 0x40 --vf 0
            """,
        subcommands: [List.self, Show.self, Commands.self, Plugins.self, Passthru.self, RunPlugin.self, Simulate.self, Bind.self, Unbind.self, Restore.self, Entropy.self, Probe.self, PolicyCommand.self, UdevEventCommand.self, Serve.self, Monitor.self, Conformance.self]
    )
}

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("sysfs-root"), help: ArgumentHelp(
        "Mount point of sysfs to read devices from.",
        discussion: "Devices are read under DIR/bus/pci/devices. Point it at a tree written by 'virtio-admin simulate sysfs' to work without hardware.",
        valueName: "DIR"))
    var sysfsRootOption: String?

    @Option(name: .long, help: ArgumentHelp(
        "Show the simulated PF in PATH (see 'virtio-admin simulate create') and its VFs as a host would.",
        discussion: "Reads the simulated PF's sysfs view, PATH.sys (written from the model when missing), unless --sysfs-root names another.",
        valueName: "PATH"))
    var simulate: String?

    /// The sysfs view: --sysfs-root, else the simulated PF's tree, else /sys.
    var sysfsRoot: String { resolveSysfsRoot(sysfsRootOption, simulate: simulate) }

    func validate() throws {
        guard let simulate else { return }
        do { try SimulatedPFOpener.ensureSysfsTree(forState: simulate, at: sysfsRoot) } catch { throw CLIError(error.description) }
    }
}
