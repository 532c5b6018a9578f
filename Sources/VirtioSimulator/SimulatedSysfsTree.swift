import PCIConfig
import VirtioSpec
import VirtioSystem

/// One function of a fake sysfs tree: config bytes, BAR resources, attributes and links.
package struct FakeSysfsFunction: Sendable {
    package var address: PCIAddress
    package var vendorID: UInt16
    package var deviceID: UInt16
    package var classCode: UInt32
    package var config: [UInt8]
    /// BAR 0 (start, size) for the `resource` file; other BARs are unimplemented.
    package var bar0: (start: UInt64, size: UInt64)?
    /// Extra attribute files (name → contents without the trailing newline).
    package var attributes: [String: String]
    /// Links to other functions (name → address), e.g. `physfn`, `virtfn0`.
    package var functionLinks: [String: PCIAddress]
    package var driver: String?
    package var iommuGroup: Int?

    package init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, classCode: UInt32, config: [UInt8]) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.config = config
        attributes = [:]
        functionLinks = [:]
    }
}

/// A simulated SR-IOV topology as sysfs shows it: a virtio PF with VFs (and, optionally, a
/// non-virtio neighbour), written as a tree that both `virtio-admin --sysfs-root` and
/// `lspci -A linux-sysfs -O sysfs.path=ROOT/bus/pci` read.
///
/// The tree has the kernel's shape: real directories under `ROOT/devices/pci0000:00/`,
/// `ROOT/bus/pci/devices/<address>` symlinks to them, `physfn`/`virtfnN` links between
/// PF and VFs, `driver` links into `ROOT/bus/pci/drivers/`, `iommu_group` links into
/// `ROOT/kernel/iommu_groups/`.
package struct SimulatedSysfsTree: Sendable {
    package var pfAddress = PCIAddress(domain: 0, bus: 0x3b, device: 0, function: 0)
    package var pfType: VirtioDeviceType = .net
    package var vfType: VirtioDeviceType = .net
    package var totalVFs: Int
    package var numVFs: Int
    /// MSI-X vectors in the PF's own table.
    package var pfMSIXVectors = 8
    /// MSI-X table size of each VF (and `sriov_vf_msix_count`), by VF index; default 4.
    package var vfMSIXCounts: [Int] = []
    /// sysfs `sriov_vf_total_msix` of the PF (the pool), when set.
    package var vfTotalMSIX: Int?
    package var pfDriver: String?
    package var vfDrivers: [Int: String] = [:]
    package var includeNonVirtioNeighbour = true
    package var firstVFOffset = 1
    package var vfStride = 1

    package static let pfBAR0: UInt64 = 0x38_0000_0000
    package static let vfBAR0Base: UInt64 = 0x38_1000_0000
    /// The non-virtio neighbour: a host bridge at 0000:00:00.0.
    package static let neighbourAddress = PCIAddress(domain: 0, bus: 0, device: 0, function: 0)

    package init(totalVFs: Int, numVFs: Int) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
    }

    var sriov: SimulatedSRIOV {
        SimulatedSRIOV(totalVFs: totalVFs, numVFs: numVFs, firstVFOffset: firstVFOffset, vfStride: vfStride,
                       vfType: vfType, vfBAR0Base: Self.vfBAR0Base)
    }

    package func vfAddress(_ index: Int) -> PCIAddress {
        PCIAddress(domain: pfAddress.domain, routingID: UInt16(truncatingIfNeeded: Int(pfAddress.routingID) + firstVFOffset + index * vfStride))
    }

    func vfMSIX(_ index: Int) -> Int { index < vfMSIXCounts.count ? vfMSIXCounts[index] : 4 }

    /// The functions of the tree.
    package func functions() -> [FakeSysfsFunction] {
        var result: [FakeSysfsFunction] = []
        let pfIdentity = SimulatedFunctionIdentity(address: pfAddress, type: pfType, bar0Address: Self.pfBAR0, msixTableSize: pfMSIXVectors)
        var pf = FakeSysfsFunction(address: pfAddress, vendorID: PCIIdentity.virtioVendorID, deviceID: pfType.modernPCIDeviceID,
                                   classCode: pfIdentity.classCode, config: simulatedConfigSpace(pfIdentity, sriov: sriov))
        pf.bar0 = (Self.pfBAR0, SimulatedBARLayout.size)
        pf.attributes = [
            "sriov_totalvfs": "\(totalVFs)", "sriov_numvfs": "\(numVFs)", "sriov_offset": "\(firstVFOffset)",
            "sriov_stride": "\(vfStride)", "sriov_vf_device": String(vfType.modernPCIDeviceID, radix: 16),
            "sriov_drivers_autoprobe": "1",
        ]
        if let vfTotalMSIX { pf.attributes["sriov_vf_total_msix"] = "\(vfTotalMSIX)" }
        pf.driver = pfDriver
        pf.iommuGroup = 10
        for index in 0..<numVFs { pf.functionLinks["virtfn\(index)"] = vfAddress(index) }
        result.append(pf)

        for index in 0..<numVFs {
            let address = vfAddress(index)
            let bar = Self.vfBAR0Base + UInt64(index) * SimulatedBARLayout.size
            let identity = SimulatedFunctionIdentity(address: address, type: vfType, bar0Address: bar, msixTableSize: vfMSIX(index))
            var vf = FakeSysfsFunction(address: address, vendorID: PCIIdentity.virtioVendorID, deviceID: vfType.modernPCIDeviceID,
                                       classCode: identity.classCode, config: simulatedConfigSpace(identity))
            vf.bar0 = (bar, SimulatedBARLayout.size)
            vf.attributes["sriov_vf_msix_count"] = "\(vfMSIX(index))"
            vf.functionLinks["physfn"] = pfAddress
            vf.driver = vfDrivers[index]
            vf.iommuGroup = 11 + index
            result.append(vf)
        }

        if includeNonVirtioNeighbour {
            var builder = ConfigSpaceBuilder(size: PCIHeader.legacyConfigSize, vendorID: 0x8086, deviceID: 0x0d57, classCode: 0x060000,
                                             subsystemVendorID: 0x8086, subsystemID: 0)
            builder.addPCIExpress(portType: 9)
            result.append(FakeSysfsFunction(address: Self.neighbourAddress, vendorID: 0x8086, deviceID: 0x0d57, classCode: 0x060000, config: builder.bytes))
        }
        return result
    }

    /// Writes the tree under `root` (which plays the role of `/sys`).
    package func write(to root: String) throws(SystemCallError) {
        try Self.write(functions(), to: root)
    }

    /// Writes any set of fake functions under `root`.
    package static func write(_ functions: [FakeSysfsFunction], to root: String) throws(SystemCallError) {
        let devicesParent = root + "/devices/pci0000:00"
        let busDevices = root + "/bus/pci/devices"
        try Sys.makeDirectories(devicesParent)
        try Sys.makeDirectories(busDevices)
        try Sys.makeDirectories(root + "/bus/pci/drivers")
        // The kernel's probe trigger; in a fake tree it records the last address written.
        try Sys.writeFile("", to: root + "/bus/pci/drivers_probe")
        for function in functions {
            let name = function.address.description
            let directory = devicesParent + "/" + name
            try Sys.makeDirectories(directory)
            try Sys.symlink(target: "../../../devices/pci0000:00/" + name, at: busDevices + "/" + name)
            try Sys.writeFile(function.config, to: directory + "/config")
            try Sys.writeFile(hex(function.vendorID, width: 4) + "\n", to: directory + "/vendor")
            try Sys.writeFile(hex(function.deviceID, width: 4) + "\n", to: directory + "/device")
            try Sys.writeFile(hex(function.classCode, width: 6) + "\n", to: directory + "/class")
            try Sys.writeFile(hex(function.config.readLE(UInt16.self, at: PCIHeader.subsystemVendorID), width: 4) + "\n", to: directory + "/subsystem_vendor")
            try Sys.writeFile(hex(function.config.readLE(UInt16.self, at: PCIHeader.subsystemID), width: 4) + "\n", to: directory + "/subsystem_device")
            try Sys.writeFile(hex(function.config[PCIHeader.revisionID], width: 2) + "\n", to: directory + "/revision")
            try Sys.writeFile("-1\n", to: directory + "/numa_node")
            try Sys.writeFile("(null)\n", to: directory + "/driver_override")
            try Sys.writeFile("0\n", to: directory + "/irq")
            try Sys.writeFile(resourceText(function), to: directory + "/resource")
            try Sys.writeFile("PCI_CLASS=\(String(function.classCode, radix: 16, uppercase: true))\nPCI_ID=\(hexUpper(function.vendorID)):\(hexUpper(function.deviceID))\nPCI_SLOT_NAME=\(name)\n", to: directory + "/uevent")
            for (attribute, value) in function.attributes {
                try Sys.writeFile(value + "\n", to: directory + "/" + attribute)
            }
            for (link, target) in function.functionLinks {
                try Sys.symlink(target: "../" + target.description, at: directory + "/" + link)
            }
            if let driver = function.driver {
                try Sys.makeDirectories(root + "/bus/pci/drivers/" + driver)
                try Sys.symlink(target: "../../../bus/pci/drivers/" + driver, at: directory + "/driver")
                try Sys.symlink(target: "../../../../devices/pci0000:00/" + name, at: root + "/bus/pci/drivers/" + driver + "/" + name)
            }
            if let group = function.iommuGroup {
                try Sys.makeDirectories(root + "/kernel/iommu_groups/\(group)/devices")
                try Sys.symlink(target: "../../../kernel/iommu_groups/\(group)", at: directory + "/iommu_group")
            }
        }
    }

    static func hexUpper(_ value: UInt16) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - text.count)) + text
    }

    /// sysfs `resource`: 13 lines (6 BARs, ROM, 6 IOV BARs) of `start end flags`.
    static func resourceText(_ function: FakeSysfsFunction) -> String {
        // IORESOURCE_MEM | IORESOURCE_MEM_64 | IORESOURCE_SIZEALIGN | 64-bit memory type bits, as Linux prints them.
        let memory64Flags: UInt64 = 0x140204
        func line(_ start: UInt64, _ end: UInt64, _ flags: UInt64) -> String {
            "\(hex(start, width: 16)) \(hex(end, width: 16)) \(hex(flags, width: 16))\n"
        }
        var text = ""
        for index in 0..<13 {
            if index == 0, let bar = function.bar0 {
                text += line(bar.start, bar.start + bar.size - 1, memory64Flags)
            } else {
                text += line(0, 0, 0)
            }
        }
        return text
    }
}
