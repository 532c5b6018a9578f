import VirtioSpec
import VirtioTransport
import VirtioSystem

extension SimulatedSRIOVDevice {
    // MARK: Register access (called by SimulatedBAR)

    func function(_ index: Int?) -> FunctionModel { index.map { vfs[$0] } ?? pf }

    func read(_ index: Int?, offset: Int, width: Int) -> UInt32 {
        lock.withLock {
            if index == nil { settleResetLocked() }
            let function = function(index)
            function.counters.mmioReads += 1
            if function.faults.contains(.surpriseRemoval) { return width == 4 ? UInt32.max : (width == 2 ? 0xffff : 0xff) }
            typealias L = SimulatedBARLayout
            switch offset {
            case Int(L.commonOffset)..<Int(L.commonOffset + L.commonLength):
                return function.readCommon(offset - Int(L.commonOffset), width: width)
            case Int(L.isrOffset):
                let value = function.isr
                function.isr = 0  // reading the ISR clears it
                return UInt32(value)
            case Int(L.deviceOffset)..<Int(L.deviceOffset + L.deviceLength):
                let start = offset - Int(L.deviceOffset)
                guard start + width <= function.deviceConfig.count else { return 0 }
                var value: UInt32 = 0
                for byte in 0..<width { value |= UInt32(function.deviceConfig[start + byte]) << (8 * byte) }
                return value
            default:
                return 0
            }
        }
    }

    func write(_ index: Int?, offset: Int, width: Int, value: UInt32) {
        lock.withLock {
            if index == nil { settleResetLocked() }
            let function = function(index)
            function.counters.mmioWrites += 1
            if function.faults.contains(.surpriseRemoval) { return }
            typealias L = SimulatedBARLayout
            switch offset {
            case Int(L.commonOffset)..<Int(L.commonOffset + L.commonLength):
                let common = offset - Int(L.commonOffset)
                if function.isOwner, common == CommonConfigRegister.deviceStatus.rawValue, width == 1, value == 0, !function.status.isEmpty,
                   function.faults.contains(.slowReset) || function.faults.contains(.lateWrite) {
                    // The reset takes effect later: at once under lateWrite alone (on the
                    // next access), after slowResetDuration under slowReset.
                    function.counters.resets += 1
                    if pendingResetAt == nil {
                        let delay = function.faults.contains(.slowReset) ? configuration.slowResetDuration.nanoseconds : 0
                        pendingResetAt = monotonicNanoseconds() + delay
                    }
                    return
                }
                let wasReset = function.writeCommon(common, width: width, value: value)
                if wasReset { function.counters.resets += 1 }
                if wasReset && function.isOwner { admin.deviceReset() }
                if function.isOwner && function.status.contains(.featuresOK) && function.driverFeatures.contains(.srIOV) {
                    srIOVNegotiated = true
                }
                if let index, function.status.contains(.driverOK) != admin.members[index].inUse, !wasReset || admin.members[index].inUse {
                    // A VF whose driver reached DRIVER_OK is in use; a reset frees it.
                    admin.members[index].inUse = function.status.contains(.driverOK)
                }
            case Int(L.notifyOffset)..<Int(L.notifyOffset + L.notifyLength) where width == 2:
                function.counters.notifies += 1
                let queue = (offset - Int(L.notifyOffset)) / Int(L.notifyOffMultiplier)
                processNotify(function, queue: queue)
            default:
                break
            }
        }
    }
}
