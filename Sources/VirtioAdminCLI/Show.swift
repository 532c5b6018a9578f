import ArgumentParser
import PCIConfig
import VirtioLinux
import VirtioSpec

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode one virtio function: header, BARs, virtio capabilities, MSI-X, SR-IOV.",
        discussion: """
            Reads sysfs 'config' and 'resource' (read-only; full config space needs root) and
            checks every capability against the BAR it points into.
            With --json, prints an object with the keys address, vendorID, deviceID, type,
            role, driver, classCode, revision, bars, capabilities, extendedCapabilities,
            virtioCapabilities, msix, pciExpress, sriov (from the SR-IOV capability) and
            sysfsSRIOV (from sysfs).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The function's PCI address.", valueName: "ADDRESS"))
    var address: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let address = try parseAddress(address)
        let details: FunctionDetails
        do { details = try SysfsEnumerator(root: global.sysfsRoot).details(of: address) } catch {
            throw CLIError(error.description)
        }
        if json {
            try printJSON(DetailsJSON(details))
        } else {
            print(renderDetails(details))
        }
    }
}

func renderDetails(_ details: FunctionDetails) -> String {
    let function = details.function
    let config = details.config
    var lines: [String] = []
    let transitional = function.isTransitional ? " (transitional)" : ""
    lines.append("\(function.address)  virtio \(function.type?.name ?? "?")\(transitional)  [\(hex(config.vendorID, width: 4)):\(hex(config.deviceID, width: 4))]  rev \(hex(config.revision, width: 2))  class \(hex(config.classCode, width: 6))")
    lines.append("  subsystem: \(hex(config.subsystemVendorID, width: 4)):\(hex(config.subsystemID, width: 4))")
    lines.append("  role: \(function.role.rawValue)  driver: \(function.driver ?? "none")  iommu group: \(function.iommuGroup.map(String.init) ?? "none")  numa node: \(function.numaNode.map(String.init) ?? "?")")
    if let physfn = function.physfn { lines.append("  physfn: \(physfn)") }
    lines.append("  BARs:")
    if config.bars.isEmpty { lines.append("    none") }
    for bar in config.bars {
        let kind = bar.kind == .io ? "I/O" : (bar.kind == .memory64 ? "memory 64-bit" : "memory 32-bit")
        let prefetch = bar.kind == .io ? "" : (bar.prefetchable ? ", prefetchable" : ", non-prefetchable")
        let size = bar.size.map { " [size=\(humanSize($0))]" } ?? ""
        lines.append("    BAR\(bar.index): \(kind)\(prefetch) at \(hex(bar.address))\(size)")
    }
    lines.append("  Virtio capabilities:")
    if config.virtioCapabilities.isEmpty { lines.append("    none") }
    for cap in config.virtioCapabilities {
        var line = "    [\(hex(cap.capabilityOffset, width: 2))] \(cap.cfgType.name.padding(toLength: 12, withPad: " ", startingAt: 0)) BAR\(cap.bar) offset \(hex(cap.offset, width: 8)) length \(hex(cap.length, width: 8))"
        if let multiplier = cap.notifyOffMultiplier { line += " multiplier \(multiplier)" }
        if cap.cfgType == .common {
            line += cap.length >= UInt64(CommonConfigLayout.sizeWithAdminQueue) ? " (has admin queue fields)" : " (no admin queue fields)"
        }
        lines.append(line)
    }
    for offset in config.unknownVirtioCapabilityOffsets {
        lines.append("    [\(hex(offset, width: 2))] unknown cfg_type (ignored)")
    }
    if let msix = config.msix {
        lines.append("  MSI-X: \(msix.tableSize) vectors, \(msix.enabled ? "enabled" : "disabled")\(msix.functionMasked ? ", masked" : ""); table BAR\(msix.tableBAR)+\(hex(msix.tableOffset)), PBA BAR\(msix.pbaBAR)+\(hex(msix.pbaOffset))")
    } else {
        lines.append("  MSI-X: none")
    }
    if let express = config.pciExpress {
        lines.append("  PCI Express: version \(express.version), port type \(express.portType)")
    }
    if let sriov = config.sriov {
        lines.append("  SR-IOV: TotalVFs \(sriov.totalVFs), InitialVFs \(sriov.initialVFs), NumVFs \(sriov.numVFs), VF enable \(sriov.vfEnabled ? "on" : "off")")
        lines.append("          first VF offset \(sriov.firstVFOffset), stride \(sriov.vfStride), VF device id \(hex(sriov.vfDeviceID, width: 4))")
        for (index, vf) in function.virtfns.sorted(by: { $0.key < $1.key }) {
            lines.append("          virtfn\(index) -> \(vf)")
        }
    }
    if let state = function.sriov {
        lines.append("  sysfs SR-IOV: sriov_totalvfs \(state.totalVFs), sriov_numvfs \(state.numVFs)" + (state.vfTotalMSIX.map { ", sriov_vf_total_msix \($0)" } ?? ""))
    }
    if let count = function.vfMSIXCount { lines.append("  sriov_vf_msix_count: \(count)") }
    return lines.joined(separator: "\n")
}

/// JSON shape of `show` (keys are part of the CLI's contract).
struct DetailsJSON: Encodable {
    let details: FunctionDetails
    init(_ details: FunctionDetails) { self.details = details }

    struct BAR: Encodable { let index: Int; let kind: String; let prefetchable: Bool; let address: UInt64; let size: UInt64? }
    struct Capability: Encodable { let id: UInt8; let name: String; let offset: Int }
    struct ExtendedCapability: Encodable { let id: UInt16; let name: String; let version: UInt8; let offset: Int }
    struct VirtioCap: Encodable {
        let cfgType: String; let bar: Int; let offset: UInt64; let length: UInt64; let id: UInt8
        let capabilityOffset: Int; let notifyOffMultiplier: UInt32?
        enum Keys: String, CodingKey { case cfgType, bar, offset, length, id, capabilityOffset, notifyOffMultiplier }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(cfgType, forKey: .cfgType)
            try c.encode(bar, forKey: .bar)
            try c.encode(offset, forKey: .offset)
            try c.encode(length, forKey: .length)
            try c.encode(id, forKey: .id)
            try c.encode(capabilityOffset, forKey: .capabilityOffset)
            try c.encodeIfPresent(notifyOffMultiplier, forKey: .notifyOffMultiplier)
        }
    }
    struct MSIX: Encodable { let tableSize: Int; let tableBAR: Int; let tableOffset: UInt32; let pbaBAR: Int; let pbaOffset: UInt32; let enabled: Bool; let functionMasked: Bool; let capabilityOffset: Int }
    struct Express: Encodable { let version: Int; let portType: Int; let capabilityOffset: Int }
    struct SRIOV: Encodable {
        let totalVFs: Int; let initialVFs: Int; let numVFs: Int; let firstVFOffset: Int; let vfStride: Int
        let vfDeviceID: UInt16; let vfEnable: Bool; let capabilityOffset: Int; let vfBARs: [UInt32]
    }

    enum Keys: String, CodingKey {
        case address, vendorID, deviceID, type, role, driver, classCode, revision, subsystemVendorID, subsystemID,
             physfn, virtfns, bars, capabilities, extendedCapabilities, virtioCapabilities, msix, pciExpress, sriov, sysfsSRIOV,
             iommuGroup, numaNode
    }

    func encode(to encoder: any Encoder) throws {
        let config = details.config
        let function = details.function
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(function.address.description, forKey: .address)
        try c.encode(config.vendorID, forKey: .vendorID)
        try c.encode(config.deviceID, forKey: .deviceID)
        try c.encode(function.type?.name, forKey: .type)
        try c.encode(function.role.rawValue, forKey: .role)
        try c.encode(function.driver, forKey: .driver)
        try c.encode(hex(config.classCode, width: 6), forKey: .classCode)
        try c.encode(config.revision, forKey: .revision)
        try c.encode(config.subsystemVendorID, forKey: .subsystemVendorID)
        try c.encode(config.subsystemID, forKey: .subsystemID)
        try c.encode(function.physfn?.description, forKey: .physfn)
        try c.encode(function.virtfns.sorted { $0.key < $1.key }.map(\.value.description), forKey: .virtfns)
        try c.encode(function.iommuGroup, forKey: .iommuGroup)
        try c.encode(function.numaNode, forKey: .numaNode)
        try c.encode(config.bars.map { BAR(index: $0.index, kind: $0.kind.rawValue, prefetchable: $0.prefetchable, address: $0.address, size: $0.size) }, forKey: .bars)
        try c.encode(config.capabilities.map { Capability(id: $0.id.rawValue, name: $0.id.description, offset: $0.offset) }, forKey: .capabilities)
        try c.encode(config.extendedCapabilities.map { ExtendedCapability(id: $0.id.rawValue, name: $0.id.description, version: $0.version, offset: $0.offset) }, forKey: .extendedCapabilities)
        try c.encode(config.virtioCapabilities.map {
            VirtioCap(cfgType: $0.cfgType.name, bar: $0.bar, offset: $0.offset, length: $0.length, id: $0.id,
                      capabilityOffset: $0.capabilityOffset, notifyOffMultiplier: $0.notifyOffMultiplier)
        }, forKey: .virtioCapabilities)
        try c.encode(config.msix.map {
            MSIX(tableSize: $0.tableSize, tableBAR: $0.tableBAR, tableOffset: $0.tableOffset, pbaBAR: $0.pbaBAR,
                 pbaOffset: $0.pbaOffset, enabled: $0.enabled, functionMasked: $0.functionMasked, capabilityOffset: $0.capabilityOffset)
        }, forKey: .msix)
        try c.encode(config.pciExpress.map { Express(version: $0.version, portType: $0.portType, capabilityOffset: $0.capabilityOffset) }, forKey: .pciExpress)
        try c.encode(config.sriov.map {
            SRIOV(totalVFs: $0.totalVFs, initialVFs: $0.initialVFs, numVFs: $0.numVFs, firstVFOffset: $0.firstVFOffset,
                  vfStride: $0.vfStride, vfDeviceID: $0.vfDeviceID, vfEnable: $0.vfEnabled, capabilityOffset: $0.capabilityOffset, vfBARs: $0.vfBARs)
        }, forKey: .sriov)
        if let state = function.sriov {
            try c.encode(["totalVFs": state.totalVFs, "numVFs": state.numVFs], forKey: .sysfsSRIOV)
        } else {
            try c.encodeNil(forKey: .sysfsSRIOV)
        }
    }
}
