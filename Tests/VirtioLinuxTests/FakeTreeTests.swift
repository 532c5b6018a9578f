import Foundation
import Testing
import VirtioSimulator
import VirtioTestSupport
@testable import PCIConfig
@testable import VirtioLinux

/// Enumeration and decoding of a fake SR-IOV tree written by the device model's tree writer,
/// checked field by field and against `lspci -A linux-sysfs`.
struct FakeTreeTests {
    func makeTree(_ configure: (inout SimulatedSysfsTree) -> Void = { _ in }) throws -> (String, SimulatedSysfsTree) {
        let root = makeTemporaryDirectory("fake-sysfs")
        var tree = SimulatedSysfsTree(totalVFs: 8, numVFs: 3)
        tree.vfMSIXCounts = [2, 3, 5]
        tree.vfTotalMSIX = 64
        tree.vfDrivers = [1: "vfio-pci"]
        configure(&tree)
        try tree.write(to: root)
        return (root, tree)
    }

    @Test func rolesLinksAndSRIOVFields() throws {
        let (root, tree) = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let functions = try SysfsEnumerator(root: root).functions()
        #expect(functions.map(\.address.description) == ["0000:3b:00.0", "0000:3b:00.1", "0000:3b:00.2", "0000:3b:00.3"],
                "the non-virtio neighbour is not listed")
        let pf = functions[0]
        #expect(pf.role == .pf)
        #expect(pf.type == .net)
        #expect(pf.sriov == SRIOVState(totalVFs: 8, numVFs: 3, vfTotalMSIX: 64, driversAutoprobe: true))
        #expect(pf.virtfns == [0: tree.vfAddress(0), 1: tree.vfAddress(1), 2: tree.vfAddress(2)])
        #expect(pf.physfn == nil && pf.driver == nil && pf.iommuGroup == 10 && pf.numaNode == -1)
        for (index, vf) in functions.dropFirst().enumerated() {
            #expect(vf.role == .vf)
            #expect(vf.physfn == pf.address)
            #expect(vf.sriov == nil && vf.virtfns.isEmpty)
            #expect(vf.vfMSIXCount == tree.vfMSIXCounts[index])
            #expect(vf.iommuGroup == 11 + index)
        }
        #expect(functions[2].driver == "vfio-pci")
        #expect(functions[1].driver == nil)
    }

    @Test func decodedTreeMatchesLspci() throws {
        guard lspciPath != nil else {
            print("skipped: lspci is not installed (apt-get install pciutils)")
            return
        }
        let (root, _) = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let lspci = try lspciFunctions(["-A", "linux-sysfs", "-O", "sysfs.path=\(root)/bus/pci"])
        #expect(lspci.keys.sorted() == ["0000:00:00.0", "0000:3b:00.0", "0000:3b:00.1", "0000:3b:00.2", "0000:3b:00.3"])
        for function in try SysfsEnumerator(root: root).functions() {
            let ours = try SysfsEnumerator(root: root).details(of: function.address).config
            let theirs = try #require(lspci[function.address.description])
            #expect(theirs.capabilityOffsets == ours.capabilities.map(\.offset))
            #expect(theirs.virtioCaps.map(\.kind) == ours.virtioCapabilities.map { lspciVirtioName($0.cfgType.name) })
            #expect(theirs.virtioCaps.map(\.offset) == ours.virtioCapabilities.map(\.offset))
            #expect(theirs.virtioCaps.map(\.size) == ours.virtioCapabilities.map(\.length))
            #expect(theirs.virtioCaps.map(\.multiplier) == ours.virtioCapabilities.map(\.notifyOffMultiplier))
            #expect(theirs.msix?.count == ours.msix?.tableSize)
            #expect(theirs.msix?.tableOffset == ours.msix.map { UInt64($0.tableOffset) })
            #expect(theirs.msix?.pbaOffset == ours.msix.map { UInt64($0.pbaOffset) })
            #expect(theirs.regions.map(\.address) == ours.bars.map(\.address))
            #expect(theirs.regions.map(\.size) == ours.bars.map { $0.size.map { "\($0 / 1024)K" } })
            if let sriov = ours.sriov {
                #expect(theirs.sriov == LspciFunction.SRIOV(initialVFs: sriov.initialVFs, totalVFs: sriov.totalVFs, numVFs: sriov.numVFs,
                                                            vfOffset: sriov.firstVFOffset, vfStride: sriov.vfStride, vfDeviceID: sriov.vfDeviceID))
            } else {
                #expect(theirs.sriov == nil)
            }
        }
    }

    @Test func sriovCapabilityAgreesWithSysfsLinks() throws {
        let (root, _) = try makeTree { $0.firstVFOffset = 4; $0.vfStride = 2 }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let enumerator = SysfsEnumerator(root: root)
        let pf = try enumerator.details(of: PCIAddress("0000:3b:00.0")!)
        let sriov = try #require(pf.config.sriov)
        for (index, vf) in pf.function.virtfns {
            #expect(sriov.vfAddress(pf: pf.function.address, index: index) == vf)
        }
        #expect(pf.function.virtfns[2] == PCIAddress("0000:3b:01.0"))
    }

    @Test func corruptConfigInTheTreeIsATypedError() throws {
        let (root, _) = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let enumerator = SysfsEnumerator(root: root)
        let path = enumerator.directory(of: PCIAddress("0000:3b:00.1")!) + "/config"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[0x41] = 0x40  // first capability points to itself
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: LinuxError.config(.capabilityLoop(device: PCIAddress("0000:3b:00.1")!, at: 0x41, revisits: 0x40))) {
            try enumerator.details(of: PCIAddress("0000:3b:00.1")!)
        }
        // Truncated to the 64 bytes an unprivileged reader sees.
        try Data(bytes[0..<64]).write(to: URL(fileURLWithPath: path))
        #expect(throws: LinuxError.configRestricted(address: PCIAddress("0000:3b:00.1")!, available: 64)) {
            try enumerator.details(of: PCIAddress("0000:3b:00.1")!)
        }
    }

    @Test func unreadableOrGarbledAttributesDoNotCrash() throws {
        // A function read in full (no PF lists it) whose id does not parse is not virtio.
        let (root, _) = try makeTree { $0.numVFs = 0 }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pf = SysfsEnumerator(root: root).directory(of: PCIAddress("0000:3b:00.0")!)
        try "not-hex\n".write(toFile: pf + "/device", atomically: true, encoding: .utf8)
        #expect(try SysfsEnumerator(root: root).functions().isEmpty, "a function whose id does not parse is not a virtio function")
        // A VF's attributes read on first use: garbled or missing ones read as absent.
        let (vfRoot, _) = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: vfRoot) }
        let vf = SysfsEnumerator(root: vfRoot).directory(of: PCIAddress("0000:3b:00.2")!)
        try "-\n".write(toFile: vf + "/numa_node", atomically: true, encoding: .utf8)
        try "0xzz\n".write(toFile: vf + "/class", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: vf + "/subsystem_vendor")
        let functions = try SysfsEnumerator(root: vfRoot).functions()
        #expect(functions.count == 4)
        #expect(functions[2].numaNode == nil && functions[2].classCode == 0 && functions[2].subsystemVendorID == nil)
        #expect(functions[2].subsystemID == 0x1041 && functions[2].vfMSIXCount == 3)
    }

    /// A function whose `vendor` or `device` cannot be read is reported as unreadable, with
    /// why, one that does not parse as malformed, and one whose files are gone as no such
    /// device — not as "vendor 0x0000, not virtio" (what the service answered when it ran out
    /// of descriptors while opening a PF).
    @Test func anIdentityThatCannotBeReadIsNotVendorZero() throws {
        let (root, _) = try makeTree { $0.numVFs = 0 }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let address = PCIAddress("0000:3b:00.0")!
        let pf = SysfsEnumerator(root: root).directory(of: address)
        // A directory where the file was: opened, but read fails (EISDIR), even for root.
        try FileManager.default.removeItem(atPath: pf + "/vendor")
        try FileManager.default.createDirectory(atPath: pf + "/vendor", withIntermediateDirectories: false)
        let error = #expect(throws: LinuxError.self) { try SysfsEnumerator(root: root).function(at: address) }
        guard case .unreadable(address?, let cause)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(cause.path == pf + "/vendor" && cause.errno.rawValue == EISDIR, "\(cause)")
        #expect(error?.description == "\(address): cannot read \(pf)/vendor: \(cause).")
        try FileManager.default.removeItem(atPath: pf + "/vendor")
        try "0x1af4\n".write(toFile: pf + "/vendor", atomically: true, encoding: .utf8)
        try "virtio\n".write(toFile: pf + "/device", atomically: true, encoding: .utf8)
        #expect(throws: LinuxError.malformedAttribute(address: address, attribute: "device", value: "virtio")) {
            try SysfsEnumerator(root: root).function(at: address)
        }
        // Gone while it was read (its files first): no such device.
        try FileManager.default.removeItem(atPath: pf + "/device")
        #expect(throws: LinuxError.noSuchDevice(address: address, path: pf)) { try SysfsEnumerator(root: root).function(at: address) }
    }

    /// A VF its PF lists costs one link read (its driver); every other attribute is read on
    /// first use, and the record then equals the one read in full.
    @Test func listedVFsCostOneReadAndEqualFullReads() throws {
        let (root, tree) = try makeTree { $0.numVFs = 8 }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let enumerator = SysfsEnumerator(root: root)
        let counter = SysfsReadCounter()
        let functions = try enumerator.functions(counter: counter)
        #expect(functions.count == 9)
        let afterListing = counter.reads
        // 8 more VFs cost 16 more reads: each VF's driver link and the PF's virtfn link to it.
        let (larger, _) = try makeTree { $0.numVFs = 16; $0.totalVFs = 16 }
        defer { try? FileManager.default.removeItem(atPath: larger) }
        let largerCounter = SysfsReadCounter()
        #expect(try SysfsEnumerator(root: larger).functions(counter: largerCounter).count == 17)
        #expect(largerCounter.reads - afterListing == 16, "\(largerCounter.reads) reads for 16 VFs, \(afterListing) for 8")
        #expect(functions[2].driver == "vfio-pci" && functions[1].driver == nil)
        #expect(functions[3].role == .vf && functions[3].physfn == tree.pfAddress && functions[3].type == .net)
        #expect(counter.reads == afterListing, "the listing's fields read nothing more")
        #expect(functions[4].numaNode == -1)
        let afterOneVF = counter.reads
        #expect(afterOneVF > afterListing && afterOneVF - afterListing <= 10, "one VF's details: \(afterOneVF - afterListing) reads")
        #expect(functions[4].iommuGroup == 14 && functions[4].classCode == 0x020000)
        #expect(counter.reads == afterOneVF, "a VF's details are read once")
        for function in functions {
            #expect(function == (try enumerator.function(at: function.address)))
        }
        // Changing a deferred attribute keeps the others.
        var copy = functions[5]
        copy.numaNode = 3
        #expect(copy.numaNode == 3 && copy.iommuGroup == 15 && copy.vfMSIXCount == 4)
        #expect(functions[5].numaNode == -1)
    }
}

/// What finding PFs and the in-use check cost per VF (issue 16, P6: a cold `policy apply`
/// over 1024 VFs pays them once each).
struct PFScanCostTests {
    func tree(vfs: Int, drivers: [Int: String] = [:]) throws -> String {
        let root = makeTemporaryDirectory("pf-scan")
        var tree = SimulatedSysfsTree(totalVFs: vfs, numVFs: vfs)
        tree.vfDrivers = drivers
        try tree.write(to: root)
        return root
    }

    /// A VF its PF lists is not looked at again: each VF costs the PF's `virtfnN` link only.
    @Test func findingPFsCostsOneReadPerVF() throws {
        let small = try tree(vfs: 8), large = try tree(vfs: 40)
        defer { for root in [small, large] { try? FileManager.default.removeItem(atPath: root) } }
        let smallCounter = SysfsReadCounter(), largeCounter = SysfsReadCounter()
        let smallPFs = try SysfsEnumerator(root: small).physicalFunctions(counter: smallCounter)
        let largePFs = try SysfsEnumerator(root: large).physicalFunctions(counter: largeCounter)
        #expect(smallPFs.map(\.address.description) == ["0000:3b:00.0"] && largePFs.map(\.address.description) == ["0000:3b:00.0"])
        #expect(largePFs[0].virtfns.count == 40 && largePFs[0].virtfns[39]?.description == "0000:3b:05.0")
        #expect(largeCounter.reads - smallCounter.reads == 32, "\(largeCounter.reads) reads for 40 VFs, \(smallCounter.reads) for 8")
        #expect(largePFs[0] == (try SysfsEnumerator(root: large).function(at: largePFs[0].address)))
    }

    /// A PF with `vfs` VFs at `offset` and `stride`, written to a new directory (the caller removes it).
    func layoutTree(vfs: Int, offset: Int, stride: Int) throws -> (root: String, tree: SimulatedSysfsTree) {
        let root = makeTemporaryDirectory("pf-layout")
        var tree = SimulatedSysfsTree(totalVFs: vfs, numVFs: vfs)
        tree.firstVFOffset = offset
        tree.vfStride = stride
        try tree.write(to: root)
        return (root, tree)
    }

    /// Without the VFs (as `policy apply` finds PFs), nothing is read per VF: the VFs are
    /// placed by the PF's offset and stride, and without those, read from its links.
    @Test func findingPFsWithoutVFsReadsNothingPerVF() throws {
        func scan(vfs: Int, offset: Int = 1, stride: Int = 1, dropLayout: Bool = false, wrongOffset: Bool = false) throws -> ([VirtioFunction], Int) {
            let (root, tree) = try layoutTree(vfs: vfs, offset: offset, stride: stride)
            defer { try? FileManager.default.removeItem(atPath: root) }
            let pf = SysfsEnumerator(root: root).directory(of: tree.pfAddress)
            if dropLayout {
                try FileManager.default.removeItem(atPath: pf + "/sriov_offset")
                try FileManager.default.removeItem(atPath: pf + "/sriov_stride")
            }
            if wrongOffset { try "\(offset + 1)\n".write(toFile: pf + "/sriov_offset", atomically: false, encoding: .utf8) }
            let counter = SysfsReadCounter()
            return (try SysfsEnumerator(root: root).physicalFunctions(counter: counter, withVFs: false), counter.reads)
        }
        let (small, smallReads) = try scan(vfs: 8)
        let (large, largeReads) = try scan(vfs: 40, offset: 4, stride: 2)
        #expect(largeReads == smallReads, "\(largeReads) reads for 40 VFs, \(smallReads) for 8")
        for pfs in [small, large] {
            #expect(pfs.map(\.address.description) == ["0000:3b:00.0"] && pfs[0].virtfns.isEmpty && pfs[0].role == .pf)
        }
        #expect(large[0].sriov?.numVFs == 40)
        let (unplaced, unplacedReads) = try scan(vfs: 40, dropLayout: true)
        #expect(unplaced.map(\.address.description) == ["0000:3b:00.0"] && unplaced[0].virtfns.isEmpty)
        #expect(unplacedReads > largeReads + 40, "without offset and stride the VFs' links are read: \(unplacedReads)")
        // An offset the PF's virtfn links disagree with is not trusted: the links are read.
        let (misplaced, misplacedReads) = try scan(vfs: 40, wrongOffset: true)
        #expect(misplaced.map(\.address.description) == ["0000:3b:00.0"] && misplaced[0].virtfns.isEmpty)
        #expect(misplacedReads > largeReads + 40, "a layout the links disagree with is not used: \(misplacedReads)")
    }

    /// A PF read with `vfsByLayout` has the VFs its links name, at two link reads instead of
    /// one per VF — and when its layout and links disagree, the links.
    @Test func aPFsVFsArePlacedByItsLayoutWhenItsLinksAgree() throws {
        func read(vfs: Int, offset: Int = 1, stride: Int = 1, wrongOffset: Bool = false) throws -> (byLayout: VirtioFunction, byLinks: VirtioFunction, reads: Int) {
            let (root, tree) = try layoutTree(vfs: vfs, offset: offset, stride: stride)
            defer { try? FileManager.default.removeItem(atPath: root) }
            let enumerator = SysfsEnumerator(root: root)
            if wrongOffset { try "\(offset + 1)\n".write(toFile: enumerator.directory(of: tree.pfAddress) + "/sriov_offset", atomically: false, encoding: .utf8) }
            let counter = SysfsReadCounter()
            let byLayout = try enumerator.function(at: tree.pfAddress, counter: counter, vfsByLayout: true)
            return (byLayout, try enumerator.function(at: tree.pfAddress), counter.reads)
        }
        let small = try read(vfs: 8)
        let large = try read(vfs: 40, offset: 4, stride: 2)
        #expect(large.reads == small.reads, "\(large.reads) reads for 40 VFs, \(small.reads) for 8")
        #expect(large.byLayout.virtfns == large.byLinks.virtfns && large.byLinks.virtfns.count == 40)
        #expect(large.byLayout.virtfns[39] == PCIAddress("0000:3b:00.0").map { PCIAddress(domain: 0, routingID: $0.routingID + 4 + 39 * 2) })
        let misplaced = try read(vfs: 40, wrongOffset: true)
        #expect(misplaced.byLayout.virtfns == misplaced.byLinks.virtfns && misplaced.byLinks.virtfns.count == 40)
        #expect(misplaced.reads > large.reads + 40, "a layout the links disagree with is not used: \(misplaced.reads)")
    }

    /// The in-use check reads each VF's `driver` link once and finds every bound VF.
    @Test func inUseCheckReadsOneLinkPerVF() throws {
        let root = try tree(vfs: 24, drivers: [3: "vfio-pci", 17: "virtio-pci"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let enumerator = SysfsEnumerator(root: root)
        let pf = try enumerator.function(at: PCIAddress("0000:3b:00.0")!)
        let counter = SysfsReadCounter()
        #expect(enumerator.vfDrivers(of: pf, counter: counter) == [3: "vfio-pci", 17: "virtio-pci"])
        #expect(counter.reads == 24)
        try FileManager.default.removeItem(atPath: enumerator.directory(of: PCIAddress("0000:3b:00.4")!) + "/driver")
        #expect(enumerator.vfDrivers(of: pf) == [17: "virtio-pci"], "an unbound VF is not in use")
        // A `driver` entry that cannot be read as a link (here a plain file: EINVAL) is not
        // taken for "unbound": the VF counts as in use, and the check says why.
        #expect(FileManager.default.createFile(atPath: enumerator.directory(of: PCIAddress("0000:3b:00.4")!) + "/driver", contents: Data()))
        let unreadable = enumerator.vfDrivers(of: pf)
        #expect(unreadable[17] == "virtio-pci" && unreadable.count == 2)
        #expect(unreadable[3]?.hasPrefix("an unreadable driver link (readlinkat(virtfn3/driver) failed: ") == true, "\(unreadable)")
        try FileManager.default.removeItem(atPath: enumerator.directory(of: PCIAddress("0000:3b:00.4")!) + "/driver")

        // Enough VFs for two threads: bound VFs in both halves are found, each link read once.
        let large = try tree(vfs: 300, drivers: [0: "vfio-pci", 149: "virtio-pci", 150: "vfio-pci", 299: "virtio-pci"])
        defer { try? FileManager.default.removeItem(atPath: large) }
        let largeEnumerator = SysfsEnumerator(root: large)
        let largePF = try largeEnumerator.function(at: PCIAddress("0000:3b:00.0")!)
        #expect(largePF.virtfns.count == 300 && (0..<300).allSatisfy { largePF.virtfns[$0]?.routingID == 0x3b00 + 1 + UInt16($0) },
                "the PF's links, read by two threads, each in its place")
        let largeCounter = SysfsReadCounter()
        #expect(largeEnumerator.vfDrivers(of: largePF, counter: largeCounter) == [0: "vfio-pci", 149: "virtio-pci", 150: "vfio-pci", 299: "virtio-pci"])
        #expect(largeCounter.reads == 300)
    }
}

struct SymlinkEscapeTests {
    @Test func aDeviceLinkPointingOutOfTheRootIsRefused() throws {
        let root = makeTemporaryDirectory("escape")
        try SimulatedSysfsTree(totalVFs: 1, numVFs: 1).write(to: root)
        let outside = makeTemporaryDirectory("outside")
        try FileManager.default.copyItem(atPath: root + "/devices/pci0000:00/0000:3b:00.1", toPath: outside + "/0000:3b:00.1")
        let link = root + "/bus/pci/devices/0000:3b:00.1"
        try FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: outside + "/0000:3b:00.1")
        #expect {
            try SysfsEnumerator(root: root).function(at: PCIAddress("0000:3b:00.1")!)
        } throws: { error in
            guard case LinuxError.outsideSysfsRoot(let address, let resolved, _) = error else { return false }
            return address == PCIAddress("0000:3b:00.1") && resolved.hasSuffix("/0000:3b:00.1") && !resolved.hasPrefix(root)
        }
    }
}
