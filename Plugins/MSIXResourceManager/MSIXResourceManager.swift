import ResourceManager
import VirtioAdminDriver
import VirtioProjectCommands
import VirtioSpec

/// The MSI-X pool of a group owner, as the device reports it.
package struct MSIXPool: Sendable, Hashable {
    /// Vectors the owner can give to its members.
    package var total: Int
    /// Vectors not given to any member.
    package var available: Int
    /// Most and fewest vectors one member may have.
    package var perMemberMaximum: Int
    package var perMemberMinimum: Int
}

/// Provisions a VF's MSI-X vector count through the PF's admin queue (the MSI-X resource
/// manager of the device-management series proposed on virtio-comment; project-defined opcodes, see ``ProjectOpcodeTable``).
///
/// It validates what it can before sending (the VF exists, the count is in range) and
/// reports the device's refusal precisely: EINVAL/INVALID_FIELD for a count outside the
/// per-VF limits, EINVAL/NORESOURCE when the pool is short, EBUSY while a driver uses the VF.
package struct MSIXResourceManager: AdminCommandHandler {
    package let opcodeTable: ProjectOpcodeTable
    package init(opcodes: ProjectOpcodeTable = .default) { opcodeTable = opcodes }

    package var name: String { "msix" }
    package var version: String { "1.0" }
    package var summary: String { "MSI-X vectors of each VF, from the PF's pool (project-defined opcodes)" }
    /// MSIX_GET/MSIX_SET name a VF (SR-IOV group, member = VF number); MSIX_POOL_GET asks
    /// about the owner itself, so it goes to the self group with member 0 (a conforming
    /// device rejects member 0 in the SR-IOV group as an invalid member).
    package var groupTypes: [AdminGroupType] { [.srIOV, .selfGroup] }
    package var opcodes: [(AdminOpcode, String)] {
        [(opcodeTable.msixGet, "MSIX_GET"), (opcodeTable.msixSet, "MSIX_SET"), (opcodeTable.msixPoolGet, "MSIX_POOL_GET")]
    }

    // MARK: Typed operations

    /// The vector count of VF `vf` (0-based).
    package func vectors(of vf: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> Int {
        let result = try await driver.run(AdminCommand(opcode: opcodeTable.msixGet, member: GroupMemberID(vfIndex: vf),
                                                       resultLength: ProjectCommandLayout.msixGetResultSize),
                                          timeout: timeout, minimumResult: ProjectCommandLayout.msixGetResultSize)
        return Int(result.readLE(UInt16.self, at: ProjectCommandLayout.msixGetVectors))
    }

    /// Sets the vector count of VF `vf`.
    package func setVectors(_ count: Int, of vf: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        precondition((0...Int(UInt16.max)).contains(count), "vector count must fit 16 bits")
        var data = [UInt8](repeating: 0, count: ProjectCommandLayout.msixSetDataSize)
        data.writeLE(UInt16(count), at: ProjectCommandLayout.msixSetVectors)
        _ = try await driver.run(AdminCommand(opcode: opcodeTable.msixSet, member: GroupMemberID(vfIndex: vf), data: data), timeout: timeout)
    }

    /// The owner's pool (a self-group command: group type 0, member 0).
    package func pool(driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> MSIXPool {
        let result = try await driver.run(AdminCommand(opcode: opcodeTable.msixPoolGet, groupType: .selfGroup, member: .none,
                                                       resultLength: ProjectCommandLayout.msixPoolResultSize),
                                          timeout: timeout, minimumResult: ProjectCommandLayout.msixPoolResultSize)
        return MSIXPool(total: Int(result.readLE(UInt32.self, at: ProjectCommandLayout.msixPoolTotal)),
                        available: Int(result.readLE(UInt32.self, at: ProjectCommandLayout.msixPoolAvailable)),
                        perMemberMaximum: Int(result.readLE(UInt16.self, at: ProjectCommandLayout.msixPoolPerMemberMax)),
                        perMemberMinimum: Int(result.readLE(UInt16.self, at: ProjectCommandLayout.msixPoolPerMemberMin)))
    }

    /// Turns the device's refusal of MSIX_SET into a sentence that says what to do.
    static func explain(_ error: AdminError, vf: Int, vectors: Int) -> any Error {
        guard case let .commandFailed(device, _, _, _, status, qualifier) = error else { return error }
        switch (status, qualifier) {
        case (.ebusy, _):
            return PluginError.badArgument(plugin: "msix", message: "\(device): VF \(vf) is in use by a driver (EBUSY); unbind it before changing its vectors.")
        case (.einval, .noResource), (.enospc, _):
            return PluginError.badArgument(plugin: "msix", message: "\(device): the PF's pool cannot supply \(vectors) vectors for VF \(vf) (\(status.name)/\(qualifier.name)).")
        case (.einval, .invalidField):
            return PluginError.badArgument(plugin: "msix", message: "\(device): the device refused \(vectors) vectors for VF \(vf) as out of range (EINVAL/INVALID_FIELD).")
        case (.einval, .invalidMember):
            return PluginError.badArgument(plugin: "msix", message: "\(device): the device says VF \(vf) is not a member of its group (EINVAL/INVALID_MEMBER).")
        default:
            return error
        }
    }

    // MARK: Operations (CLI and generic hosts)

    package var operations: [PluginOperation] {
        let manager = self
        return [
            PluginOperation(name: "get", summary: "Print a VF's MSI-X vector count.",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based, as sysfs virtfnN).")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                let vectors = try await manager.vectors(of: vf, driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: [("vf", .int(vf)), ("vectors", .int(vectors))], summary: "VF \(vf): \(vectors) MSI-X vectors")
            },
            PluginOperation(name: "set", summary: "Set a VF's MSI-X vector count (the VF must not be in use).",
                            parameters: [PluginParameter("vf", .vf, help: "VF index (0-based, as sysfs virtfnN)."),
                                         PluginParameter("vectors", .integer, help: "Vectors to give the VF.")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                let vectors = try arguments.integer("vectors", in: 0...Int(UInt16.max), plugin: manager.name)
                // Validate against the device's own limits before sending.
                let pool = try await manager.pool(driver: context.driver, timeout: context.timeout)
                guard pool.perMemberMinimum <= pool.perMemberMaximum else {
                    throw PluginError.badResult(plugin: manager.name,
                                                message: "\(context.driver.address) reports a per-VF minimum of \(pool.perMemberMinimum) vectors above its maximum of \(pool.perMemberMaximum).")
                }
                guard (pool.perMemberMinimum...pool.perMemberMaximum).contains(vectors) else {
                    throw PluginError.badArgument(plugin: manager.name,
                                                  message: "\(vectors) vectors is outside the per-VF limits of \(context.driver.address) (\(pool.perMemberMinimum) to \(pool.perMemberMaximum)).")
                }
                let current = try await manager.vectors(of: vf, driver: context.driver, timeout: context.timeout)
                guard vectors - current <= pool.available else {
                    throw PluginError.badArgument(plugin: manager.name,
                                                  message: "VF \(vf) has \(current) vectors; \(vectors) needs \(vectors - current) more, but the pool of \(context.driver.address) has \(pool.available) available.")
                }
                do throws(AdminError) {
                    try await manager.setVectors(vectors, of: vf, driver: context.driver, timeout: context.timeout)
                } catch {
                    throw Self.explain(error, vf: vf, vectors: vectors)
                }
                let now = try await manager.vectors(of: vf, driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: [("vf", .int(vf)), ("vectors", .int(now))], summary: "VF \(vf): \(now) MSI-X vectors")
            },
            PluginOperation(name: "pool", summary: "Print the PF's vector pool: total and available.", parameters: [],
                            opcodes: [opcodeTable.msixPoolGet]) { context, _ in
                let pool = try await manager.pool(driver: context.driver, timeout: context.timeout)
                return PluginOutput(fields: [("total", .int(pool.total)), ("available", .int(pool.available)),
                                             ("perVFMaximum", .int(pool.perMemberMaximum)), ("perVFMinimum", .int(pool.perMemberMinimum))],
                                    summary: "pool \(pool.total) vectors, \(pool.available) available; \(pool.perMemberMinimum) to \(pool.perMemberMaximum) per VF")
            },
        ]
    }
}
