import ArgumentParser

@main
struct VirtioAdminCommand: ParsableCommand {
    /// Options that belong to every subcommand and may also be written before its name
    /// (`virtio-admin --sysfs-root DIR list`). ArgumentParser only reads a subcommand's
    /// options after its name, so these are moved there before parsing.
    static let globalOptionsWithValue: Set<String> = ["--sysfs-root"]
    static let globalFlags: Set<String> = []

    static func main() {
        main(hoistGlobalOptions(Array(CommandLine.arguments.dropFirst())))
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
            """,
        subcommands: [List.self, Show.self, Simulate.self]
    )
}

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Mount point of sysfs to read devices from.",
        discussion: "Devices are read under DIR/bus/pci/devices. Point it at a tree written by 'virtio-admin simulate sysfs' to work without hardware.",
        valueName: "DIR"))
    var sysfsRoot: String = "/sys"
}
