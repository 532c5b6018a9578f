import VirtioSpec

extension SimulatedSRIOVDevice {
    // MARK: Admin command dispatch (lock held)

    /// Executes the admin command of `chain` and writes its result header and result into
    /// the chain's writable buffers; returns the bytes written (the used length).
    func executeAdmin(_ chain: TakenChain, of taken: borrowing TakenChains, function: FunctionModel, queue: QueueModel) -> Int {
        guard chain.capacity >= AdminCommandLayout.resultHeaderSize else { return 0 }
        let readable = chain.readable
        if function.faults.contains(.transientEAGAIN), eagainRemaining > 0, readable.count >= 2,
           taken.bytes[readable.lowerBound] > 1 || taken.bytes[readable.lowerBound + 1] != 0 {
            eagainRemaining -= 1
            function.counters.adminErrors += 1
            return fillResultHeader(chain, of: taken, status: .eagain, qualifier: .tryAgain)
        }
        let othersOutstanding = queue.inService.count > 1
        let outcome = taken.bytes.withUnsafeBytes { bytes in
            admin.execute(UnsafeRawBufferPointer(rebasing: bytes[readable]), resultCapacity: chain.capacity, othersOutstanding: othersOutstanding)
        }
        if outcome.status != .ok { function.counters.adminErrors += 1 }
        // The changed member's VF function now shows its new resources.
        if let index = admin.changedMember, index < vfs.count {
            let resources = admin.members[index]
            vfs[index].msixTableSize = resources.msixVectors
            vfs[index].offeredFeatures = resources.features
            if !vfs[index].deviceConfig.prefix(6).elementsEqual(resources.mac) {
                for (byte, value) in resources.mac.enumerated() { vfs[index].deviceConfig[byte] = value }
                // Device config changed: a driver reading it across the change must retry.
                vfs[index].configGeneration &+= 1
            }
        }
        if !admin.restoredQueues.isEmpty { syncRestoredQueues() }
        if !admin.pendingNotifications.isEmpty {
            let notifications = admin.pendingNotifications
            admin.pendingNotifications = []
            for (vf, queue) in notifications { processNotify(vf, queue: queue) }
        }
        // The result header, then as much of the result as fits (truncation [admin:589-591]).
        let header = fillResultHeader(chain, of: taken, status: outcome.status, qualifier: outcome.qualifier)
        return header + outcome.result.withUnsafeBytes { fill(chain, of: taken, with: $0, at: AdminCommandLayout.resultHeaderSize) }
    }

    /// Writes a result header (status, qualifier, reserved zero) into the chain's writable
    /// buffers; returns the bytes written.
    func fillResultHeader(_ chain: TakenChain, of taken: borrowing TakenChains, status: AdminStatus, qualifier: AdminStatusQualifier) -> Int {
        var header: UInt64 = 0
        return withUnsafeMutableBytes(of: &header) { bytes in
            bytes.writeLE(status.rawValue, at: AdminCommandLayout.status)
            bytes.writeLE(qualifier.rawValue, at: AdminCommandLayout.statusQualifier)
            return fill(chain, of: taken, with: UnsafeRawBufferPointer(bytes), at: 0)
        }
    }
}
