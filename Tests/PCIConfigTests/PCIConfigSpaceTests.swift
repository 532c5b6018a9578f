import Foundation
import Testing
import VirtioSimulator
import VirtioTestSupport
@testable import PCIConfig
@testable import VirtioSpec

let device = PCIAddress("0000:3b:00.0")!

/// A 256-byte virtio config space written byte by byte (no builder), the way this host's
/// virtio-net function looks: BAR0 64-bit, common/ISR/device/notify/pci caps, MSI-X.
func handBuiltVirtioNet() -> [UInt8] {
    var c = [UInt8](repeating: 0, count: 256)
    c[0] = 0xf4; c[1] = 0x1a; c[2] = 0x41; c[3] = 0x10          // 1af4:1041
    c[4] = 0x06; c[5] = 0x04                                    // command: mem, bus master, INTx disable
    c[6] = 0x10                                                 // status: capability list
    c[8] = 0x01; c[0x09] = 0x00; c[0x0a] = 0x00; c[0x0b] = 0x02 // rev 1, class 020000
    c[0x10] = 0x04; c[0x14] = 0x40                              // BAR0 64-bit at 0x40_0000_0000
    c[0x2c] = 0xf4; c[0x2d] = 0x1a; c[0x2e] = 0x41; c[0x2f] = 0x10
    c[0x34] = 0x40
    func cap(_ at: Int, next: UInt8, len: UInt8, type: UInt8, bar: UInt8, offset: UInt32, length: UInt32, mult: UInt32? = nil) {
        c[at] = 0x09; c[at + 1] = next; c[at + 2] = len; c[at + 3] = type; c[at + 4] = bar
        for i in 0..<4 { c[at + 8 + i] = UInt8((offset >> (8 * UInt32(i))) & 0xff); c[at + 12 + i] = UInt8((length >> (8 * UInt32(i))) & 0xff) }
        if let mult { for i in 0..<4 { c[at + 16 + i] = UInt8((mult >> (8 * UInt32(i))) & 0xff) } }
    }
    cap(0x40, next: 0x50, len: 16, type: 1, bar: 0, offset: 0, length: 0x38)
    cap(0x50, next: 0x60, len: 16, type: 3, bar: 0, offset: 0x2000, length: 1)
    cap(0x60, next: 0x70, len: 16, type: 4, bar: 0, offset: 0x4000, length: 0x1000)
    cap(0x70, next: 0x84, len: 20, type: 2, bar: 0, offset: 0x6000, length: 0x1000, mult: 4)
    cap(0x84, next: 0x98, len: 20, type: 5, bar: 0, offset: 0, length: 0)
    c[0x98] = 0x11; c[0x99] = 0; c[0x9a] = 0x02; c[0x9b] = 0x80  // MSI-X, 3 vectors, enabled
    c[0x9c] = 0x00; c[0x9d] = 0x80                               // table BAR0 + 0x8000
    c[0xa0] = 0x00; c[0xa1] = 0x80; c[0xa2] = 0x04               // PBA BAR0 + 0x48000
    return c
}

struct PCIConfigSpaceTests {
    @Test func decodesHandBuiltVirtioNet() throws {
        let config = try PCIConfigSpace(decoding: handBuiltVirtioNet(), address: device, barSizes: [0x80000, 0, 0, 0, 0, 0])
        #expect(config.vendorID == 0x1af4 && config.deviceID == 0x1041)
        #expect(config.classCode == 0x020000)
        #expect(config.virtioDeviceType == .net)
        #expect(config.bars == [PCIBAR(index: 0, kind: .memory64, prefetchable: false, address: 0x40_0000_0000, size: 0x80000)])
        #expect(config.capabilities.map(\.offset) == [0x40, 0x50, 0x60, 0x70, 0x84, 0x98])
        #expect(config.virtioCapabilities.map(\.cfgType) == [.common, .isr, .device, .notify, .pci])
        let notify = try #require(config.virtioCapability(.notify))
        #expect(notify.offset == 0x6000 && notify.length == 0x1000 && notify.notifyOffMultiplier == 4)
        #expect(config.virtioCapability(.common)?.length == 0x38)
        let msix = try #require(config.msix)
        #expect(msix.tableSize == 3 && msix.enabled && !msix.functionMasked)
        #expect(msix.tableBAR == 0 && msix.tableOffset == 0x8000 && msix.pbaBAR == 0 && msix.pbaOffset == 0x48000)
        #expect(config.sriov == nil && config.extendedCapabilities.isEmpty)
    }

    @Test func truncatedHeader() {
        #expect(throws: PCIConfigError.truncated(device: device, offset: 0, needed: 64, available: 10)) {
            try PCIConfigSpace(decoding: [UInt8](repeating: 0, count: 10), address: device)
        }
    }

    @Test func truncatedCapability() {
        // A notify cap cut off by the end of a 128-byte dump.
        var bytes = Array(handBuiltVirtioNet()[0..<0x7c])
        bytes[0x71] = 0  // notify is the last capability
        #expect(throws: PCIConfigError.truncated(device: device, offset: 0x70, needed: 16, available: 12)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func capabilityPointerPastTheEnd() {
        var bytes = handBuiltVirtioNet()
        bytes[0x51] = 0x20  // ISR's next points into the standard header
        #expect(throws: PCIConfigError.capabilityPointerOutOfRange(device: device, at: 0x51, pointer: 0x20, limit: 0x100)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func capabilityPointerPastTheEndOfConfigSpace() {
        // A legacy (256-byte) dump whose chain ends at 0xff: 0xfc after masking, then the
        // next pointer there (0xfd) is read from 0xfc..0xfd, still in range; a 0xff pointer
        // in a 255-byte dump is not.
        var bytes = Array(handBuiltVirtioNet()[0..<0xfd])
        bytes[0x99] = 0xfc
        #expect(throws: PCIConfigError.truncated(device: device, offset: 0xfc, needed: 2, available: 1)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func capabilityPointerBeyondShortConfig() {
        // A 192-byte config whose chain points at 0xd0 (inside 256, outside the dump): truncation.
        var bytes = Array(handBuiltVirtioNet()[0..<0xc0])
        bytes[0x99] = 0xd0
        #expect(throws: PCIConfigError.truncated(device: device, offset: 0xd0, needed: 2, available: 0)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func capabilityLoop() {
        var bytes = handBuiltVirtioNet()
        bytes[0x99] = 0x50  // MSI-X points back to the ISR cap
        #expect(throws: PCIConfigError.capabilityLoop(device: device, at: 0x99, revisits: 0x50)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func selfLoop() {
        var bytes = handBuiltVirtioNet()
        bytes[0x41] = 0x40
        #expect(throws: PCIConfigError.capabilityLoop(device: device, at: 0x41, revisits: 0x40)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func virtioCapabilityTooShort() {
        var bytes = handBuiltVirtioNet()
        bytes[0x72] = 16  // notify cap claims 16 bytes; it needs 20
        #expect(throws: PCIConfigError.capabilityTooShort(device: device, offset: 0x70, capability: "virtio notify", length: 16, minimum: 20)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
        bytes = handBuiltVirtioNet()
        bytes[0x42] = 8
        #expect(throws: PCIConfigError.capabilityTooShort(device: device, offset: 0x40, capability: "virtio common", length: 8, minimum: 16)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func barIndexAboveFive() throws {
        // A virtio capability with a reserved BAR number (6, 7, …) is ignored, not fatal
        // (virtio 1.4 §4.1.4: "The driver MUST ignore any vendor-specific capability
        // structure which has a reserved bar value"); the rest of the decode stands.
        var bytes = handBuiltVirtioNet()
        bytes[0x64] = 6
        let decoded = try PCIConfigSpace(decoding: bytes, address: device)
        #expect(decoded.virtioCapability(.device) == nil)
        #expect(decoded.virtioCapability(.common) != nil && decoded.virtioCapability(.notify) != nil)
        bytes = handBuiltVirtioNet()
        bytes[0x9c] = 0x07  // MSI-X table BIR 7
        #expect(throws: PCIConfigError.barIndexOutOfRange(device: device, offset: 0x98, capability: "MSI-X", bar: 7)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func regionBeyondBAR() {
        // Device cfg at 0x4000 + 0x1000 in a 16K BAR.
        #expect(throws: PCIConfigError.regionBeyondBAR(device: device, offset: 0x60, capability: "virtio device", bar: 0, regionEnd: 0x5000, barSize: 0x4000)) {
            try PCIConfigSpace(decoding: handBuiltVirtioNet(), address: device, barSizes: [0x4000, 0, 0, 0, 0, 0])
        }
        // MSI-X PBA at 0x48000 + 8 in a 0x48000 BAR: the virtio regions fit, the PBA does not.
        #expect(throws: PCIConfigError.regionBeyondBAR(device: device, offset: 0x98, capability: "MSI-X PBA", bar: 0, regionEnd: 0x48008, barSize: 0x48000)) {
            try PCIConfigSpace(decoding: handBuiltVirtioNet(), address: device, barSizes: [0x48000, 0, 0, 0, 0, 0])
        }
    }

    @Test func regionInMissingBAR() {
        var bytes = handBuiltVirtioNet()
        bytes[0x44] = 2
        #expect(throws: PCIConfigError.regionInMissingBAR(device: device, offset: 0x40, capability: "virtio common", bar: 2)) {
            try PCIConfigSpace(decoding: bytes, address: device, barSizes: [0x80000, 0, 0, 0, 0, 0])
        }
    }

    @Test func sixtyFourBitBARInLastSlot() {
        var bytes = handBuiltVirtioNet()
        bytes[0x24] = 0x04
        #expect(throws: PCIConfigError.bar64InLastSlot(device: device, offset: 0x24)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func unknownCfgTypeIsIgnored() {
        var bytes = handBuiltVirtioNet()
        bytes[0x63] = 0x42
        let config = try? PCIConfigSpace(decoding: bytes, address: device)
        #expect(config?.virtioCapabilities.map(\.cfgType) == [.common, .isr, .notify, .pci])
        #expect(config?.unknownVirtioCapabilityOffsets == [0x60])
    }

    @Test func extendedCapabilityLoopAndRange() {
        var bytes = simulatedConfigSpace(SimulatedFunctionIdentity(address: device, type: .net, bar0Address: 0x1000_0000, msixTableSize: 4),
                                         sriov: SimulatedSRIOV(totalVFs: 4, numVFs: 2, vfType: .net, vfBAR0Base: 0x2000_0000))
        // SR-IOV at 0x100 points to itself.
        var header = bytes.readLE(UInt32.self, at: 0x100)
        bytes.writeLE(header | 0x100 << 20, at: 0x100)
        #expect(throws: PCIConfigError.capabilityLoop(device: device, at: 0x100, revisits: 0x100)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
        header = bytes.readLE(UInt32.self, at: 0x100) & 0x000f_ffff
        bytes.writeLE(header | 0x0ffc << 20, at: 0x100)
        // 0xffc + 4 == 0x1000 is in range: the all-zero header there is read as a capability with id 0.
        #expect((try? PCIConfigSpace(decoding: bytes, address: device))?.extendedCapabilities.map(\.offset) == [0x100, 0xffc])
        bytes.writeLE(header | 0x0040 << 20, at: 0x100)
        #expect(throws: PCIConfigError.capabilityPointerOutOfRange(device: device, at: 0x100, pointer: 0x40, limit: 0x1000)) {
            try PCIConfigSpace(decoding: bytes, address: device)
        }
    }

    @Test func sriovCapabilityAndVFAddresses() throws {
        let bytes = simulatedConfigSpace(SimulatedFunctionIdentity(address: device, type: .net, bar0Address: 0x1000_0000, msixTableSize: 4),
                                         sriov: SimulatedSRIOV(totalVFs: 16, numVFs: 3, firstVFOffset: 2, vfStride: 2, vfType: .block, vfBAR0Base: 0x2000_0000))
        let config = try PCIConfigSpace(decoding: bytes, address: device)
        let sriov = try #require(config.sriov)
        #expect(sriov.totalVFs == 16 && sriov.numVFs == 3 && sriov.initialVFs == 16)
        #expect(sriov.firstVFOffset == 2 && sriov.vfStride == 2 && sriov.vfDeviceID == 0x1042)
        #expect(sriov.vfEnabled)
        #expect(sriov.vfAddress(pf: device, index: 0) == PCIAddress("0000:3b:00.2"))
        #expect(sriov.vfAddress(pf: device, index: 3) == PCIAddress("0000:3b:01.0"))
        #expect(sriov.vfBARs[0] & 0x6 == 0x4 && sriov.vfBARs[1] == 0)
        #expect(config.pciExpress?.version == 2)
    }

    @Test func randomBytesNeverTrap() {
        // Device input is untrusted: any bytes decode or throw, never crash.
        var generator = SystemRandomNumberGenerator()
        for length in [0, 63, 64, 100, 256, 4096] {
            for _ in 0..<200 {
                var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if length >= 64 { bytes[6] |= 0x10; bytes[0] = 0xf4; bytes[1] = 0x1a }
                _ = try? PCIConfigSpace(decoding: bytes, address: device, barSizes: [0x1000, 0, 0, 0, 0, 0])
            }
        }
    }

    @Test func resourceSizes() {
        let text = "0x0000004000100000 0x000000400017ffff 0x0000000000140204\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        #expect(parseResourceSizes(text) == [0x80000, 0])
    }

    @Test func addresses() {
        #expect(PCIAddress("0000:00:03.0")?.description == "0000:00:03.0")
        #expect(PCIAddress("3b:1f.7") == PCIAddress(domain: 0, bus: 0x3b, device: 0x1f, function: 7))
        #expect(PCIAddress("10000:3B:00.1")?.description == "10000:3b:00.1")
        #expect(PCIAddress("ffffffff:ff:1f.7")?.description == "ffffffff:ff:1f.7")
        #expect(PCIAddress("a:3:4.1")?.description == "000a:03:04.1")
        for bad in ["", "zz", "00:20.0", "00:00.8", "0000:00:00", "0000:000:00.0", "0000:00:00.0.0", "g000:00:00.0", "0000:00:00.-1",
                    "0:0:0:00.0", ":00:00.0", "0000::00.0", "0000:00:.0", "123456789:00:00.0", "+000:00:00.0", "0000:00:00."] {
            #expect(PCIAddress(bad) == nil, "\(bad) should not parse")
        }
        let pf = PCIAddress("0000:3b:00.0")!
        #expect(PCIAddress(domain: 0, routingID: pf.routingID + 9) == PCIAddress("0000:3b:01.1"))
    }

    /// The byte-level address parser accepts exactly what the rule says: `[DDDD:]BB:DD.F`,
    /// 1–8 / 1–2 / 1–2 / 1 hex digits, device < 32, function < 8 (checked against a
    /// reference written from the rule on 20 000 strings from a fixed seed).
    @Test func addressParserFollowsTheRule() {
        func reference(_ text: String) -> PCIAddress? {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2 || parts.count == 3 else { return nil }
            let (domain, bus, slot) = parts.count == 3 ? (parts[0], parts[1], parts[2]) : ("0", parts[0], parts[1])
            let slotParts = slot.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            let hex = { (text: String, lengths: ClosedRange<Int>) -> UInt32? in
                guard lengths.contains(text.count), text.allSatisfy(\.isHexDigit), text.allSatisfy(\.isASCII) else { return nil }
                return UInt32(text, radix: 16)
            }
            guard slotParts.count == 2, let d = hex(domain, 1...8), let b = hex(bus, 1...2), let dev = hex(slotParts[0], 1...2),
                  let fn = hex(slotParts[1], 1...1), dev < 32, fn < 8 else { return nil }
            return PCIAddress(domain: d, bus: UInt8(b), device: UInt8(dev), function: UInt8(fn))
        }
        let alphabet = Array("0123456789abcdefABCDEF:.:.g+- 0f1")
        var seed: UInt64 = 0x5eed
        var accepted = 0
        for _ in 0..<20_000 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let length = Int(seed >> 59)
            var text = ""
            for index in 0..<length { text.append(alphabet[Int((seed >> UInt64(index * 3 % 58)) % UInt64(alphabet.count))]) }
            if Int(seed >> 40) % 3 == 0 { text = String(seed % 0x10000, radix: 16) + ":" + String(seed >> 16 % 0x100, radix: 16).prefix(2) + ":" + String(seed >> 24 % 32, radix: 16) + "." + String(seed >> 32 % 9) }
            let ours = PCIAddress(text)
            #expect(ours == reference(text), "\(text)")
            if let ours {
                accepted += 1
                #expect(PCIAddress(ours.description) == ours)
            }
        }
        #expect(accepted > 100, "the generator reaches valid addresses")
    }

    /// The independent decoder: lspci -F reads a `-xxxx` hex dump of our config space.
    @Test func lspciDecodesTheSameConfigSpace() throws {
        guard let lspci = lspciPath else {
            print("skipped: lspci is not installed (apt-get install pciutils)")
            return
        }
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pfBytes = simulatedConfigSpace(SimulatedFunctionIdentity(address: device, type: .net, bar0Address: 0x38_0000_0000, msixTableSize: 8),
                                           sriov: SimulatedSRIOV(totalVFs: 8, numVFs: 2, vfType: .net, vfBAR0Base: 0x38_1000_0000))
        let samples: [(String, [UInt8])] = [("3b:00.0", pfBytes), ("00:03.0", handBuiltVirtioNet())]
        for (slot, bytes) in samples {
            let path = directory + "/dump-\(slot.replacingOccurrences(of: ":", with: "_"))"
            try lspciHexDump(slot: slot, config: bytes).write(toFile: path, atomically: true, encoding: .utf8)
            let output = try runProgram(lspci, ["-F", path, "-vvv"]).output
            let theirs = try #require(parseLspci(output.replacingOccurrences(of: "\(slot) ", with: "0000:\(slot) ")).values.first)
            let ours = try PCIConfigSpace(decoding: bytes, address: PCIAddress(slot)!)
            #expect(theirs.capabilityOffsets == ours.capabilities.map(\.offset))
            #expect(theirs.virtioCaps.map(\.capabilityOffset) == ours.virtioCapabilities.map(\.capabilityOffset))
            for (their, our) in zip(theirs.virtioCaps, ours.virtioCapabilities) {
                #expect(their.kind == lspciVirtioName(our.cfgType.name))
                #expect(their.bar == our.bar && their.offset == our.offset && their.size == our.length)
                #expect(their.multiplier == our.notifyOffMultiplier)
            }
            let msix = try #require(theirs.msix)
            #expect(msix.count == ours.msix?.tableSize && msix.enabled == ours.msix?.enabled)
            #expect(msix.tableBAR == ours.msix?.tableBAR && msix.tableOffset == UInt64(ours.msix!.tableOffset))
            #expect(msix.pbaBAR == ours.msix?.pbaBAR && msix.pbaOffset == UInt64(ours.msix!.pbaOffset))
            #expect(theirs.regions.map(\.address) == ours.bars.map(\.address))
            if let sriov = ours.sriov {
                let their = try #require(theirs.sriov)
                #expect(their == LspciFunction.SRIOV(initialVFs: sriov.initialVFs, totalVFs: sriov.totalVFs, numVFs: sriov.numVFs,
                                                     vfOffset: sriov.firstVFOffset, vfStride: sriov.vfStride, vfDeviceID: sriov.vfDeviceID))
            }
        }
    }
}
