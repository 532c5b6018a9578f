import ResourceManager
import ResourceObjectsResourceManager
import VirtioAdminDriver
import VirtioSpec
import VirtioSystem

/// Saves and restores a VF's state through device parts, as Linux's virtio-vfio-pci does
/// for live migration (fact sheet §6.2): DEV_MODE_SET STOPPED, a DEV_PARTS resource object
/// (GET or SET), METADATA_GET SIZE, DEV_PARTS_GET ALL / DEV_PARTS_SET, DESTROY, resume.
/// Every command goes to the SR-IOV group with the VF's member id.
///
/// The device checks DEV_FEATURES against the VF's own and never applies them
/// [dpcmds:353-356]; a restore into a VF with other device features is refused by the
/// device, and the plugin says which features differ.
package struct DevicePartsResourceManager: AdminCommandHandler {
    /// The DEV_PARTS object id the plugin uses (one object at a time, created and destroyed
    /// within an operation; needs a driver limit of at least 1).
    package var objectID: UInt32
    package init(objectID: UInt32 = 0) { self.objectID = objectID }

    package var name: String { "parts" }
    package var version: String { "1.0" }
    package var summary: String { "device parts of a VF: stop/resume, save to a file, restore (virtio 1.4)" }
    package var groupTypes: [AdminGroupType] { [.srIOV] }
    package var opcodes: [(AdminOpcode, String)] {
        [(ResourceObjectLayout.create, "RESOURCE_OBJ_CREATE"), (ResourceObjectLayout.destroy, "RESOURCE_OBJ_DESTROY"),
         (DevicePartsLayout.metadataGet, "DEV_PARTS_METADATA_GET"), (DevicePartsLayout.partsGet, "DEV_PARTS_GET"),
         (DevicePartsLayout.partsSet, "DEV_PARTS_SET"), (DevicePartsLayout.modeSet, "DEV_MODE_SET")]
    }

    // MARK: Typed commands

    /// DEV_MODE_SET: stop (flags 0x01) or resume (flags 0x00).
    package static func setMode(stopped: Bool, member: GroupMemberID, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        _ = try await driver.run(AdminCommand(opcode: DevicePartsLayout.modeSet, member: member,
                                              data: [stopped ? DevicePartsLayout.modeStopped : DevicePartsLayout.modeRunning]), timeout: timeout)
    }

    /// METADATA_GET SIZE: the most bytes all parts take.
    package static func partsSize(_ object: ResourceObjectAddress, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> Int {
        var data = object.header + [UInt8](repeating: 0, count: 8)
        data[DevicePartsLayout.metadataType] = DevicePartsLayout.metadataSize
        let result = try await driver.run(AdminCommand(opcode: DevicePartsLayout.metadataGet, member: object.member, data: data,
                                                       resultLength: DevicePartsLayout.metadataResultSize),
                                          timeout: timeout, minimumResult: 4)
        return Int(result.readLE(UInt32.self, at: 0))
    }

    /// DEV_PARTS_GET ALL into a buffer of `size` bytes (METADATA_GET's SIZE is the most the
    /// parts can take): only the bytes the device wrote are parts, never the zero-filled rest.
    package static func allParts(_ object: ResourceObjectAddress, size: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> [UInt8] {
        var data = object.header + [UInt8](repeating: 0, count: 8)
        data[DevicePartsLayout.getType] = DevicePartsLayout.getAll
        let command = AdminCommand(opcode: DevicePartsLayout.partsGet, member: object.member, data: data, resultLength: size)
        let response = try await driver.submit(command, timeout: timeout)
        let result = try driver.checkedResult(of: command, response: response, minimumResult: 0)
        return Array(result.prefix(response.resultBytesWritten))
    }

    /// DEV_PARTS_SET of parts (as GET returned them).
    package static func setParts(_ object: ResourceObjectAddress, parts: [UInt8], driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        _ = try await driver.run(AdminCommand(opcode: DevicePartsLayout.partsSet, member: object.member, data: object.header + parts), timeout: timeout)
    }

    func object(_ member: GroupMemberID) -> ResourceObjectAddress {
        ResourceObjectAddress(type: ResourceObjectType.deviceParts, id: objectID, member: member)
    }

    /// Reads all parts of VF `vf` (stopping it first; resumed unless `keepStopped`).
    package func save(vf: Int, keepStopped: Bool, context: PluginContext) async throws -> DevicePartsFile {
        let driver = context.driver
        let member = GroupMemberID(vfIndex: vf)
        var object = object(member)
        try await step("stop VF \(vf)", vf: vf) { () throws(AdminError) in try await Self.setMode(stopped: true, member: member, driver: driver, timeout: context.timeout) }
        var parts: [UInt8] = []
        do {
            object = try await createObject(object, kind: DevicePartsLayout.objectKindGet, vf: vf, context: context)
            do {
                let size = try await step("read the parts' size", vf: vf) { () throws(AdminError) in try await Self.partsSize(object, driver: driver, timeout: context.timeout) }
                guard size > 0 else { throw PluginError.badResult(plugin: name, message: "\(driver.address) reports 0 bytes of parts for VF \(vf)") }
                parts = try await step("read the parts", vf: vf) { () throws(AdminError) in try await Self.allParts(object, size: size, driver: driver, timeout: context.timeout) }
                if case .failure(let error) = DevicePart.decode(parts) { throw PluginError.badResult(plugin: name, message: error.description) }
            } catch {
                try? await ResourceObjectsResourceManager.destroy(object, driver: driver, timeout: context.timeout)
                throw error
            }
            try await step("destroy the GET object", vf: vf, object: object) { () throws(AdminError) in try await ResourceObjectsResourceManager.destroy(object, driver: driver, timeout: context.timeout) }
        } catch {
            if !keepStopped { try? await Self.setMode(stopped: false, member: member, driver: driver, timeout: context.timeout) }
            throw error
        }
        if !keepStopped {
            try await step("resume VF \(vf)", vf: vf) { () throws(AdminError) in try await Self.setMode(stopped: false, member: member, driver: driver, timeout: context.timeout) }
        }
        return DevicePartsFile(pf: "\(driver.address)", vf: vf, deviceType: context.memberType ?? .net, parts: parts)
    }

    /// Writes `file`'s parts into VF `vf`: stop, set, resume. A file of another device type
    /// is refused before anything is sent.
    package func restore(_ file: DevicePartsFile, vf: Int, context: PluginContext) async throws {
        let driver = context.driver
        if let type = context.memberType, type != file.deviceType {
            throw PluginError.badArgument(plugin: name, message: "the file holds the parts of a virtio \(file.deviceType.name) VF, but the VFs of \(driver.address) are virtio \(type.name); parts restore only into a VF of the same type.")
        }
        let member = GroupMemberID(vfIndex: vf)
        var object = object(member)
        try await step("stop VF \(vf)", vf: vf) { () throws(AdminError) in try await Self.setMode(stopped: true, member: member, driver: driver, timeout: context.timeout) }
        do {
            object = try await createObject(object, kind: DevicePartsLayout.objectKindSet, vf: vf, context: context)
            do throws(AdminError) {
                try await Self.setParts(object, parts: file.parts, driver: driver, timeout: context.timeout)
            } catch {
                try? await ResourceObjectsResourceManager.destroy(object, driver: driver, timeout: context.timeout)
                throw await explainSet(error, file: file, vf: vf, context: context)
            }
            try await step("destroy the SET object", vf: vf, object: object) { () throws(AdminError) in try await ResourceObjectsResourceManager.destroy(object, driver: driver, timeout: context.timeout) }
        } catch {
            try? await Self.setMode(stopped: false, member: member, driver: driver, timeout: context.timeout)
            throw error
        }
        try await step("resume VF \(vf)", vf: vf) { () throws(AdminError) in try await Self.setMode(stopped: false, member: member, driver: driver, timeout: context.timeout) }
    }

    /// Creates a DEV_PARTS object of `kind`, from `object`'s id upwards while the device
    /// answers EEXIST (another user of the PF holds that id; ids are per PF, as Linux's IDA).
    func createObject(_ object: ResourceObjectAddress, kind: UInt8, vf: Int, context: PluginContext) async throws -> ResourceObjectAddress {
        var candidate = object
        let data = [kind] + [UInt8](repeating: 0, count: 7)
        for _ in 0..<Self.idAttempts {
            do throws(AdminError) {
                try await ResourceObjectsResourceManager.create(candidate, specificData: data, driver: context.driver, timeout: context.timeout)
                return candidate
            } catch {
                guard case .commandFailed(_, _, _, _, .eexist, _) = error, candidate.id < UInt32.max else {
                    throw ResourceObjectsResourceManager.explain(error, object: candidate, plugin: name)
                }
                candidate.id += 1
            }
        }
        throw PluginError.refused(plugin: name, message: "\(context.driver.address) has DEV_PARTS objects \(object.id) to \(candidate.id - 1) in use; destroy unused ones (resobj destroy) and try again.")
    }

    /// How many object ids `createObject` tries.
    static let idAttempts = 16

    /// Runs one command of a sequence; a refusal becomes one sentence naming the step.
    func step<T>(_ what: String, vf: Int, object: ResourceObjectAddress? = nil, _ body: () async throws(AdminError) -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if let object, case .commandFailed = error { throw ResourceObjectsResourceManager.explain(error, object: object, plugin: name) }
            throw Self.explain(error, what: what, vf: vf)
        }
    }

    /// One sentence for a refused device-parts command.
    static func explain(_ error: AdminError, what: String, vf: Int) -> any Error {
        guard case let .commandFailed(device, _, opcodeName, _, status, qualifier) = error else { return error }
        let message: String
        switch (status, qualifier) {
        case (.einval, .invalidMember): message = "\(device) says VF \(vf) is not a member of its group (\(opcodeName): EINVAL/INVALID_MEMBER), so it could not \(what)."
        case (.enxio, _): message = "\(device) has no DEV_PARTS object for VF \(vf) (\(opcodeName): ENXIO), so it could not \(what)."
        case (.enomem, _): message = "the buffer was too small to \(what) (\(opcodeName): ENOMEM)."
        case (.ebusy, _): message = "\(device) is busy with VF \(vf) (\(opcodeName): EBUSY); it could not \(what)."
        default: message = "\(device) refused to \(what) (\(opcodeName): \(status.name)/\(qualifier.name))."
        }
        return PluginError.refused(plugin: "parts", message: message)
    }

    /// Explains a refused DEV_PARTS_SET, reading the target's DEV_FEATURES when the device
    /// answered EINVAL/INVALID_FIELD (the device checks them against its own).
    func explainSet(_ error: AdminError, file: DevicePartsFile, vf: Int, context: PluginContext) async -> any Error {
        guard case let .commandFailed(device, _, _, _, status, qualifier) = error else { return error }
        if status == .ebusy {
            return PluginError.refused(plugin: name, message: "\(device) refused DEV_PARTS_SET for VF \(vf) because the VF is running (EBUSY); parts are set only while it is stopped.")
        }
        guard status == .einval, qualifier == .invalidField else { return Self.explain(error, what: "set the parts of VF \(vf)", vf: vf) }
        let saved = file.decodedParts.first { $0.type == DevicePartType.devFeatures }?.features
        var target: FeatureSet?
        let probe = DevicePartsResourceManager(objectID: objectID)
        if let current = try? await probe.save(vf: vf, keepStopped: false, context: context) {
            target = current.decodedParts.first { $0.type == DevicePartType.devFeatures }?.features
        }
        if let saved, let target, saved != target {
            return PluginError.refused(plugin: name, message: "\(device) refused the parts for VF \(vf) (DEV_PARTS_SET: EINVAL/INVALID_FIELD): the saved VF offered features \(saved.hexMask) and VF \(vf) offers \(target.hexMask); a device checks DEV_FEATURES against its own and never applies them.")
        }
        return PluginError.refused(plugin: name, message: "\(device) refused a part for VF \(vf) as invalid (DEV_PARTS_SET: EINVAL/INVALID_FIELD): a value the VF cannot take (driver features it does not offer, a queue size above its maximum, another queue count).")
    }

    // MARK: Files (no Foundation)

    /// Reads a parts file.
    package static func readFile(_ path: String) throws(DevicePartsError) -> DevicePartsFile {
        let bytes: [UInt8]
        do { bytes = try Sys.readFile(path, limit: (1 << 20) + 1) } catch { throw .file(path: path, message: error.errno.description) }
        guard bytes.count <= 1 << 20 else { throw .file(path: path, message: "larger than 1 MiB; not a device parts file") }
        return try DevicePartsFile(decoding: bytes, path: path)
    }

    /// Refuses a path the parts file could not be written to (checked before any command).
    package static func checkWritable(_ path: String) throws(PluginError) {
        if let error = Sys.whyNotWritable(path) {
            throw .badArgument(plugin: "parts", message: "cannot write \(path): \(error.errno); nothing was sent.")
        }
    }

    /// Writes a parts file (mode 0600: a VF's state may hold guest addresses).
    package static func writeFile(_ file: DevicePartsFile, to path: String) throws(DevicePartsError) {
        do { try Sys.writeFile(file.encoded, to: path, permissions: .ownerReadWrite) } catch {
            throw .file(path: path, message: error.errno.description)
        }
    }

    // MARK: Operations

    package var operations: [PluginOperation] {
        let manager = self
        let vfParameter = PluginParameter("vf", .vf, help: "VF index (0-based, as sysfs virtfnN).")
        return [
            PluginOperation(name: "save", summary: "Stop a VF, read all its parts into FILE (header: PF, VF, device type), resume it (unless --keep-stopped). Sends DEV_MODE_SET stop, RESOURCE_OBJ_CREATE (DEV_PARTS get), DEV_PARTS_METADATA_GET SIZE, DEV_PARTS_GET ALL, RESOURCE_OBJ_DESTROY, DEV_MODE_SET resume.",
                            parameters: [vfParameter, PluginParameter("file", .string, positional: true, help: "File to write."),
                                         PluginParameter("keep-stopped", .flag, required: false, help: "Leave the VF stopped.")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                guard let path = arguments.string("file") else { throw PluginError.badArgument(plugin: manager.name, message: "--file is required.") }
                let keepStopped = ["yes", "true", "1"].contains(arguments.string("keep-stopped") ?? "no")
                try Self.checkWritable(path)  // before the VF is stopped
                let file = try await manager.save(vf: vf, keepStopped: keepStopped, context: context)
                try Self.writeFile(file, to: path)
                let count = file.decodedParts.count
                return PluginOutput(fields: [("vf", .int(vf)), ("file", .string(path)), ("parts", .int(count)), ("bytes", .int(file.parts.count)),
                                             ("stopped", .bool(keepStopped))],
                                    summary: "VF \(vf): \(count) parts (\(file.parts.count) bytes) saved to \(path); VF \(keepStopped ? "left stopped" : "resumed")")
            },
            PluginOperation(name: "restore", summary: "Stop a VF, set the parts in FILE, resume it (a VF of the same device type; the device checks its device features). Sends DEV_MODE_SET stop, RESOURCE_OBJ_CREATE (DEV_PARTS set), DEV_PARTS_SET, RESOURCE_OBJ_DESTROY, DEV_MODE_SET resume.",
                            parameters: [vfParameter, PluginParameter("file", .string, positional: true, help: "File written by 'parts save'.")]) { context, arguments in
                let (vf, _) = try arguments.member(context, plugin: manager.name)
                guard let path = arguments.string("file") else { throw PluginError.badArgument(plugin: manager.name, message: "--file is required.") }
                let file = try Self.readFile(path)
                try await manager.restore(file, vf: vf, context: context)
                return PluginOutput(fields: [("vf", .int(vf)), ("file", .string(path)), ("fromPF", .string(file.pf)), ("fromVF", .int(file.vf))],
                                    summary: "VF \(vf): parts of PF \(file.pf) VF \(file.vf) restored from \(path); VF resumed")
            },
            PluginOperation(name: "mode", summary: "Stop or resume a VF (DEV_MODE_SET flags 0x01 / 0x00; the spec defines only these two modes).",
                            parameters: [vfParameter, PluginParameter("state", .string, positional: true, help: "stop or resume.")],
                            commandName: "mode") { context, arguments in
                let (vf, member) = try arguments.member(context, plugin: manager.name)
                guard let state = arguments.string("state"), state == "stop" || state == "resume" else {
                    throw PluginError.badArgument(plugin: manager.name, message: "the mode is 'stop' or 'resume' (the spec defines only STOPPED and running).")
                }
                try await manager.step("\(state) VF \(vf)", vf: vf) { () throws(AdminError) in
                    try await Self.setMode(stopped: state == "stop", member: member, driver: context.driver, timeout: context.timeout)
                }
                return PluginOutput(fields: [("vf", .int(vf)), ("stopped", .bool(state == "stop"))],
                                    summary: "VF \(vf): \(state == "stop" ? "stopped" : "running")")
            },
            PluginOperation(name: "show", summary: "Decode a parts file: features, common config, device status, each virtqueue.",
                            parameters: [PluginParameter("file", .string, positional: true, help: "File written by 'parts save'.")],
                            needsDevice: false) { _, arguments in
                guard let path = arguments.string("file") else { throw PluginError.badArgument(plugin: manager.name, message: "FILE is required.") }
                let file = try Self.readFile(path)
                let parts = file.decodedParts.map { part in
                    PluginValue.object([("type", .int(Int(part.type))), ("name", .string(DevicePartType.name(part.type))),
                                        ("optional", .bool(part.flags & DevicePartsLayout.partOptional != 0)), ("selector", .string(hexBytes(part.selector))),
                                        ("length", .int(part.value.count)), ("text", .string(part.describe(deviceType: file.deviceType)))])
                }
                return PluginOutput(fields: [("pf", .string(file.pf)), ("vf", .int(file.vf)), ("type", .string(file.deviceType.name)), ("parts", .list(parts))],
                                    summary: file.description)
            },
        ]
    }
}
