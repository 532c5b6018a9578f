import VirtioSpec

extension SimulatedSRIOVDevice {
    // MARK: Admin command dispatch (lock held)

    func executeAdmin(_ chain: TakenChain, function: FunctionModel, queue: QueueModel) -> Int {
        guard chain.capacity >= AdminCommandLayout.resultHeaderSize else { return 0 }
        if function.faults.contains(.transientEAGAIN), eagainRemaining > 0, chain.readable.count >= 2, chain.readable[0] > 1 || chain.readable[1] != 0 {
            eagainRemaining -= 1
            function.counters.adminErrors += 1
            return fill(chain, with: AdminResultHeader(status: .eagain, qualifier: .tryAgain).encode())
        }
        let outcome = admin.execute(chain.readable, resultCapacity: chain.capacity, othersOutstanding: queue.inService.count > 1)
        if outcome.status != .ok { function.counters.adminErrors += 1 }
        // The changed member's VF function now shows its new resources.
        if let index = admin.changedMember, index < vfs.count {
            let resources = admin.members[index]
            vfs[index].msixTableSize = resources.msixVectors
            vfs[index].offeredFeatures = resources.features
            if Array(vfs[index].deviceConfig.prefix(6)) != resources.mac {
                for (byte, value) in resources.mac.enumerated() { vfs[index].deviceConfig[byte] = value }
                // Device config changed: a driver reading it across the change must retry.
                vfs[index].configGeneration &+= 1
            }
        }
        syncRestoredQueues()
        for (vf, queue) in admin.pendingNotifications { processNotify(vf, queue: queue) }
        admin.pendingNotifications = []
        return fill(chain, with: AdminResultHeader(status: outcome.status, qualifier: outcome.qualifier).encode() + outcome.result)
    }
}
