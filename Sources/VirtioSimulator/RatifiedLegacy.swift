import VirtioSpec

extension AdminCommandProcessor {
    // MARK: Legacy interface

    /// Legacy common-config fields with MSI-X: offset → (width, writable) [pci:827-858].
    static let legacyCommonFields: [Int: (width: Int, writable: Bool)] = [
        0: (4, false), 4: (4, true), 8: (4, true), 12: (2, false), 14: (2, true), 16: (2, true),
        18: (1, true), 19: (1, false), 20: (2, true), 22: (2, true),
    ]

    /// 0x2–0x5: one access covers exactly one field [legacy:55-58,254-266]; little-endian data.
    mutating func legacyAccess(_ opcode: AdminOpcode, vf: FunctionModel, data: [UInt8], room: Int) -> Outcome {
        let isWrite = opcode == .legacyCommonCfgWrite || opcode == .legacyDevCfgWrite
        let isCommon = opcode == .legacyCommonCfgWrite || opcode == .legacyCommonCfgRead
        guard let first = data.first else { return .refuse(.einval, .invalidField) }
        let offset = Int(first)
        // Write: offset, reserved[7], data[] at d+8; read: offset, result length = buffer room.
        let value = isWrite ? Array(data.dropFirst(8)) : []
        let width = isWrite ? value.count : room
        guard width > 0 else { return .refuse(.einval, .invalidField) }
        if isCommon {
            guard let field = Self.legacyCommonFields[offset], field.width == width else { return .refuse(.einval, .invalidField) }
            if isWrite {
                if field.writable { legacyWriteCommon(vf, offset: offset, value: value) }
                return .ok()
            }
            return .ok(legacyReadCommon(vf, offset: offset, width: width))
        }
        guard legacyDeviceFieldFits(vf, offset: offset, width: width) else { return .refuse(.einval, .invalidField) }
        if isWrite {
            // Only the MAC of a net device is writable through the legacy interface.
            if vf.type == .net && offset < 6 {
                vf.deviceConfig[offset] = value[0]
                vf.configGeneration &+= 1
            }
            return .ok()
        }
        return .ok(Array(vf.deviceConfig[offset..<(offset + width)]))
    }

    /// Device-config fields: net has mac[6] (bytes), status, max_virtqueue_pairs, mtu (le16);
    /// other types: any naturally aligned 1/2/4-byte access inside the region.
    func legacyDeviceFieldFits(_ vf: FunctionModel, offset: Int, width: Int) -> Bool {
        guard offset + width <= vf.deviceConfig.count else { return false }
        if vf.type == .net {
            return (offset < 6 && width == 1) || ([6, 8, 10].contains(offset) && width == 2)
        }
        return [1, 2, 4].contains(width) && offset % width == 0
    }

    func legacyReadCommon(_ vf: FunctionModel, offset: Int, width: Int) -> [UInt8] {
        let queue = vf.selectedQueue
        let value: UInt32
        switch offset {
        case 0: value = vf.offeredFeatures.window(0)
        case 4: value = vf.driverFeatures.window(0)
        case 8: value = UInt32(truncatingIfNeeded: (queue?.descriptorArea ?? 0) >> 12)
        case 12: value = UInt32(queue?.maximumSize ?? 0)
        case 14: value = UInt32(vf.queueSelect)
        case 16: value = 0
        case 18: value = UInt32(vf.status.rawValue)
        case 19:
            value = UInt32(vf.isr)
            vf.isr = 0  // reading the ISR clears it
        case 20: value = UInt32(vf.configVector)
        default: value = UInt32(queue?.msixVector ?? CommonConfigLayout.noVector)
        }
        return (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    mutating func legacyWriteCommon(_ vf: FunctionModel, offset: Int, value bytes: [UInt8]) {
        var value: UInt32 = 0
        for (index, byte) in bytes.enumerated() { value |= UInt32(byte) << (8 * index) }
        let queue = vf.selectedQueue
        switch offset {
        case 4: vf.driverFeatures.setWindow(0, to: value)
        case 8:
            // Queue PFN: the legacy ring lives at PFN × 4096 (descriptors, avail, then used at
            // the next 4096 boundary); PFN 0 disables the queue.
            guard let queue else { return }
            if value == 0 {
                queue.reset()
            } else {
                queue.size = queue.maximumSize
                queue.descriptorArea = UInt64(value) << 12
                queue.driverArea = queue.descriptorArea + UInt64(16 * queue.size)
                let availEnd = queue.driverArea + UInt64(6 + 2 * queue.size)
                queue.deviceArea = (availEnd + 4095) & ~4095
                queue.enabled = true
                queue.lastAvail = 0
                queue.usedIndex = 0
            }
        case 14: vf.queueSelect = UInt16(truncatingIfNeeded: value)
        case 16: pendingNotifications.append((vf, Int(value & 0xffff)))
        case 18:
            if value == 0 {
                vf.reset()
            } else {
                // A legacy driver has no FEATURES_OK step; DEVICE_NEEDS_RESET is device-owned.
                var status = DeviceStatus(rawValue: UInt8(truncatingIfNeeded: value))
                status.remove(.deviceNeedsReset)
                vf.status = status
            }
        case 20: vf.configVector = vf.acceptsVector(UInt16(truncatingIfNeeded: value)) ? UInt16(truncatingIfNeeded: value) : CommonConfigLayout.noVector
        case 22:
            if let queue {
                let vector = UInt16(truncatingIfNeeded: value)
                queue.msixVector = vf.acceptsVector(vector) ? vector : CommonConfigLayout.noVector
            }
        default: break
        }
    }
}
