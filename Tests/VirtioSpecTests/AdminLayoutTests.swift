import Testing
@testable import VirtioSpec

/// Admin command layouts, checked byte by byte against digest §7 (not against a decoder of ours).
struct AdminLayoutTests {
    static let opcodeRows: [(UInt16, String)] = [
        (0x0, "LIST_QUERY"), (0x1, "LIST_USE"), (0x2, "LEGACY_COMMON_CFG_WRITE"), (0x3, "LEGACY_COMMON_CFG_READ"),
        (0x4, "LEGACY_DEV_CFG_WRITE"), (0x5, "LEGACY_DEV_CFG_READ"), (0x6, "LEGACY_NOTIFY_INFO"),
        (0x7, "CAP_ID_LIST_QUERY"), (0x8, "DEVICE_CAP_GET"), (0x9, "DRIVER_CAP_SET"), (0xa, "RESOURCE_OBJ_CREATE"),
        (0xd, "RESOURCE_OBJ_DESTROY"), (0xe, "DEV_PARTS_METADATA_GET"), (0xf, "DEV_PARTS_GET"),
        (0x10, "DEV_PARTS_SET"), (0x11, "DEV_MODE_SET"),
    ]

    @Test("opcodes match digest §7", arguments: opcodeRows)
    func opcode(row: (UInt16, String)) {
        #expect(AdminOpcode(row.0).specName == row.1)
    }

    @Test func unnamedOpcodeIsData() {
        #expect(AdminOpcode(0x12).specName == "OPCODE_0x0012")
        #expect(AdminOpcode.firstReserved == 0x8000)
    }

    @Test func statusAndQualifierValues() {
        let statuses: [(UInt16, String)] = [(0, "OK"), (6, "ENXIO"), (11, "EAGAIN"), (12, "ENOMEM"), (16, "EBUSY"), (17, "EEXIST"), (22, "EINVAL"), (28, "ENOSPC")]
        for (value, name) in statuses { #expect(AdminStatus(rawValue: value).name == name) }
        #expect(AdminStatus(rawValue: 99).name == "status 99")
        #expect(!AdminStatus(rawValue: 99).isKnown)
        let qualifiers: [(UInt16, String)] = [(0, "OK"), (1, "INVALID_COMMAND"), (2, "INVALID_OPCODE"), (3, "INVALID_FIELD"),
                                              (4, "INVALID_GROUP"), (5, "INVALID_MEMBER"), (6, "NORESOURCE"), (7, "TRYAGAIN")]
        for (value, name) in qualifiers { #expect(AdminStatusQualifier(rawValue: value).name == name) }
        #expect(AdminGroupType.selfGroup.rawValue == 0 && AdminGroupType.srIOV.rawValue == 1)
    }

    @Test func commandHeaderBytes() {
        // opcode le16 @0, group_type le16 @2, reserved[12] @4, group_member_id le64 @16, data @24.
        let header = AdminCommandHeader(opcode: AdminOpcode(0x1234), groupType: .srIOV, memberID: GroupMemberID(vfIndex: 2))
        let bytes = header.encode(data: [0xaa, 0xbb])
        #expect(bytes.count == 26)
        #expect(Array(bytes[0..<2]) == [0x34, 0x12])
        #expect(Array(bytes[2..<4]) == [0x01, 0x00])
        #expect(Array(bytes[4..<16]) == [UInt8](repeating: 0, count: 12))
        #expect(Array(bytes[16..<24]) == [3, 0, 0, 0, 0, 0, 0, 0])  // VF index 2 is member 3
        #expect(Array(bytes[24...]) == [0xaa, 0xbb])
    }

    @Test func resultHeaderBytes() {
        // status le16 @0, status_qualifier le16 @2, reserved[4] @4, result @8.
        let bytes: [UInt8] = [22, 0, 5, 0, 0, 0, 0, 0, 0x99]
        let result = AdminResultHeader(decoding: bytes)
        #expect(result?.status == .einval)
        #expect(result?.qualifier == .invalidMember)
        #expect(AdminResultHeader(decoding: [1, 2, 3]) == nil)
        #expect(AdminResultHeader(status: .enospc, qualifier: .noResource).encode() == [28, 0, 6, 0, 0, 0, 0, 0])
    }

    @Test func memberIDNumbering() {
        #expect(GroupMemberID(vfIndex: 0).rawValue == 1)
        #expect(GroupMemberID(rawValue: 1).vfIndex == 0)
        #expect(GroupMemberID(rawValue: 0).vfIndex == nil)
    }

    @Test func opcodeBitmap() {
        let bitmap = AdminOpcodeBitmap(opcodes: [.listQuery, .listUse, AdminOpcode(0x41), AdminOpcode(0x7f)])
        #expect(bitmap.encode() == [0x03, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0x80])
        let decoded = AdminOpcodeBitmap(decoding: bitmap.encode() + [1, 2, 3])  // trailing partial word ignored
        #expect(decoded.opcodes == [AdminOpcode(0), AdminOpcode(1), AdminOpcode(0x41), AdminOpcode(0x7f)])
        #expect(AdminOpcodeBitmap(opcodes: [.listQuery]).isSubset(of: bitmap))
        #expect(!AdminOpcodeBitmap(opcodes: [AdminOpcode(0x42)]).isSubset(of: bitmap))
        #expect(AdminOpcodeBitmap().encode() == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func littleEndianHelpers() {
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes.writeLE(UInt32(0x11223344), at: 2)
        #expect(bytes == [0, 0, 0x44, 0x33, 0x22, 0x11, 0, 0])
        #expect(bytes.readLE(UInt16.self, at: 3) == 0x2233)
        #expect(bytes.readLEIfPresent(UInt64.self, at: 1) == nil)
        #expect(hexBytes([0x01, 0xab]) == "01 ab")
        #expect(hex(0x3, width: 4) == "0x0003")
    }
}
