import ResourceManager
import Testing
import VirtioSpec

/// A VF number is read from text once; its member id comes from GroupMemberID(vfIndex:).
@Suite struct VFNumberTests {
    @Test func aVFIndexIsReadOnceAndItsMemberIdIsTheVFNumber() throws {
        let vf = try #require(VFNumber("3"))
        #expect(vf.index == 3)
        // Digest §7: group_member_id for SR-IOV is the VF number, starting at 1 (virtfnN + 1).
        #expect(vf.member.rawValue == 4)
        #expect(try #require(VFNumber("0")).member.rawValue == 1)
        #expect(VFNumber("65534")?.index == 65534)
        for bad in ["-1", "x", "", "3.0", "65535", "0x3"] { #expect(VFNumber(bad) == nil, "'\(bad)'") }
        #expect(VFNumber(index: -1) == nil)
    }

    @Test func stringArgumentsAreReadOnceAndABadVFIsOneSentence() throws {
        let good = PluginArguments(["vf": ["7"], "vectors": ["2"]])
        #expect(good.vf == VFNumber(index: 7) && good.namesVF)
        let bad = PluginArguments(["vf": ["seven"]])
        #expect(bad.vf == nil && bad.namesVF)
        #expect(PluginArguments([:]).namesVF == false)
    }

    @Test func aTypedVFIsWhatCPluginsReadAsText() throws {
        let vf = try #require(VFNumber(index: 3))
        let arguments = PluginArguments(["vectors": ["2"]], vf: vf)
        #expect(arguments.vf == vf)
        #expect(arguments.string("vf") == "3")
        #expect(arguments.values == ["vf": ["3"], "vectors": ["2"]])
        // A typed VF replaces whatever text the host had under "vf".
        #expect(PluginArguments(["vf": ["0000:3b:00.4"]], vf: vf).values["vf"] == ["3"])
    }
}
