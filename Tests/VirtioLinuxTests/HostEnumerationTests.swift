import Foundation
import Testing
import VirtioTestSupport
@testable import PCIConfig
@testable import VirtioLinux
import VirtioSystem

/// Read-only checks against this machine's own virtio functions. Nothing here writes to,
/// binds, unbinds or maps a host device: it reads sysfs attributes and `config` only.
struct HostEnumerationTests {
    static var hostHasVirtio: Bool {
        (try? SysfsEnumerator().functions().isEmpty == false) ?? false
    }

    @Test func bothBackEndsAgree() throws {
        let fromSysfs = try SysfsEnumerator().functions()
        guard !fromSysfs.isEmpty else {
            print("skipped: this machine has no virtio PCI functions")
            return
        }
        let fromUdev = try UdevEnumerator().functions()
        #expect(fromUdev == fromSysfs)
        for function in fromSysfs {
            #expect(function.vendorID == 0x1af4)
            #expect(function.type != nil, "\(function.address) has no virtio type")
            #expect(function.role == .function, "host functions have no SR-IOV here")
        }
    }

    @Test func decodedCapabilitiesEqualLspci() throws {
        let functions = try SysfsEnumerator().functions()
        guard !functions.isEmpty else {
            print("skipped: this machine has no virtio PCI functions")
            return
        }
        guard lspciPath != nil else {
            print("skipped: lspci is not installed (apt-get install pciutils)")
            return
        }
        let lspci = try lspciFunctions()
        var compared = 0
        for function in functions {
            let result = Result { () throws(LinuxError) -> FunctionDetails in try SysfsEnumerator().details(of: function.address) }
            if case .failure(.configRestricted) = result {
                print("skipped \(function.address): config space needs root")
                continue
            }
            let details = try result.get()
            let theirs = try #require(lspci[function.address.description], "lspci does not list \(function.address)")
            let ours = details.config
            #expect(theirs.capabilityOffsets == ours.capabilities.map(\.offset))
            #expect(theirs.virtioCaps.count == ours.virtioCapabilities.count)
            for (their, our) in zip(theirs.virtioCaps, ours.virtioCapabilities) {
                #expect(their.capabilityOffset == our.capabilityOffset)
                #expect(their.kind == lspciVirtioName(our.cfgType.name), "\(function.address) cap \(our.capabilityOffset)")
                #expect(their.bar == our.bar)
                #expect(their.offset == our.offset)
                #expect(their.size == our.length)
                #expect(their.multiplier == our.notifyOffMultiplier)
            }
            if let msix = ours.msix {
                let their = try #require(theirs.msix)
                #expect(their.capabilityOffset == msix.capabilityOffset)
                #expect(their.count == msix.tableSize && their.enabled == msix.enabled)
                #expect(their.tableBAR == msix.tableBAR && their.tableOffset == UInt64(msix.tableOffset))
                #expect(their.pbaBAR == msix.pbaBAR && their.pbaOffset == UInt64(msix.pbaOffset))
            } else {
                #expect(theirs.msix == nil)
            }
            #expect(theirs.regions.map(\.index) == ours.bars.map(\.index))
            #expect(theirs.regions.map(\.address) == ours.bars.map(\.address))
            compared += 1
        }
        print("compared \(compared) host virtio functions with lspci -vvv")
    }

    @Test func unknownAndNonVirtioAddresses() throws {
        let enumerator = SysfsEnumerator()
        #expect(throws: LinuxError.noSuchDevice(address: PCIAddress("0000:fe:1f.7")!, path: "/sys/bus/pci/devices/0000:fe:1f.7")) {
            try enumerator.function(at: PCIAddress("0000:fe:1f.7")!)
        }
        let nonVirtio = try Sys.listDirectory(enumerator.devicesDirectory).compactMap(PCIAddress.init).first { address in
            (try? Sys.readText(enumerator.directory(of: address) + "/vendor")).map { !$0.hasPrefix("0x1af4") } ?? false
        }
        if let nonVirtio {
            #expect {
                try enumerator.function(at: nonVirtio)
            } throws: { error in
                guard case LinuxError.notVirtio(let address, _, _) = error else { return false }
                return address == nonVirtio
            }
        }
    }

    @Test func missingSysfsRoot() {
        #expect(throws: LinuxError.sysfsMissing(path: "/nonexistent/bus/pci/devices")) {
            try SysfsEnumerator(root: "/nonexistent").functions()
        }
    }
}
