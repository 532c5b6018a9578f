import Testing
import PCIConfig
import VirtioSpec
@testable import VirtioProvisioning

/// The one reader of a policy file (`PolicyReader`): the TOML subset it accepts, the positions
/// it records, and what it refuses with `FILE:LINE:COLUMN: message`.
struct PolicyReaderTests {
    static func error(_ text: String) -> PolicyError? {
        do { _ = try ProvisioningPolicy(text: text, file: "p.toml"); return nil } catch { return error }
    }

    @Test func recordsThePositionOfEveryKeyAndValue() throws {
        let root = try PolicyReader.read("[[pf]]\n  match = { vendor = 0x1af4, type = \"net\" }\n  hold-vf-drivers = false\n", file: "p.toml")
        let pfs = try #require(root["pf"]?.array)
        let pf = try #require(pfs.first?.table)
        #expect(pf.position == SourcePosition(line: 1, column: 1), "an array-of-tables element starts at its header")
        #expect(pf.keyPosition("match") == SourcePosition(line: 2, column: 3))
        let match = try #require(pf["match"]?.table)
        #expect(match.position == SourcePosition(line: 2, column: 11), "an inline table starts at its brace")
        #expect(match.keyPosition("vendor") == SourcePosition(line: 2, column: 13))
        #expect(match["vendor"]?.position == SourcePosition(line: 2, column: 22) && match["vendor"]?.int == 0x1af4)
        #expect(match.keyPosition("type") == SourcePosition(line: 2, column: 30))
        #expect(match["type"]?.position == SourcePosition(line: 2, column: 37) && match["type"]?.string == "net")
        #expect(pf.keyPosition("hold-vf-drivers") == SourcePosition(line: 3, column: 3) && pf["hold-vf-drivers"]?.bool == false)
    }

    @Test func decodesStringEscapesAndIntegerForms() throws {
        let root = try PolicyReader.read("s = \"a\\\"b\\\\c\\td\"\nh = 0xAB_cd\nd = +1_000\nn = -42\nz = 0\n", file: "p.toml")
        #expect(root["s"]?.string == "a\"b\\c\td")
        #expect(root["h"]?.int == 0xabcd && root["d"]?.int == 1000 && root["n"]?.int == -42 && root["z"]?.int == 0)
        #expect(try PolicyReader.read("m = -9223372036854775808\n", file: "p.toml")["m"]?.int == Int.min)
    }

    @Test func headerAndDottedFormsOfAPolicyParse() throws {
        let policy = try ProvisioningPolicy(text: """
            [[pf]]
            [pf.match]
            type = "net"
              [[pf.vf]]
              vfs = 1
              msix-vectors = 3
            [[pf]]
            match.vendor = "0x1af4"
            match.subsystem-device = 0x0001
            """, file: "p.toml")
        #expect(policy.pfs.count == 2)
        #expect(policy.pfs[0].match.type == .net && policy.pfs[0].vfRules.first?.resources.msixVectors == 3)
        #expect(policy.pfs[0].vfRules.first?.position == SourcePosition(line: 5, column: 3))
        #expect(policy.pfs[1].match.vendorID == 0x1af4 && policy.pfs[1].match.subsystemID == 1)
        #expect(policy.pfs[1].position == SourcePosition(line: 8, column: 1))
    }

    @Test func commentsMayHoldAnyTextButControlCharacters() throws {
        let policy = try ProvisioningPolicy(text: "# Grüße — politique\n[defaults]\nmsix-vectors = 2 # ✓ vecteurs\n", file: "p.toml")
        #expect(policy.defaults.msixVectors == 2)
        let error = try #require(Self.error("[defaults] # bell \u{07}\n"))
        #expect(error.position == SourcePosition(line: 1, column: 19) && error.message == "a control character (0x07) in a comment.")
    }

    @Test(arguments: [
        ("[defaults]\nmsix-vectors = 2\nmsix-vectors = 3\n", 3, 1, "duplicate key 'msix-vectors': it is already set at line 2."),
        ("[[pf]]\nmatch = { type = \"net\", type = \"block\" }\n", 2, 25, "duplicate key 'type': it is already set at line 2."),
        ("[defaults]\n[defaults]\n", 2, 1, "table [defaults] is defined twice; the first is at line 1."),
        ("[[pf]]\nmatch = { type = \"net\" }\n[pf]\n", 3, 1, "[pf] names an array of tables (line 1): write [[pf]]."),
        ("[[pf]]\nmatch = { type = \"net\" }\n[pf.match]\nvendor = 1\n", 3, 1, "[pf.match]: 'match' is an inline table (line 2), complete as written; add its keys there."),
        ("defaults = 1\n[defaults]\n", 2, 1, "[defaults]: 'defaults' is already a number (line 1)."),
        ("pf = []\n[[pf]]\n", 2, 1, "[[pf]]: 'pf' is already an array (line 1), not an array of tables."),
        ("[[pf.vf]]\nvfs = 1\n", 1, 1, "pf must be an array of tables: write [[pf]]."),
        ("[defaults]\non-failure = 'keep-unbound'\n", 2, 14, "literal strings ('...') are not used."),
        ("[defaults]\non-failure = \"\"\"keep-unbound\"\"\"\n", 2, 14, "multi-line strings"),
        ("[defaults]\nmsix-vectors = 007\n", 2, 16, "a decimal number does not start with 0"),
        ("[defaults]\nmsix-vectors = 99999999999999999999\n", 2, 16, "the number is too large"),
        ("[defaults]\nmsix-vectors = 1__0\n", 2, 18, "'_' in a number must stand between two digits."),
        ("[defaults]\nmsix-vectors = -0x4\n", 2, 16, "a hexadecimal number has no sign."),
        ("[defaults]\nmsix-vectors = 2025-01-01\n", 2, 20, "floating-point numbers and dates are not used in a policy."),
        ("[defaults]\nhold-vf-drivers = truely\n", 2, 19, "expected a value"),
        ("[defaults]\non-failure = \"keep\\-unbound\"\n", 2, 20, "unsupported escape in a string"),
        ("[defaults]\non-failure = \"caf\u{e9}\"\n", 2, 18, "byte 0xc3 is not printable ASCII"),
        ("# a\rb\n", 1, 4, "a carriage return (0x0d) may only end a line"),
        ("[defaults]\nmsix-vectors = 1\rx = 2\n", 2, 17, "a carriage return (0x0d) may only end a line"),
        ("a = [[[[[[[[[1]]]]]]]]]\n", 1, 13, "values are nested too deeply."),
    ])
    func refusesWhatItDoesNotAcceptWithFileLineColumn(text: String, line: Int, column: Int, message: String) throws {
        let error = try #require(Self.error(text))
        #expect(error.position == SourcePosition(line: line, column: column), "\(error)")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.description.hasPrefix("p.toml:\(line):\(column): "))
    }

    /// Matching takes one value: the function's identity; every field a rule gives must match.
    @Test func rulesMatchAFunctionIdentity() throws {
        let policy = try ProvisioningPolicy(text: """
            [[pf]]
            match = { vendor = "0x1af4", subsystem-device = "0x0001" }
            [[pf]]
            match = { address = "0000:3b:00.0", type = "net" }
            """, file: "p.toml")
        let address = try #require(PCIAddress("0000:3b:00.0"))
        let other = try #require(PCIAddress("0000:5e:00.0"))
        #expect(policy.rule(for: FunctionIdentity(address: other, vendorID: 0x1af4, deviceID: 0x1041, subsystemID: 1))?.position.line == 2)
        #expect(policy.rule(for: FunctionIdentity(address: other, vendorID: 0x1af4, deviceID: 0x1041, subsystemID: 2)) == nil)
        #expect(policy.rule(for: FunctionIdentity(address: other, vendorID: 0x1af4, deviceID: 0x1041)) == nil, "an absent subsystem id does not match a given one")
        #expect(policy.rule(for: FunctionIdentity(address: address, vendorID: 0x1af4, deviceID: 0x1041, subsystemID: 2, type: .net))?.position.line == 4)
        #expect(policy.rule(for: FunctionIdentity(address: address, vendorID: 0x1af4, deviceID: 0x1042, subsystemID: 2, type: .block)) == nil)
    }
}
