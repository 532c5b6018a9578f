import ResourceManager
import VirtioAdminDriver
import VirtioSpec

/// Layouts of the capability commands (virtio 1.4 §2.12.1.3, fact sheet §2.3 and §3). All
/// of them go to the **self group** (group type 0) with member id 0 [caps:73-74,127-128,163-164].
package enum CapabilityLayout {
    package static let capIDListQuery = AdminOpcode(0x7)
    package static let deviceCapGet = AdminOpcode(0x8)
    package static let driverCapSet = AdminOpcode(0x9)
    /// DEVICE_CAP_GET data: `id` le16 @0, reserved[6] (8 bytes) [caps:134-137].
    package static let capGetDataSize = 8
    /// DRIVER_CAP_SET data: `id` le16 @0, reserved[6], cap_specific_data @8 [caps:169-173].
    package static let capSetSpecificData = 8
    /// Result words asked of CAP_ID_LIST_QUERY: 33 le64 words reach cap id 0x0800 (word 32, bit 0).
    package static let listWords = 33
}

/// Capability ids [caps:41-68][net:3051-3195].
package enum CapabilityID {
    package static let deviceParts: UInt16 = 0x0000
    package static let netFlowFilterResource: UInt16 = 0x0800
    package static let netFlowFilterSelector: UInt16 = 0x0801
    package static let netFlowFilterAction: UInt16 = 0x0802
    package static let netIPsecResource: UInt16 = 0x0803
    package static let netIPsecSA: UInt16 = 0x0804

    /// The spec name of a capability id, or `CAP_0xNNNN`.
    package static func name(_ id: UInt16) -> String {
        switch id {
        case deviceParts: "VIRTIO_DEV_PARTS_CAP"
        case netFlowFilterResource: "VIRTIO_NET_FF_RESOURCE_CAP"
        case netFlowFilterSelector: "VIRTIO_NET_FF_SELECTOR_CAP"
        case netFlowFilterAction: "VIRTIO_NET_FF_ACTION_CAP"
        case netIPsecResource: "VIRTIO_NET_IPSEC_RESOURCE_CAP"
        case netIPsecSA: "VIRTIO_NET_IPSEC_SA_CAP"
        default: "CAP_\(hex(id, width: 4))"
        }
    }
}

/// VIRTIO_DEV_PARTS_CAP: how many DEV_PARTS objects of each kind may exist [dpcmds:46-55]:
/// `get_parts_resource_objects_limit` u8 @0, `set_parts_resource_objects_limit` u8 @1.
package struct DevicePartsCapability: Sendable, Hashable {
    package var getLimit: UInt8
    package var setLimit: UInt8
    package init(getLimit: UInt8, setLimit: UInt8) {
        self.getLimit = getLimit
        self.setLimit = setLimit
    }
    package init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 2 else { return nil }
        getLimit = bytes[0]
        setLimit = bytes[1]
    }
    package var bytes: [UInt8] { [getLimit, setLimit] }
    /// The driver's values: each limit is at most the device's [caps:22-27,237-245].
    package func limited(to device: Self) -> Self { Self(getLimit: min(getLimit, device.getLimit), setLimit: min(setLimit, device.setLimit)) }
}

/// VIRTIO_NET_FF_RESOURCE_CAP (20 bytes) [net:3051-3075].
package struct NetFlowFilterResourceCapability: Sendable, Hashable {
    package var groupsLimit: UInt32
    package var classifiersLimit: UInt32
    package var rulesLimit: UInt32
    package var rulesPerGroupLimit: UInt32
    package var lastRulePriority: UInt8
    package var selectorsPerClassifierLimit: UInt8
    package init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 18 else { return nil }
        groupsLimit = bytes.readLE(UInt32.self, at: 0)
        classifiersLimit = bytes.readLE(UInt32.self, at: 4)
        rulesLimit = bytes.readLE(UInt32.self, at: 8)
        rulesPerGroupLimit = bytes.readLE(UInt32.self, at: 12)
        lastRulePriority = bytes[16]
        selectorsPerClassifierLimit = bytes[17]
    }
}

/// What the capability handshake found and set.
package struct CapabilityHandshake: Sendable, Hashable {
    /// Capability ids the device listed in CAP_ID_LIST_QUERY.
    package var capabilityIDs: [UInt16]
    /// VIRTIO_DEV_PARTS_CAP as the device reported it (when listed).
    package var deviceParts: DevicePartsCapability?
    /// What DRIVER_CAP_SET set (min(device, wanted)).
    package var driverParts: DevicePartsCapability?
}

/// The capability commands (CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET) and the
/// handshake Linux does at bring-up (`virtio_pci_modern.c`, fact sheet §6.1): list the
/// capabilities, read VIRTIO_DEV_PARTS_CAP and set the driver's limits to min(device, wanted).
package struct CapabilitiesResourceManager: AdminCommandHandler {
    package init() {}
    package var name: String { "caps" }
    package var version: String { "1.0" }
    package var summary: String { "device capabilities (self group): list, decode, and the driver-limit handshake (virtio 1.4)" }
    package var groupTypes: [AdminGroupType] { [.selfGroup] }
    /// `virtio-admin caps PF` lists them.
    package var defaultOperation: String? { "show" }
    package var opcodes: [(AdminOpcode, String)] {
        [(CapabilityLayout.capIDListQuery, "CAP_ID_LIST_QUERY"), (CapabilityLayout.deviceCapGet, "DEVICE_CAP_GET"),
         (CapabilityLayout.driverCapSet, "DRIVER_CAP_SET")]
    }

    // MARK: Typed commands

    /// CAP_ID_LIST_QUERY: the capability ids the device supports (bit b of word i = id 64·i+b).
    package static func capabilityIDs(driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> [UInt16] {
        let result = try await driver.run(AdminCommand(opcode: CapabilityLayout.capIDListQuery, groupType: .selfGroup, member: .none,
                                                       resultLength: CapabilityLayout.listWords * 8),
                                          timeout: timeout, minimumResult: 8)
        return AdminOpcodeBitmap(decoding: result).opcodes.map(\.rawValue)
    }

    /// DEVICE_CAP_GET of capability `id`.
    package static func deviceCapability(_ id: UInt16, resultLength: Int, driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: CapabilityLayout.capGetDataSize)
        data.writeLE(id, at: 0)
        return try await driver.run(AdminCommand(opcode: CapabilityLayout.deviceCapGet, groupType: .selfGroup, member: .none, data: data,
                                                 resultLength: resultLength), timeout: timeout)
    }

    /// DRIVER_CAP_SET of capability `id` with its capability-specific data.
    package static func setDriverCapability(_ id: UInt16, _ specific: [UInt8], driver: some AdminCommandRunner, timeout: Duration? = nil) async throws(AdminError) {
        var data = [UInt8](repeating: 0, count: CapabilityLayout.capSetSpecificData)
        data.writeLE(id, at: 0)
        _ = try await driver.run(AdminCommand(opcode: CapabilityLayout.driverCapSet, groupType: .selfGroup, member: .none, data: data + specific),
                                 timeout: timeout)
    }

    /// The bring-up handshake: when the device enabled CAP_ID_LIST_QUERY, DEVICE_CAP_GET and
    /// DRIVER_CAP_SET (LIST_QUERY/LIST_USE), lists the capabilities and, when
    /// VIRTIO_DEV_PARTS_CAP is among them, sets the driver's limits to min(device, wanted)
    /// (`wanted` nil: the device's own). Returns `nil` when the device does not list the three opcodes.
    package static func handshake(driver: some AdminCommandRunner, wanted: DevicePartsCapability? = nil,
                                 timeout: Duration? = nil) async throws(AdminError) -> CapabilityHandshake? {
        let needed = [CapabilityLayout.capIDListQuery, CapabilityLayout.deviceCapGet, CapabilityLayout.driverCapSet]
        // The capability commands belong to the self group: enabled there, not merely anywhere.
        let selfGroup = driver.inUse(in: .selfGroup)
        guard needed.allSatisfy(selfGroup.contains) else { return nil }
        let ids = try await capabilityIDs(driver: driver, timeout: timeout)
        var handshake = CapabilityHandshake(capabilityIDs: ids)
        guard ids.contains(CapabilityID.deviceParts) else { return handshake }
        let bytes = try await deviceCapability(CapabilityID.deviceParts, resultLength: 2, driver: driver, timeout: timeout)
        guard let device = DevicePartsCapability(decoding: bytes) else {
            throw .resultTooShort(device: driver.address, opcode: CapabilityLayout.deviceCapGet, opcodeName: "DEVICE_CAP_GET", expected: 2, received: bytes.count)
        }
        let driverValues = (wanted ?? device).limited(to: device)
        try await setDriverCapability(CapabilityID.deviceParts, driverValues.bytes, driver: driver, timeout: timeout)
        handshake.deviceParts = device
        handshake.driverParts = driverValues
        return handshake
    }

    /// One sentence for a refused capability command.
    package static func explain(_ error: AdminError, id: UInt16) -> any Error {
        guard case let .commandFailed(device, _, opcodeName, _, status, qualifier) = error else { return error }
        let message: String
        switch (status, qualifier) {
        case (.enxio, _): message = "\(device) has no capability \(CapabilityID.name(id)) (\(opcodeName): ENXIO)."
        case (.einval, .invalidField): message = "\(device) refused the driver values of \(CapabilityID.name(id)) as above its own limits or flags (\(opcodeName): EINVAL/INVALID_FIELD)."
        case (.ebusy, _): message = "\(device) keeps \(CapabilityID.name(id)) as it is while resource objects depend on it (\(opcodeName): EBUSY)."
        case (.einval, .invalidGroup): message = "\(device) takes capability commands only in the self group (\(opcodeName): EINVAL/INVALID_GROUP)."
        default: message = "\(device) refused \(opcodeName) for \(CapabilityID.name(id)) with \(status.name)/\(qualifier.name)."
        }
        return PluginError.refused(plugin: "caps", message: message)
    }

    // MARK: Operations

    package var operations: [PluginOperation] {
        [
            PluginOperation(name: "show", summary: "List the device's capabilities and decode those the plugin knows.", parameters: []) { context, _ in
                let driver = context.driver
                let ids: [UInt16]
                do throws(AdminError) { ids = try await Self.capabilityIDs(driver: driver, timeout: context.timeout) } catch { throw Self.explain(error, id: 0) }
                var entries: [PluginValue] = []
                var lines: [String] = []
                for id in ids {
                    var fields: [(String, PluginValue)] = [("id", .int(Int(id))), ("name", .string(CapabilityID.name(id)))]
                    var line = "\(hex(id, width: 4)) \(CapabilityID.name(id))"
                    if id == CapabilityID.deviceParts {
                        let bytes: [UInt8]
                        do throws(AdminError) { bytes = try await Self.deviceCapability(id, resultLength: 2, driver: driver, timeout: context.timeout) } catch { throw Self.explain(error, id: id) }
                        if let cap = DevicePartsCapability(decoding: bytes) {
                            fields += [("getLimit", .int(Int(cap.getLimit))), ("setLimit", .int(Int(cap.setLimit)))]
                            line += ": get objects \(cap.getLimit), set objects \(cap.setLimit)"
                        }
                    } else if id == CapabilityID.netFlowFilterResource {
                        let bytes: [UInt8]
                        do throws(AdminError) { bytes = try await Self.deviceCapability(id, resultLength: 20, driver: driver, timeout: context.timeout) } catch { throw Self.explain(error, id: id) }
                        if let cap = NetFlowFilterResourceCapability(decoding: bytes) {
                            fields += [("groupsLimit", .int(Int(cap.groupsLimit))), ("classifiersLimit", .int(Int(cap.classifiersLimit))),
                                       ("rulesLimit", .int(Int(cap.rulesLimit))), ("rulesPerGroupLimit", .int(Int(cap.rulesPerGroupLimit)))]
                            line += ": groups \(cap.groupsLimit), classifiers \(cap.classifiersLimit), rules \(cap.rulesLimit)"
                        }
                    }
                    entries.append(.object(fields))
                    lines.append(line)
                }
                let summary = ids.isEmpty ? "\(driver.address) lists no capabilities." : lines.joined(separator: "\n")
                return PluginOutput(fields: [("device", .string("\(driver.address)")), ("capabilities", .list(entries))], summary: summary)
            },
        ]
    }
}
