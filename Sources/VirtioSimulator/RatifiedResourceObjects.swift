import VirtioSpec

/// A DEV_PARTS resource object [dpcmds:25-29,66-77].
struct DevicePartsObject: Equatable {
    var member: Int
    /// 0 = GET, 1 = SET.
    var kind: UInt8
}

extension AdminCommandProcessor {
    // MARK: Resource objects

    /// The DEV_PARTS object named by the 8-byte header at the start of `bytes`, if it is the
    /// member's and of `kind` (nil: either).
    func partsObject(_ bytes: [UInt8], member: Int, kind: UInt8?) -> DevicePartsObject? {
        guard bytes.readLE(UInt16.self, at: 0) == 0, let object = ratified.objects[bytes.readLE(UInt32.self, at: 4)],
              object.member == member, kind == nil || object.kind == kind else { return nil }
        return object
    }

    mutating func createObject(_ member: Int, data: [UInt8]) -> Outcome {
        let bytes = data + [UInt8](repeating: 0, count: max(0, 24 - data.count))
        let type = bytes.readLE(UInt16.self, at: 0)
        let id = bytes.readLE(UInt32.self, at: 4)
        let flags = bytes.readLE(UInt64.self, at: 8)
        let kind = bytes[16]
        // Only DEV_PARTS (0x000) objects; flags are reserved (0) [resobj:128-130]; type 0 GET / 1 SET.
        guard type == 0, flags == 0, kind <= 1 else { return .refuse(.einval, .invalidField) }
        let limit = kind == 0 ? ratified.driverGetLimit : ratified.driverSetLimit
        guard id < UInt32(limit) else { return .refuse(.einval, .invalidField) }  // ids 0..limit-1 [resobj:18-39]
        guard ratified.objects[id] == nil else { return .refuse(.eexist, .ok) }  // [resobj:220-222]
        guard ratified.objects.values.filter({ $0.kind == kind }).count < Int(limit) else { return .refuse(.enospc, .ok) }
        ratified.objects[id] = DevicePartsObject(member: member, kind: kind)
        return .ok()
    }
}
