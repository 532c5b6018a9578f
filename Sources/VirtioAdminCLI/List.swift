import ArgumentParser
import PCIConfig
import VirtioLinux
import VirtioSpec

enum EnumerationBackend: String, ExpressibleByArgument, CaseIterable {
    case auto, sysfs, udev
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List virtio PCI functions: type, SR-IOV role, PF/VF links, driver.",
        discussion: """
            Roles: 'pf' is a function with SR-IOV (it owns VFs), 'vf' a virtual function
            (it has a physfn link), 'function' anything else.
            With --json, prints an array of objects with the keys address, vendorID,
            deviceID, type, role, driver, physfn, virtfns, sriov, vfMSIXCount, iommuGroup,
            numaNode.
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "How to enumerate: udev (libudev, host /sys only), sysfs (walk --sysfs-root), or auto (udev for /sys, else sysfs).")
    var backend: EnumerationBackend = .auto

    func run() throws {
        let functions = try enumerate()
        if json {
            try printJSON(functions.map(FunctionJSON.init))
            return
        }
        if functions.isEmpty {
            print("No virtio PCI functions under \(SysfsEnumerator(root: global.sysfsRoot).devicesDirectory).")
            return
        }
        let rows = functions.map { function -> [String] in
            let links: String
            switch function.role {
            case .vf: links = "PF " + (function.physfn?.description ?? "?")
            case .pf: links = "VFs \(function.sriov?.numVFs ?? 0)/\(function.sriov?.totalVFs ?? 0)"
            case .function: links = "-"
            }
            return [function.address.description,
                    "\(hex(function.vendorID, width: 4).dropFirst(2)):\(hex(function.deviceID, width: 4).dropFirst(2))",
                    function.type?.name ?? "?", function.role.rawValue, function.driver ?? "-", links]
        }
        print(renderTable(header: ["ADDRESS", "ID", "TYPE", "ROLE", "DRIVER", "SR-IOV"], rows: rows))
    }

    func enumerate() throws -> [VirtioFunction] {
        let useUdev: Bool
        switch backend {
        case .udev:
            guard global.sysfsRoot == "/sys" else {
                throw CLIError("--backend udev reads the host's /sys only; use --backend sysfs with --sysfs-root \(global.sysfsRoot).")
            }
            useUdev = true
        case .sysfs: useUdev = false
        case .auto: useUdev = global.sysfsRoot == "/sys"
        }
        do {
            if useUdev {
                do { return try UdevEnumerator().functions() } catch where backend == .auto {
                    return try SysfsEnumerator(root: global.sysfsRoot).functions()
                }
            }
            return try SysfsEnumerator(root: global.sysfsRoot).functions()
        } catch {
            throw CLIError(error.description)
        }
    }
}

/// JSON shape of one `list` entry (keys are part of the CLI's contract).
struct FunctionJSON: Encodable {
    let function: VirtioFunction
    init(_ function: VirtioFunction) { self.function = function }

    enum Keys: String, CodingKey {
        case address, vendorID, deviceID, subsystemVendorID, subsystemID, classCode, type, role, driver,
             driverOverride, physfn, virtfns, sriov, vfMSIXCount, iommuGroup, numaNode, transitional
    }
    enum SRIOVKeys: String, CodingKey { case totalVFs, numVFs, vfTotalMSIX, driversAutoprobe }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(function.address.description, forKey: .address)
        try container.encode(function.vendorID, forKey: .vendorID)
        try container.encode(function.deviceID, forKey: .deviceID)
        try container.encode(function.subsystemVendorID, forKey: .subsystemVendorID)
        try container.encode(function.subsystemID, forKey: .subsystemID)
        try container.encode(hex(function.classCode, width: 6), forKey: .classCode)
        try container.encode(function.type?.name, forKey: .type)
        try container.encode(function.role.rawValue, forKey: .role)
        try container.encode(function.driver, forKey: .driver)
        try container.encode(function.driverOverride, forKey: .driverOverride)
        try container.encode(function.physfn?.description, forKey: .physfn)
        try container.encode(function.virtfns.sorted { $0.key < $1.key }.map(\.value.description), forKey: .virtfns)
        if let sriov = function.sriov {
            var nested = container.nestedContainer(keyedBy: SRIOVKeys.self, forKey: .sriov)
            try nested.encode(sriov.totalVFs, forKey: .totalVFs)
            try nested.encode(sriov.numVFs, forKey: .numVFs)
            try nested.encode(sriov.vfTotalMSIX, forKey: .vfTotalMSIX)
            try nested.encode(sriov.driversAutoprobe, forKey: .driversAutoprobe)
        } else {
            try container.encodeNil(forKey: .sriov)
        }
        try container.encode(function.vfMSIXCount, forKey: .vfMSIXCount)
        try container.encode(function.iommuGroup, forKey: .iommuGroup)
        try container.encode(function.numaNode, forKey: .numaNode)
        try container.encode(function.isTransitional, forKey: .transitional)
    }
}
