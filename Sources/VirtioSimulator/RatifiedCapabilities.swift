import VirtioSpec

extension AdminCommandProcessor {
    // MARK: Self group: capabilities

    /// CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET (group, opcode and member already checked).
    mutating func executeCapability(_ opcode: AdminOpcode, data: [UInt8]) -> Outcome {
        switch opcode {
        case .capIDListQuery:
            // Bit 0: VIRTIO_DEV_PARTS_CAP [caps:90-99].
            var result: [UInt8] = []
            result.appendLE(UInt64(1))
            return .ok(result)
        case .deviceCapGet:
            let padded = data + [UInt8](repeating: 0, count: max(0, 8 - data.count))
            guard padded.readLE(UInt16.self, at: 0) == 0 else { return .refuse(.enxio, .ok) }  // unknown id SHOULD be ENXIO [caps:222-225]
            return .ok([ratified.deviceGetLimit, ratified.deviceSetLimit])
        default:
            // DRIVER_CAP_SET. Missing readable bytes read as zero [admin:540-546].
            let padded = data + [UInt8](repeating: 0, count: max(0, 10 - data.count))
            guard padded.readLE(UInt16.self, at: 0) == 0 else { return .refuse(.enxio, .ok) }
            let get = padded[8], set = padded[9]
            // A limit above the device's is refused [caps:201-205].
            guard get <= ratified.deviceGetLimit, set <= ratified.deviceSetLimit else { return .refuse(.einval, .invalidField) }
            // Lowering a limit under an existing object disables what it uses [caps:217-220].
            let stranded = ratified.objects.contains { id, object in id >= UInt32(object.kind == 0 ? get : set) }
            guard !stranded else { return .refuse(.ebusy, .ok) }
            ratified.driverGetLimit = get
            ratified.driverSetLimit = set
            return .ok()
        }
    }
}
