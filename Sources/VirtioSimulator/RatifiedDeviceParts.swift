import VirtioSpec

/// Device-part types [parts:109-230] (device side).
enum ModelPartType {
    static let devFeatures: UInt16 = 0x100
    static let drvFeatures: UInt16 = 0x101
    static let pciCommonCfg: UInt16 = 0x102
    static let deviceStatus: UInt16 = 0x103
    static let vqCfg: UInt16 = 0x104
    static let vqNotifyCfg: UInt16 = 0x105
    static let optionalFlag: UInt8 = 0x01
    static let headerSize = 16
}

/// One device part: header fields and value.
struct ModelPart: Equatable {
    var type: UInt16
    var flags: UInt8 = 0
    var selector: UInt64 = 0  // the 8 selector bytes at +4, little-endian
    var value: [UInt8]

    func encode(into bytes: inout [UInt8]) {
        bytes.appendLE(type)
        bytes.append(flags)
        bytes.append(0)
        bytes.appendLE(selector)
        bytes.appendLE(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    var header: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return Array(bytes.prefix(ModelPartType.headerSize))
    }

    /// Parses parts laid one after another; `nil` when a header or value is cut short.
    static func decode(_ bytes: [UInt8]) -> [ModelPart]? {
        var parts: [ModelPart] = []
        var offset = 0
        while offset < bytes.count {
            // Up to 7 zero bytes after the last part pad the data to a multiple of 8 bytes [admin:622-624].
            if bytes.count - offset < 8 && bytes[offset...].allSatisfy({ $0 == 0 }) { break }
            guard offset + ModelPartType.headerSize <= bytes.count else { return nil }
            let length = Int(bytes.readLE(UInt32.self, at: offset + 12))
            let start = offset + ModelPartType.headerSize
            guard length <= bytes.count - start else { return nil }
            parts.append(ModelPart(type: bytes.readLE(UInt16.self, at: offset), flags: bytes[offset + 2],
                                   selector: bytes.readLE(UInt64.self, at: offset + 4), value: Array(bytes[start..<(start + length)])))
            offset = start + length
        }
        return parts
    }
}

/// What DEV_PARTS_SET stored for a stopped member; applied on resume [dpcmds:239-240].
struct PendingParts {
    var driverFeatures: FeatureSet?
    var status: UInt8?
    var queues: [Int: [UInt8]] = [:]  // VQ_CFG values by index
}

extension AdminCommandProcessor {
    // MARK: Device parts

    /// The member's parts in table order [dpcmds:297-321,337-340].
    func currentParts(_ vf: FunctionModel) -> [ModelPart] {
        var parts: [ModelPart] = []
        func features(_ set: FeatureSet) -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.appendLE(set.low64)
            bytes.appendLE(set.high64)
            return bytes
        }
        parts.append(ModelPart(type: ModelPartType.devFeatures, flags: ModelPartType.optionalFlag, value: features(vf.offeredFeatures)))
        parts.append(ModelPart(type: ModelPartType.drvFeatures, value: features(vf.driverFeatures)))
        var numQueues: [UInt8] = []
        numQueues.appendLE(UInt16(vf.queues.count))
        parts.append(ModelPart(type: ModelPartType.pciCommonCfg, selector: UInt64(CommonConfigRegister.numQueues.offset), value: numQueues))
        parts.append(ModelPart(type: ModelPartType.deviceStatus, value: [vf.status.rawValue]))
        for queue in vf.queues {
            var value = [UInt8](repeating: 0, count: 32)
            value.writeLE(UInt16(truncatingIfNeeded: queue.size), at: 0)
            value.writeLE(queue.msixVector, at: 2)
            value.writeLE(UInt16(queue.enabled ? 1 : 0), at: 4)
            value.writeLE(queue.descriptorArea, at: 8)
            value.writeLE(queue.driverArea, at: 16)
            value.writeLE(queue.deviceArea, at: 24)
            parts.append(ModelPart(type: ModelPartType.vqCfg, selector: UInt64(queue.index), value: value))
        }
        for queue in vf.queues {
            var value = [UInt8](repeating: 0, count: 8)
            value.writeLE(UInt16(queue.index), at: 0)
            value.writeLE(UInt16(queue.index), at: 2)
            parts.append(ModelPart(type: ModelPartType.vqNotifyCfg, selector: UInt64(queue.index), value: value))
        }
        return parts
    }

    /// Checks every part, then stores them for the resume; a refused SET changes nothing [dpcmds:242-243].
    mutating func setParts(_ parts: [ModelPart], vf: FunctionModel, index: Int) -> Outcome {
        var pending = ratified.pending[index] ?? PendingParts()
        let own = currentParts(vf)
        for part in parts {
            let expected = own.first { $0.type == part.type && $0.selector == part.selector }
            switch part.type {
            case ModelPartType.devFeatures, ModelPartType.pciCommonCfg, ModelPartType.vqNotifyCfg:
                // Checked against the device's own, never applied [dpcmds:353-356,441-447].
                guard let expected, expected.value == part.value else { return .refuse(.einval, .invalidField) }
            case ModelPartType.drvFeatures:
                guard part.value.count == 16 else { return .refuse(.einval, .invalidField) }  // length must match [dpcmds:348-351]
                let features = FeatureSet(low64: part.value.readLE(UInt64.self, at: 0), high64: part.value.readLE(UInt64.self, at: 8))
                guard features.isSubset(of: vf.offeredFeatures) else { return .refuse(.einval, .invalidField) }
                pending.driverFeatures = features
            case ModelPartType.deviceStatus:
                guard part.value.count == 1 else { return .refuse(.einval, .invalidField) }
                pending.status = part.value[0]
            case ModelPartType.vqCfg:
                guard part.value.count == 32, part.selector < UInt64(vf.queues.count) else { return .refuse(.einval, .invalidField) }
                let queue = vf.queues[Int(part.selector)]
                let size = Int(part.value.readLE(UInt16.self, at: 0))
                let enabled = part.value.readLE(UInt16.self, at: 4)
                guard enabled <= 1, size <= queue.maximumSize, size == 0 || size & (size - 1) == 0 else { return .refuse(.einval, .invalidField) }
                pending.queues[queue.index] = part.value
            default:
                // Unknown parts may be ignored only when flagged OPTIONAL [dpcmds:358-359].
                guard part.flags & ModelPartType.optionalFlag != 0 else { return .refuse(.einval, .invalidField) }
            }
        }
        ratified.pending[index] = pending
        return .ok()
    }

    mutating func apply(_ pending: PendingParts, to vf: FunctionModel) {
        if let features = pending.driverFeatures { vf.driverFeatures = features }
        if let status = pending.status { vf.status = DeviceStatus(rawValue: status) }
        for (index, value) in pending.queues {
            let queue = vf.queues[index]
            queue.size = Int(value.readLE(UInt16.self, at: 0))
            queue.msixVector = value.readLE(UInt16.self, at: 2)
            queue.enabled = value.readLE(UInt16.self, at: 4) == 1
            queue.descriptorArea = value.readLE(UInt64.self, at: 8)
            queue.driverArea = value.readLE(UInt64.self, at: 16)
            queue.deviceArea = value.readLE(UInt64.self, at: 24)
            queue.lastAvail = 0
            queue.usedIndex = 0
            queue.inService.removeAll()
            restoredQueues.append(queue)
        }
    }
}
