import PCIConfig
import VirtioSpec
import VirtioTransport
import Virtqueue

// Bring-up: features, the admin queue's rings and slots, the command-set negotiation.
// Spec: §3.1.1 (initialisation), §4.1.4.3 (admin_queue_index/num), §2.12.1.2 (LIST_QUERY/LIST_USE).
extension AdminQueueDriver {
    /// Brings the admin queue up and negotiates the command sets. The caller counted this
    /// bring-up (``bringUps``) in the hold of the lock where it read `closesBefore`: a close
    /// since then (an interrupt's, from another thread) stops it, the driver left closed.
    func start(closesBefore: UInt64) async throws(AdminError) {
        try bringUp(closesBefore: closesBefore)
        // Command-set negotiation, group by group: LIST_QUERY, then LIST_USE of what we will use.
        do {
            for group in options.groupTypes {
                do {
                    try await negotiate(group)
                } catch let error where error.isInvalidGroup {
                    // Not fatal: the SR-IOV group does not exist while VF Enable is clear
                    // [admin:417-423]; it is negotiated again when a command needs it.
                    lock.withLock { groups[group.rawValue, default: GroupCommands()].unavailable = unavailableError(group, error) }
                }
            }
            lock.withLock { if case .starting = state { state = .running } }
        } catch {
            // Not `close()`: a close by the driver's user is what stops `reinitialize()` from
            // leaving the driver failed (to be brought up again). A driver closed meanwhile
            // had its device quiesced by that close.
            lock.withLock {
                if case .closed = state { return }
                quiesceAndCloseLocked()
            }
            throw error
        }
    }

    /// LIST_QUERY then LIST_USE for one group type. LIST_USE enables the wanted opcodes the
    /// group lists; if the device refuses that combination with EINVAL, every listed opcode.
    func negotiate(_ group: AdminGroupType) async throws(AdminError) {
        // 64 bytes of bitmap describe opcodes 0x000–0x1ff.
        let listed = try await run(AdminCommand(opcode: .listQuery, groupType: group, resultLength: 64), minimumResult: 8)
        let supported = AdminOpcodeBitmap(decoding: listed)
        var wanted = AdminOpcodeBitmap(opcodes: (options.wantedOpcodes ?? supported.opcodes).filter(supported.contains))
        wanted.insert(.listQuery)
        wanted.insert(.listUse)
        lock.withLock { groups[group.rawValue] = GroupCommands(supported: supported, inUse: AdminOpcodeBitmap(opcodes: [.listQuery, .listUse])) }
        do {
            _ = try await run(AdminCommand(opcode: .listUse, groupType: group, data: wanted.encode()))
        } catch let error where error.deviceStatus?.0 == .einval && !error.isInvalidGroup && wanted != supported {
            // The device refused the combination (it MAY, for internal dependencies
            // [admin:374-378]): fall back to everything it listed.
            wanted = supported
            wanted.insert(.listQuery)
            wanted.insert(.listUse)
            _ = try await run(AdminCommand(opcode: .listUse, groupType: group, data: wanted.encode()))
        }
        lock.withLock {
            groups[group.rawValue]?.inUse = wanted
            groups[group.rawValue]?.unavailable = nil
        }
    }

    /// The error commands for `group` get while its LIST_QUERY/LIST_USE are refused.
    func unavailableError(_ group: AdminGroupType, _ error: AdminError) -> AdminError {
        let reason = error.deviceStatus.map { "\($0.0.name) / \($0.1.name)" } ?? error.description
        return .groupUnavailable(device: address, group: group, reason: "the device refused its LIST_QUERY/LIST_USE with \(reason)")
    }

    /// Negotiates `group` again if it was unavailable (a command for it is about to be sent).
    public func refreshGroup(_ group: AdminGroupType) async throws(AdminError) {
        do {
            try await negotiate(group)
        } catch let error where error.isInvalidGroup {
            let reason = unavailableError(group, error)
            lock.withLock { groups[group.rawValue, default: GroupCommands()].unavailable = reason }
            throw reason
        }
    }

    /// - Parameter closesBefore: see ``start(closesBefore:)``; a close since is seen at the
    ///   end (``setUpAdminQueue(closesBefore:)``).
    func bringUp(closesBefore: UInt64) throws(AdminError) {
        defer { lock.withLock { bringUps -= 1 } }
        // This driver is the PF's driver: it negotiates SR_IOV (required before VFs are
        // enabled [content:966-979]) when the function has the capability, and accepts
        // ORDER_PLATFORM (SHOULD [content:962-964]; it makes the ring barriers DMA-strength).
        var wanted: FeatureSet = [.eventIndex, .orderPlatform]
        if transport.hasSRIOVCapability { wanted.insert(.srIOV) }
        var required: FeatureSet = [.adminVQ]
        if options.requireAccessPlatform { required.insert(.accessPlatform) } else { wanted.insert(.accessPlatform) }
        do {
            try transport.negotiate(required: required, wanted: wanted)
        } catch .missingFeatures(let device, let missing, _) where missing.contains(.adminVQ) {
            try? transport.reset()
            throw .adminVQNotOffered(device: device)
        } catch .missingFeatures(let device, let missing, _) where missing.contains(.accessPlatform) {
            try? transport.reset()
            throw .accessPlatformNotOffered(device: device)
        } catch {
            try? transport.reset()
            throw .transport(error)
        }
        // The reset is confirmed: bus mastering goes on now (a PF whose bus mastering was
        // cleared when it did not reset, or a model reused after that, could not reach the
        // rings otherwise). Checked and set in one hold of the lock that clears it.
        let busMasterOff = lock.withLock { () -> Bool in
            if let enableBusMaster = options.enableBusMaster {
                guard enableBusMaster() else { return true }
                busMasterCleared = false
                return false
            }
            return busMasterCleared
        }
        if busMasterOff {
            try? transport.reset()
            throw .busMasterOff(device: address)
        }
        // Nothing is mapped for the device yet: a failure up to here leaves nothing to guard.
        do throws(AdminError) {
            try setUpAdminQueue(closesBefore: closesBefore)
        } catch .notRunning(let device) {
            // Closed meanwhile: quiesced and closed already.
            throw .notRunning(device: device)
        } catch {
            quiesceAfterFailure()
            throw error
        }
    }

    /// - Parameter closesBefore: ``closes`` when the bring-up began: a close since then
    ///   (an interrupt's, from another thread) leaves the device reset and the driver closed.
    func setUpAdminQueue(closesBefore: UInt64) throws(AdminError) {
        guard let admin = transport.adminQueues else {
            throw .noAdminQueue(device: address, reason: "the common configuration structure is too short to carry admin_queue_index/admin_queue_num")
        }
        guard admin.count > 0 else { throw .noAdminQueue(device: address, reason: "admin_queue_num is 0") }
        let maximum = transport.queueMaximumSize(admin.index)
        guard maximum > 0 else { throw .transport(.queueUnavailable(device: address, queue: admin.index)) }
        var size = 1
        while size * 2 <= min(options.queueSize, maximum) { size *= 2 }
        guard size >= 2 else { throw .transport(.invalidQueueSize(device: address, queue: admin.index, size: size, maximum: maximum)) }
        let eventIndex = transport.negotiatedFeatures.contains(.eventIndex)
        let queue: SplitVirtqueue
        let slab: DMARegion
        do {
            queue = try SplitVirtqueue(size: size, allocator: allocator, eventIndex: eventIndex,
                                       platformOrdering: transport.negotiatedFeatures.contains(.orderPlatform))
            slab = try allocator.allocate(length: size / 2 * options.slotBytes * 2, alignment: 4096)
        } catch {
            throw .dma(device: address, purpose: .adminQueue(queueSize: size), error)
        }
        let notifier: QueueNotifier
        lock.withLock {
            // Whatever an earlier bring-up left was released or quarantined by its close().
            if let old = self.slab { allocator.release(old) }
            self.queue = queue
            self.slab = slab
        }
        do {
            notifier = try transport.setUpQueue(admin.index, size: size, descriptorArea: queue.descriptorArea, driverArea: queue.driverArea,
                                                deviceArea: queue.deviceArea, checkIndex: false)
            try transport.driverOK()
        } catch {
            // The caller quiesces the device before anything is released.
            throw .transport(error)
        }
        let closedMeanwhile = lock.withLock { () -> Bool in
            guard closes == closesBefore else {
                // Closed while the registers were written: the device may have taken the
                // rings after that close's reset, so it is quiesced again, and stays closed.
                // The rings and slots stay as that close left them: attached (released once
                // the device is known quiet) or quarantined (never attached again).
                quiesceAndCloseLocked()
                return true
            }
            self.queue = queue
            self.notifier = notifier
            self.slab = slab
            adminQueueIndex = admin.index
            slotTable.resize(slots: size / 2, queueSize: size)
            state = .starting
            return false
        }
        if closedMeanwhile { throw .notRunning(device: address) }
    }

    /// Resets the device and sets the admin queue up again (after a failure).
    /// A bring-up that fails leaves the driver failed, not closed: the next
    /// `recoverIfNeeded` tries again (a device may finish its reset later).
    /// A close while it runs leaves the driver closed.
    /// - Parameter ifFailed: only a driver that failed — not one closed since it was seen
    ///   failed (an interrupt's close between a recovery's check and this call).
    /// - Returns: whether it brought the queue up (`false`: `ifFailed` and not failed).
    @discardableResult
    package func reinitialize(ifFailed: Bool = false) async throws(AdminError) -> Bool {
        // One hold: the check, the quiesce, and the count a close from now on changes.
        let closesBefore = lock.withLock { () -> UInt64? in
            if ifFailed { guard case .failed = state else { return nil } }
            quiesceAndCloseLocked()
            bringUps += 1
            return closes
        }
        guard let closesBefore else { return false }
        do { try await start(closesBefore: closesBefore) } catch {
            lock.withLock { if case .closed = state, closes == closesBefore { state = .failed(error) } }
            throw error
        }
        return true
    }
}
