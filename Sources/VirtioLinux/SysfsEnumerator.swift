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
        let addresses = try sortedDeviceAddresses()
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
    /// read in full, and a function a PF already read has as its VF is not looked at again
    /// (a VF is never a PF; address order puts a PF before its VFs), so a host with
    /// thousands of VFs costs one directory read, one `stat` per function that is no PF's
    /// VF, and each PF's own read. With `withVFs` a PF's VFs are its `virtfnN` links (one
    /// link read per VF); without, the PFs' `virtfns` stay empty and the VFs skipped are
    /// those the PF's `sriov_offset`, `sriov_stride` and `sriov_numvfs` place (the kernel's
    /// rule: VF n at the PF's routing id + offset + n × stride) when its first and last
    /// `virtfn` links agree, so the scan reads nothing per VF. `counter`, when given, counts the `stat`s and the files and links read.
    package func physicalFunctions(counter: SysfsReadCounter? = nil, withVFs: Bool = true) throws(LinuxError) -> [VirtioFunction] {
        let addresses = try sortedDeviceAddresses()
        let devices = devicesDirectory
        let devicesFD = Sys.openDirectory(devices)
        defer { if devicesFD >= 0 { Sys.closeFD(devicesFD) } }
        var knownVFs = Set<PCIAddress>()
        var result: [VirtioFunction] = []
        for (address, name) in addresses where !knownVFs.contains(address) {
            counter?.add()
            let hasSRIOV = devicesFD >= 0 ? Sys.exists(at: devicesFD, name + "/" + SysfsAttribute.sriovTotalVFs)
                : Sys.exists(devices + "/" + name + "/" + SysfsAttribute.sriovTotalVFs)
            let source = SysfsDirectory(directory: devices + "/" + name, counter: counter)
            guard hasSRIOV, var function = source.virtioFunction(address: address, withVFs: withVFs), function.role == .pf else { continue }
            if withVFs {
                for vf in function.virtfns.values where vf > address { knownVFs.insert(vf) }
            } else if let placed = vfsPlacedByLayout(source, pf: address, numVFs: function.sriov?.numVFs ?? 0) {
                knownVFs.formUnion(placed.values)
            } else {
                // No layout to place the VFs by, or one their links disagree with: their
                // links, as with `withVFs`.
                function = source.virtioFunction(address: address) ?? function
                for vf in function.virtfns.values where vf > address { knownVFs.insert(vf) }
                function.virtfns = [:]
            }
            result.append(function)
        }
        return result
    }

    /// The PF's VFs by index as its `sriov_offset` and `sriov_stride` place them (VF n at
    /// the PF's routing id + offset + n × stride), or nil when the attributes are missing or
    /// its first and last `virtfn` links disagree.
    func vfsPlacedByLayout(_ source: SysfsDirectory, pf: PCIAddress, numVFs: Int) -> [Int: PCIAddress]? {
        guard let (offset, stride) = vfLayout(source), layoutAgrees(source, pf: pf, offset: offset, stride: stride, numVFs: numVFs) else { return nil }
        var placed: [Int: PCIAddress] = [:]
        placed.reserveCapacity(numVFs)
        for index in 0..<numVFs {
            let routingID = Int(pf.routingID) + offset + index * stride
            guard routingID <= Int(UInt16.max) else { return nil }
            placed[index] = PCIAddress(domain: pf.domain, routingID: UInt16(routingID))
        }
        return placed
    }

    /// Whether the PF's first and last `virtfn` links name the VFs its layout places (two
    /// link reads): a stale or wrong `sriov_offset`/`sriov_stride` must not make the scan
    /// skip another function.
    func layoutAgrees(_ source: SysfsDirectory, pf: PCIAddress, offset: Int, stride: Int, numVFs: Int) -> Bool {
        guard numVFs > 0 else { return true }
        for index in Set([0, numVFs - 1]) {
            let routingID = Int(pf.routingID) + offset + index * stride
            guard routingID <= Int(UInt16.max),
                  let link = source.link(SysfsAttribute.virtfnPrefix + String(index)),
                  PCIAddress(lastPathComponent(link)) == PCIAddress(domain: pf.domain, routingID: UInt16(routingID)) else { return false }
        }
        return true
    }

    /// What ``vfDrivers(of:counter:)`` gives as the driver of a VF whose `driver` link could
    /// not be read (followed by the failure).
    package static let unreadableDriverLink = "an unreadable driver link"

    /// The functions of the devices directory with their entry names, in address order:
    /// a PF before its VFs (a VF's routing id is the PF's plus an offset > 0).
    func sortedDeviceAddresses() throws(LinuxError) -> [(address: PCIAddress, name: String)] {
        var addresses: [(address: PCIAddress, name: String)] = []
        for name in try deviceNames() {
            if let address = PCIAddress(name) { addresses.append((address, name)) }
        }
        addresses.sort { $0.address < $1.address }
        return addresses
    }

    /// The drivers bound to a PF's VFs, by VF index (sysfs `virtfnN/driver`; unbound VFs
    /// are left out): the in-use check before a PF is opened. One link read per VF, relative
    /// to the PF's directory opened once; `counter` counts them. A VF without a `driver`
    /// link is unbound; one whose link cannot be read for another reason (EACCES, ENOMEM…)
    /// counts as bound, to "an unreadable driver link", so the check refuses rather than
    /// guesses. From 256 VFs on, a second thread reads half of them (each read is a path
    /// lookup in the kernel, and nothing else runs meanwhile).
    package func vfDrivers(of pf: VirtioFunction, counter: SysfsReadCounter? = nil) -> [Int: String] {
        let pfFD = Sys.openDirectory(directory(of: pf.address))
        defer { if pfFD >= 0 { Sys.closeFD(pfFD) } }
        let vfs = pf.virtfns.sorted { $0.key < $1.key }
        let links: [String?]
        if pfFD >= 0 {
            links = readLinks(at: pfFD, vfs.map { SysfsAttribute.virtfnPrefix + String($0.key) + "/" + SysfsAttribute.driver }, counter: counter,
                              unreadable: { Self.unreadableDriverLink + " (\($0))" })
        } else {
            links = vfs.map { _, vf in
                counter?.add()
                return Sys.readLink(directory(of: vf) + "/" + SysfsAttribute.driver)
            }
        }
        var drivers: [Int: String] = [:]
        for ((index, _), link) in zip(vfs, links) {
            if let link { drivers[index] = link.hasPrefix(Self.unreadableDriverLink) ? link : lastPathComponent(link) }
        }
        return drivers
    }

    /// A PF's VF layout (sysfs `sriov_offset`, `sriov_stride`): VF `n` has routing id
    /// PF + offset + n × stride. `nil` when the attributes are missing.
    package func vfLayout(of pf: PCIAddress) -> (offset: Int, stride: Int)? {
        vfLayout(SysfsDirectory(directory: directory(of: pf)))
    }

    /// The VF layout in the PF directory `source` (``vfLayout(of:)``).
    func vfLayout(_ source: SysfsDirectory) -> (offset: Int, stride: Int)? {
        guard let offset = source.intAttribute(SysfsAttribute.sriovOffset), let stride = source.intAttribute(SysfsAttribute.sriovStride),
              offset > 0, stride > 0 else { return nil }
        return (offset, stride)
    }

    /// The driver bound to `address` (the name its `driver` link points at), or nil.
    package func driver(of address: PCIAddress) -> String? {
        Sys.readLink(directory(of: address) + "/" + SysfsAttribute.driver).map(baseName)
    }

    /// The virtio function at `address` (`counter` counts the files and links read).
    /// With `vfsByLayout`, a PF's VFs are placed by its `sriov_offset`, `sriov_stride` and
    /// `sriov_numvfs` (the kernel's rule) when its first and last `virtfn` links agree — two
    /// link reads instead of one per VF; otherwise, and by default, they are its links.
    /// - Throws: ``LinuxError/noSuchDevice(address:path:)``, ``LinuxError/notVirtio(address:vendorID:deviceID:)``,
    ///   or, when its `vendor` or `device` cannot be read or parsed, ``LinuxError/unreadable(address:_:)`` or
    ///   ``LinuxError/malformedAttribute(address:attribute:value:)``.
    package func function(at address: PCIAddress, counter: SysfsReadCounter? = nil, vfsByLayout: Bool = false) throws(LinuxError) -> VirtioFunction {
        let source = SysfsDirectory(directory: directory(of: address), counter: counter)
        guard Sys.exists(source.directory) else {
            if !Sys.exists(devicesDirectory) { throw .sysfsMissing(path: devicesDirectory) }
            throw .noSuchDevice(address: address, path: source.directory)
        }
        try checkInsideRoot(source.directory, address: address)
        let identity = try source.identity(address: address)
        guard PCIIdentity.isVirtio(vendorID: identity.vendorID, deviceID: identity.deviceID) else {
            throw .notVirtio(address: address, vendorID: identity.vendorID, deviceID: identity.deviceID)
        }
        if vfsByLayout, var function = source.virtioFunction(address: address, withVFs: false, identity: identity) {
            guard function.role == .pf else { return function }
            if let placed = vfsPlacedByLayout(source, pf: address, numVFs: function.sriov?.numVFs ?? 0) {
                function.virtfns = placed
                return function
            }
        }
        guard let function = source.virtioFunction(address: address, identity: identity) else {
            throw .notVirtio(address: address, vendorID: identity.vendorID, deviceID: identity.deviceID)
        }
        return function
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

/// The targets of the links `names` under the directory descriptor `directory` (`nil` for
/// one that does not exist; for one that cannot be read, what `unreadable` says, else
/// `nil`), in order; `counter` counts them. From 256 links on, a second
/// thread reads half of them: each read is a path lookup in the kernel, and on a PF with
/// 1024 VFs these lookups are most of what opening it costs.
func readLinks(at directory: Int32, _ names: [String], counter: SysfsReadCounter?, unreadable: (@Sendable (SystemCallError) -> String?)? = nil) -> [String?] {
    @Sendable func read(_ part: ArraySlice<String>) -> [String?] {
        part.map { name -> String? in
            counter?.add()
            do throws(SystemCallError) { return try Sys.readLinkIfPresent(at: directory, name) } catch { return unreadable.flatMap { $0(error) } }
        }
    }
    let half = names.count / 2
    let second = LinkResults()
    if names.count >= 256, let thread = JoinableThread({ [names] in second.value = read(names[half...]) }) {
        let first = read(names[..<half])
        thread.join()
        return first + second.value
    }
    return read(names[...])
}

/// What the second thread of ``readLinks(at:_:counter:)`` read; written by that thread
/// before it ends and read after it was joined.
private final class LinkResults: @unchecked Sendable {
    var value: [String?] = []
}
