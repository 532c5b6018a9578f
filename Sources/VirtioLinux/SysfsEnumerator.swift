import PCIConfig
import VirtioSpec
import VirtioSystem

/// Everything decoded about one function: its sysfs record and its config space.
package struct FunctionDetails: Sendable {
    package var function: VirtioFunction
    package var config: PCIConfigSpace
    /// BAR sizes from sysfs `resource` (0 for unimplemented BARs).
    package var barSizes: [UInt64]
}

/// Enumerates virtio PCI functions by walking a sysfs tree.
///
/// The root is the sysfs mount point (`/sys` on a host); devices are read under
/// `ROOT/bus/pci/devices/`. libudev cannot be pointed at another root, so tests, the device
/// model's fake tree and appliances without udev use this back end.
package struct SysfsEnumerator: Sendable {
    package var root: String

    package init(root: String = "/sys") {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    /// `ROOT/bus/pci/devices`.
    package var devicesDirectory: String { root + "/" + SysfsAttribute.pciDevicesDirectory }

    /// The sysfs directory of `address`.
    package func directory(of address: PCIAddress) -> String { devicesDirectory + "/" + address.description }

    /// All virtio functions, sorted by address.
    ///
    /// A PF, or any function no PF lists, is read in full (one directory descriptor, every
    /// attribute relative to it). A VF that an already-read virtio PF lists as `virtfnN`
    /// costs one link read here (`driver`): the kernel gives a VF its PF's vendor id and the
    /// PF's `sriov_vf_device` as its device id, and its `physfn` is that PF; the VF's other
    /// attributes are read on first use (see ``VirtioFunction``). `counter`, when given,
    /// counts the files and links read, the deferred ones included.
    /// - Throws: ``LinuxError/sysfsMissing(path:)`` when the devices directory is absent.
    package func functions(counter: SysfsReadCounter? = nil) throws(LinuxError) -> [VirtioFunction] {
        var addresses: [(address: PCIAddress, name: String)] = []
        for name in try deviceNames() {
            if let address = PCIAddress(name) { addresses.append((address, name)) }
        }
        // Address order puts a PF before its VFs (a VF's routing id is the PF's plus an offset > 0).
        addresses.sort { $0.address < $1.address }
        let devices = devicesDirectory
        let devicesFD = Sys.openDirectory(devices)
        defer { if devicesFD >= 0 { Sys.closeFD(devicesFD) } }
        var listedVFs: [PCIAddress: (pf: PCIAddress, vendorID: UInt16, deviceID: UInt16)] = [:]
        var result: [VirtioFunction] = []
        result.reserveCapacity(addresses.count)
        for (address, name) in addresses {
            let directory = devices + "/" + name
            if devicesFD >= 0, let parent = listedVFs[address] {
                counter?.add()
                let driver = Sys.readLink(at: devicesFD, name + "/" + SysfsAttribute.driver).map(lastPathComponent)
                let deferred = DeferredDetails { SysfsDirectory(directory: directory, counter: counter).details() }
                result.append(VirtioFunction(address: address, vendorID: parent.vendorID, deviceID: parent.deviceID, physfn: parent.pf,
                                             driver: driver, deferred: deferred))
                continue
            }
            let source = SysfsDirectory(directory: directory, counter: counter)
            guard let function = source.virtioFunction(address: address) else { continue }
            if function.role == .pf, !function.virtfns.isEmpty,
               let vfDeviceID = source.hexAttribute(SysfsAttribute.sriovVFDevice, as: UInt16.self),
               PCIIdentity.isVirtio(vendorID: function.vendorID, deviceID: vfDeviceID) {
                for vf in function.virtfns.values where vf > address {
                    listedVFs[vf] = (address, function.vendorID, vfDeviceID)
                }
            }
            result.append(function)
        }
        return result
    }

    /// The entries of `ROOT/bus/pci/devices`.
    func deviceNames() throws(LinuxError) -> [String] {
        do { return try Sys.listDirectory(devicesDirectory) } catch {
            if error.isNotFound { throw .sysfsMissing(path: devicesDirectory) }
            throw .unreadable(address: nil, error)
        }
    }

    /// The virtio SR-IOV PFs, sorted by address. Only functions with `sriov_totalvfs` are
    /// read in full, so a host with thousands of VFs costs one directory read and one
    /// `stat` per function.
    package func physicalFunctions() throws(LinuxError) -> [VirtioFunction] {
        let names = try deviceNames()
        var result: [VirtioFunction] = []
        for name in names {
            let directory = devicesDirectory + "/" + name
            guard Sys.exists(directory + "/" + SysfsAttribute.sriovTotalVFs), let address = PCIAddress(name),
                  let function = SysfsDirectory(directory: directory).virtioFunction(address: address), function.role == .pf
            else { continue }
            result.append(function)
        }
        return result.sorted { $0.address < $1.address }
    }

    /// A PF's VF layout (sysfs `sriov_offset`, `sriov_stride`): VF `n` has routing id
    /// PF + offset + n × stride. `nil` when the attributes are missing.
    package func vfLayout(of pf: PCIAddress) -> (offset: Int, stride: Int)? {
        let directory = SysfsDirectory(directory: directory(of: pf))
        guard let offset = directory.intAttribute(SysfsAttribute.sriovOffset), let stride = directory.intAttribute(SysfsAttribute.sriovStride),
              offset > 0, stride > 0 else { return nil }
        return (offset, stride)
    }

    /// The driver bound to `address` (the name its `driver` link points at), or nil.
    package func driver(of address: PCIAddress) -> String? {
        Sys.readLink(directory(of: address) + "/" + SysfsAttribute.driver).map(baseName)
    }

    /// The virtio function at `address`.
    /// - Throws: ``LinuxError/noSuchDevice(address:path:)`` or ``LinuxError/notVirtio(address:vendorID:deviceID:)``.
    package func function(at address: PCIAddress) throws(LinuxError) -> VirtioFunction {
        let source = SysfsDirectory(directory: directory(of: address))
        guard Sys.exists(source.directory) else {
            if !Sys.exists(devicesDirectory) { throw .sysfsMissing(path: devicesDirectory) }
            throw .noSuchDevice(address: address, path: source.directory)
        }
        try checkInsideRoot(source.directory, address: address)
        if let function = source.virtioFunction(address: address) { return function }
        throw .notVirtio(address: address, vendorID: source.hexAttribute(SysfsAttribute.vendor) ?? 0,
                         deviceID: source.hexAttribute(SysfsAttribute.device) ?? 0)
    }

    /// Never follow a symlink out of the sysfs root: the device directory must resolve
    /// inside the root's own resolved path.
    func checkInsideRoot(_ path: String, address: PCIAddress) throws(LinuxError) {
        guard let resolved = Sys.realPath(path), let rootResolved = Sys.realPath(root) else { return }
        let prefix = rootResolved == "/" ? "/" : rootResolved + "/"
        guard resolved.hasPrefix(prefix) else { throw .outsideSysfsRoot(address: address, resolved: resolved, root: rootResolved) }
    }

    /// Reads and decodes the config space of `address` (with BAR sizes from `resource`).
    package func details(of address: PCIAddress) throws(LinuxError) -> FunctionDetails {
        let function = try function(at: address)
        let base = directory(of: address)
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(base + "/" + SysfsAttribute.config, limit: PCIHeader.extendedConfigSize) } catch {
            throw .unreadable(address: address, error)
        }
        let sizes = (try? Sys.readText(base + "/" + SysfsAttribute.resource)).map(parseResourceSizes) ?? []
        do {
            let config = try PCIConfigSpace(decoding: bytes, address: address, barSizes: sizes.isEmpty ? nil : sizes)
            return FunctionDetails(function: function, config: config, barSizes: sizes)
        } catch {
            if bytes.count <= PCIHeader.size, case .truncated = error { throw .configRestricted(address: address, available: bytes.count) }
            if bytes.count < PCIHeader.legacyConfigSize, !Sys.isRoot, case .truncated = error {
                throw .configRestricted(address: address, available: bytes.count)
            }
            throw .config(error)
        }
    }
}
