import PCIConfig
import VirtioAdminDriver
import VirtioProjectCommands
import VirtioSpec
import VirtioTransport

/// One documented check of a device's admin facility against a device-side rule of the spec.
public struct ConformanceCheck: Sendable, Hashable {
    /// Stable identifier (`invalid-group`, …).
    public let id: String
    /// What a conforming device does, in one sentence.
    public let rule: String
    /// Where the rule is: file and lines in oasis-tcs/virtio-spec v1.4-cs01.
    public let spec: String
}

public enum ConformanceOutcome: String, Sendable, Hashable {
    case pass = "PASS", fail = "FAIL", skip = "SKIP"
}

public struct ConformanceResult: Sendable, Hashable {
    public let check: ConformanceCheck
    public let outcome: ConformanceOutcome
    /// What was seen (for FAIL and SKIP: why).
    public let detail: String
}

/// The outcome of a run: one result per check, in the documented order.
public struct ConformanceReport: Sendable {
    public let device: PCIAddress
    public let results: [ConformanceResult]
    /// Set when the admin queue could not be opened at all (every check is then SKIP).
    public let openError: AdminError?
    public var passed: Int { results.count { $0.outcome == .pass } }
    public var failed: Int { results.count { $0.outcome == .fail } }
    public var skipped: Int { results.count { $0.outcome == .skip } }
    public func outcome(of id: String) -> ConformanceOutcome? { results.first { $0.check.id == id }?.outcome }
}

/// Checks a group owner's admin facility (through its admin virtqueue) against the
/// device-side rules of the virtio 1.4 admin chapter: header and result layout, statuses
/// for a bad group / opcode / member and the order they are checked in, the LIST_QUERY /
/// LIST_USE rules, processing in queue order, truncation of short results, the VF Enable
/// rule and reset behaviour. It uses the project's own driver, so what it sends is what a
/// conforming driver sends (parts padded to 8 bytes, LIST_USE alone on the queue).
///
/// Side effects on the device: it is reset several times, and — only when the device lists
/// the project's MAC_GET/MAC_SET — VF 0's MAC is changed twice and then restored.
public struct ConformanceSuite: Sendable {
    public static let checks: [ConformanceCheck] = [
        ConformanceCheck(id: "admin-queue-fields", rule: "admin_queue_num is at least 1 and admin_queue_index is at least num_queues (admin queues come after the others)",
                         spec: "transport-pci.tex:352-354,418-430,491-496"),
        ConformanceCheck(id: "list-query-lists-itself", rule: "LIST_QUERY succeeds in every group the device has and sets bits 0 (LIST_QUERY) and 1 (LIST_USE)",
                         spec: "admin.tex:285-288"),
        ConformanceCheck(id: "ok-qualifier-zero", rule: "status_qualifier is 0 when status is OK", spec: "admin.tex:204-205"),
        ConformanceCheck(id: "invalid-group", rule: "a reserved group type fails with EINVAL / Q_INVALID_GROUP", spec: "admin.tex:88-93,344-357"),
        ConformanceCheck(id: "group-checked-first", rule: "the group type is checked before the opcode (unlisted opcode + reserved group type → Q_INVALID_GROUP)",
                         spec: "admin.tex:344-357"),
        ConformanceCheck(id: "invalid-opcode", rule: "an opcode the group does not list fails with EINVAL / Q_INVALID_OPCODE", spec: "admin.tex:395-399"),
        ConformanceCheck(id: "invalid-member", rule: "an SR-IOV member id outside 1..NumVFs (0 and NumVFs+1) fails with EINVAL / Q_INVALID_MEMBER",
                         spec: "admin.tex:417-432"),
        ConformanceCheck(id: "list-use-enforced", rule: "a listed opcode that the last LIST_USE did not enable fails with EINVAL / Q_INVALID_OPCODE",
                         spec: "admin.tex:391-399"),
        ConformanceCheck(id: "in-order", rule: "the commands of one admin queue are processed in queue order", spec: "admin.tex:600-601"),
        ConformanceCheck(id: "truncation", rule: "a result longer than the writable buffer is truncated (status OK, used length = bytes written), not failed",
                         spec: "admin.tex:540-546,573-582,589-591"),
        ConformanceCheck(id: "vf-enable", rule: "while VF Enable is clear every SR-IOV group command fails with EINVAL / Q_INVALID_GROUP, LIST_QUERY included",
                         spec: "admin.tex:417-423"),
        ConformanceCheck(id: "reset", rule: "after 0 is written to device_status it reads 0 (within 1 s)", spec: "transport-pci.tex §4.1.4.3.2; content.tex §2.1"),
        ConformanceCheck(id: "reset-clears-list-use", rule: "after a reset only LIST_QUERY and LIST_USE are legal until a LIST_USE succeeds",
                         spec: "admin.tex:239-242,385-389"),
    ]

    public let transport: ModernPCITransport
    public let allocator: any DMAAllocator
    /// NumVFs of the PF (0 = VF Enable clear).
    public let numVFs: Int
    /// Project-defined opcodes (for the in-order check, which needs a state-changing
    /// command and a command reading that state back).
    public let projectOpcodes: ProjectOpcodeTable
    public var driverOptions: AdminQueueDriver.Options
    public var trace: (@Sendable (AdminTraceEvent) -> Void)?

    public init(transport: ModernPCITransport, allocator: any DMAAllocator, numVFs: Int, projectOpcodes: ProjectOpcodeTable = .default,
                driverOptions: AdminQueueDriver.Options = AdminQueueDriver.Options(), trace: (@Sendable (AdminTraceEvent) -> Void)? = nil) {
        self.transport = transport
        self.allocator = allocator
        self.numVFs = numVFs
        self.projectOpcodes = projectOpcodes
        self.driverOptions = driverOptions
        self.driverOptions.wantedOpcodes = nil
        self.driverOptions.resetTimeout = .seconds(1)
        self.trace = trace
    }

    static let einval: UInt16 = 22
    static let invalidOpcode: UInt16 = 0x02
    static let invalidGroup: UInt16 = 0x04
    static let invalidMember: UInt16 = 0x05
    static let reservedGroup = AdminGroupType(rawValue: 7)

    /// Runs every check and leaves the device reset.
    public func run() async -> ConformanceReport {
        var results: [String: (ConformanceOutcome, String)] = [:]
        func record(_ id: String, _ outcome: ConformanceOutcome, _ detail: String) { results[id] = (outcome, detail) }
        func report(_ openError: AdminError? = nil) -> ConformanceReport {
            ConformanceReport(device: transport.address, results: Self.checks.map { check in
                let (outcome, detail) = results[check.id] ?? (.skip, openError.map { "the admin queue could not be opened: \($0)" } ?? "not run")
                return ConformanceResult(check: check, outcome: outcome, detail: detail)
            }, openError: openError)
        }
        func seen(_ response: AdminResponse) -> String { "status \(response.status.name), qualifier \(response.qualifier.name)" }
        func expect(_ id: String, _ response: Result<AdminResponse, AdminError>, qualifier: UInt16, _ what: String) {
            switch response {
            case .success(let r) where r.status.rawValue == Self.einval && r.qualifier.rawValue == qualifier:
                record(id, .pass, "\(what): \(seen(r))")
            case .success(let r): record(id, .fail, "\(what): \(seen(r)); expected EINVAL and \(AdminStatusQualifier(rawValue: qualifier).name)")
            case .failure(let error): record(id, .fail, "\(what): \(error)")
            }
        }

        let driver: AdminQueueDriver
        do {
            driver = try await AdminQueueDriver.open(transport: transport, allocator: allocator, options: driverOptions, trace: trace)
        } catch {
            return report(error)
        }
        if let admin = transport.adminQueues {
            let numQueues = transport.numQueues
            let good = admin.count >= 1 && admin.index >= numQueues
            record("admin-queue-fields", good ? .pass : .fail, "num_queues \(numQueues), admin_queue_index \(admin.index), admin_queue_num \(admin.count)")
        }
        let srIOV = driver.unavailability(of: .srIOV) == nil && !driver.supported(in: .srIOV).opcodes.isEmpty
        let selfGroup = driver.unavailability(of: .selfGroup) == nil && !driver.supported(in: .selfGroup).opcodes.isEmpty
        // The group the generic checks use, and a valid member in it.
        let group: AdminGroupType? = srIOV && numVFs > 0 ? .srIOV : (selfGroup ? .selfGroup : nil)
        let validMember = group == .srIOV ? GroupMemberID(vfIndex: 0) : GroupMemberID.none
        let listedAnywhere = driver.supported
        let readOnly: [AdminOpcode] = [AdminOpcode(0x3), AdminOpcode(0x5), AdminOpcode(0x6), AdminOpcode(0x7), AdminOpcode(0xe),
                                       projectOpcodes.msixGet, projectOpcodes.featuresGet, projectOpcodes.featuresCapsGet,
                                       projectOpcodes.macGet, projectOpcodes.msixPoolGet]
        let probe = group.flatMap { g in readOnly.first { driver.supported(in: g).contains($0) } }

        // list-query-lists-itself, ok-qualifier-zero
        var listDetails: [String] = []
        var listOK = true
        var qualifierOK = true
        for g in [AdminGroupType.srIOV, .selfGroup] where (g == .srIOV ? srIOV : selfGroup) {
            let result = await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listQuery, groupType: g, resultLength: 64)) }
            guard case .success(let response) = result else { listOK = false; listDetails.append("\(g): \(result)"); continue }
            let bitmap = AdminOpcodeBitmap(decoding: response.result)
            let good = response.status == .ok && bitmap.contains(.listQuery) && bitmap.contains(.listUse)
            listOK = listOK && good
            qualifierOK = qualifierOK && (response.status != .ok || response.qualifier.rawValue == 0)
            listDetails.append("\(g): \(seen(response)), lists \(bitmap.opcodes.map { hex($0.rawValue, width: 4) }.joined(separator: " "))")
        }
        if listDetails.isEmpty {
            record("list-query-lists-itself", .skip, "no group answered LIST_QUERY at open")
            record("ok-qualifier-zero", .skip, "no successful command")
        } else {
            record("list-query-lists-itself", listOK ? .pass : .fail, listDetails.joined(separator: "; "))
            record("ok-qualifier-zero", qualifierOK ? .pass : .fail, qualifierOK ? "qualifier 0 on every OK" : "an OK status came with a non-zero qualifier")
        }

        // invalid-group, group-checked-first, invalid-opcode
        expect("invalid-group", await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listQuery, groupType: Self.reservedGroup, resultLength: 64)) },
               qualifier: Self.invalidGroup, "LIST_QUERY with group type 7")
        let unlisted = (0x13..<0x8000).lazy.map { AdminOpcode(UInt16($0)) }.first { !listedAnywhere.contains($0) }!
        expect("group-checked-first", await attempt {
            try await driver.submitUnchecked(AdminCommand(opcode: unlisted, groupType: Self.reservedGroup, member: GroupMemberID(rawValue: 1), resultLength: 64))
        }, qualifier: Self.invalidGroup, "unlisted opcode \(hex(unlisted.rawValue, width: 4)) with group type 7")
        if let group {
            expect("invalid-opcode", await attempt {
                try await driver.submitUnchecked(AdminCommand(opcode: unlisted, groupType: group, member: validMember, resultLength: 64))
            }, qualifier: Self.invalidOpcode, "unlisted opcode \(hex(unlisted.rawValue, width: 4)) in the \(group) group")
        } else {
            record("invalid-opcode", .skip, "no group is usable (VF Enable clear and no self group)")
        }

        // invalid-member
        // Only a read-only command: a device that wrongly accepts the member must not be changed.
        if srIOV && numVFs > 0, let opcode = readOnly.first(where: { driver.inUse(in: .srIOV).contains($0) }) {
            var details: [String] = []
            var pass = true
            for member in [UInt64(0), UInt64(numVFs) + 1] {
                let result = await attempt {
                    try await driver.submitUnchecked(AdminCommand(opcode: opcode, groupType: .srIOV, member: GroupMemberID(rawValue: member), resultLength: 64))
                }
                if case .success(let r) = result, r.status.rawValue == Self.einval, r.qualifier.rawValue == Self.invalidMember {
                    details.append("member \(member): \(seen(r))")
                } else {
                    pass = false
                    details.append("member \(member): \((try? result.get()).map(seen) ?? "\(result)"); expected EINVAL and INVALID_MEMBER")
                }
            }
            record("invalid-member", pass ? .pass : .fail, "opcode \(hex(opcode.rawValue, width: 4)): " + details.joined(separator: "; "))
        } else {
            record("invalid-member", .skip, numVFs == 0 ? "no VFs (VF Enable clear)" : "the SR-IOV group enables no read-only command that names a member")
        }

        // list-use-enforced: enable only LIST_QUERY/LIST_USE, try a listed read-only command, restore.
        if let group, let probe {
            let restore = driver.inUse(in: group)
            let narrowed = await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listUse, groupType: group, data: AdminOpcodeBitmap(opcodes: [.listQuery, .listUse]).encode())) }
            if case .success(let r) = narrowed, r.status == .ok {
                expect("list-use-enforced", await attempt {
                    try await driver.submitUnchecked(AdminCommand(opcode: probe, groupType: group, member: validMember, resultLength: 64))
                }, qualifier: Self.invalidOpcode, "listed opcode \(hex(probe.rawValue, width: 4)) after LIST_USE of {0x0000, 0x0001}")
            } else {
                record("list-use-enforced", .fail, "LIST_USE of {LIST_QUERY, LIST_USE} was refused: \(narrowed)")
            }
            _ = await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listUse, groupType: group, data: restore.encode())) }
        } else {
            record("list-use-enforced", .skip, "no usable group lists a read-only command to probe with")
        }

        // in-order: MAC_SET m1, MAC_GET, MAC_SET m2, MAC_GET on VF 0, in one batch.
        await checkInOrder(driver, srIOV: srIOV, record: record)

        // truncation: LIST_QUERY into a buffer with room for the status only.
        if let group {
            let result = await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listQuery, groupType: group, resultLength: 0)) }
            switch result {
            case .success(let r) where r.status == .ok && r.resultBytesWritten == 0:
                record("truncation", .pass, "LIST_QUERY with an 8-byte writable part: \(seen(r)), used length 8")
            case .success(let r): record("truncation", .fail, "LIST_QUERY with an 8-byte writable part: \(seen(r)), \(r.resultBytesWritten) result bytes")
            case .failure(let error): record("truncation", .fail, "\(error)")
            }
        } else {
            record("truncation", .skip, "no usable group")
        }

        // vf-enable
        if numVFs == 0 {
            expect("vf-enable", await attempt { try await driver.submitUnchecked(AdminCommand(opcode: .listQuery, groupType: .srIOV, resultLength: 64)) },
                   qualifier: Self.invalidGroup, "SR-IOV LIST_QUERY with VF Enable clear")
        } else {
            record("vf-enable", .skip, "VF Enable is set (NumVFs \(numVFs)); run with no VFs to check this rule")
        }

        // reset
        if let error = driver.close() {
            record("reset", .fail, error.description)
        } else if transport.status.rawValue != 0 {
            record("reset", .fail, "device_status reads \(hex(UInt16(transport.status.rawValue), width: 2)) after the reset")
        } else {
            record("reset", .pass, "device_status read 0")
        }

        // reset-clears-list-use: open without any LIST_USE and try a listed command.
        if results["reset"]?.0 != .pass {
            record("reset-clears-list-use", .skip, "the device did not reset")
        } else if let group, let probe {
            var bare = driverOptions
            bare.groupTypes = []
            do {
                let fresh = try await AdminQueueDriver.open(transport: transport, allocator: allocator, options: bare, trace: trace)
                expect("reset-clears-list-use", await attempt {
                    try await fresh.submitUnchecked(AdminCommand(opcode: probe, groupType: group, member: validMember, resultLength: 64))
                }, qualifier: Self.invalidOpcode, "listed opcode \(hex(probe.rawValue, width: 4)) after a reset, before any LIST_USE")
                fresh.close()
            } catch {
                record("reset-clears-list-use", .skip, "the admin queue could not be opened again: \(error)")
            }
        } else {
            record("reset-clears-list-use", .skip, "no usable group lists a read-only command to probe with")
        }
        return report()
    }

    func checkInOrder(_ driver: AdminQueueDriver, srIOV: Bool, record: (String, ConformanceOutcome, String) -> Void) async {
        let set = projectOpcodes.macSet
        let get = projectOpcodes.macGet
        guard srIOV, numVFs > 0, driver.inUse(in: .srIOV).contains(set), driver.inUse(in: .srIOV).contains(get) else {
            record("in-order", .skip, "needs VFs and a state-changing command with its read-back (the project's MAC_SET/MAC_GET) in the SR-IOV group")
            return
        }
        let member = GroupMemberID(vfIndex: 0)
        guard case .success(let original) = await attempt({ try await driver.submit(AdminCommand(opcode: get, member: member, resultLength: 8)) }),
              original.status == .ok else {
            record("in-order", .skip, "MAC_GET of VF 0 failed")
            return
        }
        let first: [UInt8] = [0x02, 0, 0, 0, 0, 0x01, 0, 0]
        let second: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0, 0]
        let results = await driver.submitTogether([
            AdminCommand(opcode: set, member: member, data: first),
            AdminCommand(opcode: get, member: member, resultLength: 8),
            AdminCommand(opcode: set, member: member, data: second),
            AdminCommand(opcode: get, member: member, resultLength: 8),
        ])
        _ = await attempt { try await driver.submit(AdminCommand(opcode: set, member: member, data: Array(original.result.prefix(6)) + [0, 0])) }
        let responses = results.compactMap { try? $0.get() }
        guard responses.count == 4, responses[0].status == .ok, responses[2].status == .ok else {
            record("in-order", .skip, "MAC_SET of VF 0 was refused (is it in use?): \(results)")
            return
        }
        let seen1 = Array(responses[1].result.prefix(6))
        let seen2 = Array(responses[3].result.prefix(6))
        if seen1 == Array(first.prefix(6)) && seen2 == Array(second.prefix(6)) {
            record("in-order", .pass, "SET a, GET, SET b, GET in one batch read a, then b")
        } else {
            record("in-order", .fail, "SET a, GET, SET b, GET in one batch read \(macText(seen1)), then \(macText(seen2))")
        }
    }

    func attempt(_ body: () async throws -> AdminResponse) async -> Result<AdminResponse, AdminError> {
        do { return .success(try await body()) } catch let error as AdminError { return .failure(error) } catch {
            return .failure(.notRunning(device: transport.address))  // (the driver throws only AdminError)
        }
    }
}

func macText(_ bytes: [UInt8]) -> String {
    bytes.map { byte in
        let text = String(byte, radix: 16)
        return text.count == 1 ? "0" + text : text
    }.joined(separator: ":")
}
