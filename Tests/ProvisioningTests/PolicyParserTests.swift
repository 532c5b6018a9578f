import Testing
import VirtioSpec
import PCIConfig
@testable import VirtioProvisioning

/// The policy parser and the udev environment parser, as units (also run under AddressSanitizer in CI).
struct PolicyParserTests {
    static let text = """
        [defaults]
        on-failure = "keep-unbound"
        msix-vectors = 2

        [[pf]]
        match = { vendor = "0x1af4", type = "net" }
          [[pf.vf]]
          vfs = "0-3,8"
          msix-vectors = 4
          features = ["VERSION_1", "MAC"]

        [[pf]]
        match = { address = "0000:3b:00.0" }
        hold-vf-drivers = false
          [[pf.vf]]
          vfs = 5
          features-mask = "0x100000020"
        """

    @Test func parsesRulesAndResolvesDesiredResources() throws {
        let policy = try ProvisioningPolicy(text: Self.text, file: "p.toml")
        #expect(policy.pfs.count == 2)
        let net = policy.pfs[0]
        #expect(net.match.vendorID == 0x1af4 && net.match.type == .net && net.holdVFDrivers)
        #expect(net.position == SourcePosition(line: 6, column: 1))
        #expect(net.vfRules[0].vfs == .ranges([0...3, 8...8]))
        let vf2 = try #require(policy.desired(for: 2, under: net))
        #expect(vf2.msixVectors == 4 && vf2.onFailure == .keepUnbound)
        #expect(vf2.features(for: .net) == [.version1, FeatureSet(bit: 5)])
        let vf6 = try #require(policy.desired(for: 6, under: net))
        #expect(vf6.msixVectors == 2 && vf6.featureNames == nil, "defaults apply outside the VF rules")
        let second = policy.pfs[1]
        #expect(!second.holdVFDrivers)
        #expect(policy.desired(for: 5, under: second)?.featuresMask == [.version1, FeatureSet(bit: 5)])
        #expect(policy.rule(for: FunctionIdentity(address: PCIAddress3b, vendorID: 0x1af4, deviceID: 0x1042, subsystemVendorID: nil, subsystemID: nil, type: .block))?.position.line == 13)
    }

    @Test(arguments: [
        ("[defaults]\nmsix-vectors = -1\n", 2, 1, "msix-vectors -1 is out of range"),
        ("[defaults]\nfeatures = [\"MAC\"]\n", 2, 1, "features must include VERSION_1"),
        ("[defaults]\nfeatures = [\"VERSION_1\"]\nfeatures-mask = \"0x100000000\"\n", 3, 1, "give features or features-mask, not both"),
        ("[[pf]]\nmatch = { address = \"3b:00\" }\n", 2, 11, "address must be a PCI address"),
        ("[[pf]]\nmatch = { vendor = \"0x1af4\" }\n  [[pf.vf]]\n  vfs = \"3-1\"\n", 4, 3, "vfs must be \"all\""),
        ("[[pf]]\n", 1, 1, "[[pf]] needs match"),
        ("bogus = 1\n", 1, 1, "unknown key 'bogus'"),
        ("[[pf]]\nmatch = { type = \"toaster\" }\n", 2, 11, "type must be a virtio device type name"),
    ])
    func errorsCarryPositions(text: String, line: Int, column: Int, message: String) {
        #expect {
            try ProvisioningPolicy(text: text, file: "p.toml")
        } throws: { error in
            guard let error = error as? PolicyError else { return false }
            return error.position == SourcePosition(line: line, column: column) && error.message.contains(message)
        }
    }

    @Test func udevEnvironmentValidation() throws {
        let event = try UdevEvent(environment: ["ACTION": "add", "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/0000:00:01.0/0000:3b:00.2",
                                                "PCI_SLOT_NAME": "0000:3b:00.2", "PCI_ID": "1AF4:1041"])
        #expect(event.action == .add && event.address.description == "0000:3b:00.2" && event.vendorID == 0x1af4 && event.deviceID == 0x1041)
        #expect(try UdevEvent(environment: UdevEvent.environment(fromWire: event.wireLine)) == event)
        // A wire line's words: NAME=value, the value everything after the first '='; words
        // without a name or a value, and extra spaces, are skipped; a later word wins.
        #expect(UdevEvent.environment(fromWire: "  A=b  c==d =e f= g=h=i A=z é=ü x") == ["A": "z", "c": "=d", "g": "h=i", "é": "ü"])
        for devpath in ["/devices/pci0000:00/./0000:3b:00.1", "/devices/pci0000:00//0000:3b:00.1", "/devices/pci0000:00/0000:3b:00.1/", "/devices/pci0000:00/../0000:3b:00.1"] {
            #expect(throws: UdevEventError.self, "\(devpath)") { try UdevEvent(environment: ["ACTION": "add", "SUBSYSTEM": "pci", "DEVPATH": devpath]) }
        }
        #expect(try UdevEvent(environment: ["ACTION": "add", "SUBSYSTEM": "pci", "DEVPATH": "/devices/pci0000:00/.a/0000:3b:00.1"]).address.description == "0000:3b:00.1")
        #expect(throws: UdevEventError(variable: "DEVPATH", message: "is missing")) {
            try UdevEvent(environment: ["ACTION": "add", "SUBSYSTEM": "pci"])
        }
        #expect(throws: UdevEventError(variable: "ACTION", message: "holds control or non-ASCII characters")) {
            try UdevEvent(environment: ["ACTION": "add\n", "SUBSYSTEM": "pci", "DEVPATH": "/devices/0000:3b:00.2"])
        }
    }
}

let PCIAddress3b = PCIConfig.PCIAddress("0000:3b:00.0")!

struct PolicyFuzzFindingTests {
    /// Found by FuzzPolicy: bytes that made the TOML parser (toml++) abort the process.
    @Test func nonASCIIInputIsRefusedBeforeTheTOMLParser() {
        var bytes: [UInt8] = [0x5b] + Array(repeating: 0xff, count: 9) + Array("[pf]]\nmatch = {$address = \"0000:3b:00.0\" }\n  [[pf.vf]]\n".utf8)
        bytes += [0x0f, 0xdf, 0xdf, 0x89] + Array(" \"0-3\"\n".utf8)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect {
            try ProvisioningPolicy(text: text, file: "p.toml")
        } throws: { error in
            guard let error = error as? PolicyError else { return false }
            return error.position == SourcePosition(line: 1, column: 2) && error.message.contains("not printable ASCII")
        }
    }
}

struct PolicyHeaderCheckTests {
    @Test(arguments: [("[[[[pfp", 1, 3), ("[pf", 1, 4), ("[a..b]", 1, 4), ("[[pf]\n", 1, 6), ("[pf] x", 1, 6), ("$x = 1", 1, 1),
                      ("a = [\"X\", # c\n \n }4", 3, 2), ("a = { b = 1", 1, 12), ("a = 1.5", 1, 6), ("[\rz\t]", 1, 2)])
    func malformedHeadersAreRefused(text: String, line: Int, column: Int) {
        #expect {
            try ProvisioningPolicy(text: text, file: "p.toml")
        } throws: { error in
            (error as? PolicyError)?.position == SourcePosition(line: line, column: column)
        }
    }

    @Test func crlfLineEndsParse() throws {
        let policy = try ProvisioningPolicy(text: "[defaults]\r\nmsix-vectors = 2 # c\r\n", file: "p.toml")
        #expect(policy.defaults.msixVectors == 2)
    }

    @Test func multiLineArraysStillParse() throws {
        let policy = try ProvisioningPolicy(text: "[defaults]\nfeatures = [\n  \"VERSION_1\",\n  \"MAC\",  # comment\n]\n", file: "p.toml")
        #expect(policy.defaults.featureNames == ["VERSION_1", "MAC"])
    }
}
