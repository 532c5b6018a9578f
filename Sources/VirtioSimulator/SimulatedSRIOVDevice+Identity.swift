import PCIConfig
import VirtioTransport

extension SimulatedSRIOVDevice {

    // MARK: Identity and config space

    public var pfAddress: PCIAddress { configuration.pfAddress }
    public var numVFs: Int { lock.withLock { admin.numVFs } }

    /// The PF's identity as its config space describes it.
    var pfIdentity: SimulatedFunctionIdentity {
        SimulatedFunctionIdentity(address: pfAddress, type: configuration.pfType, bar0Address: SimulatedSysfsTree.pfBAR0,
                                  msixTableSize: configuration.pfMSIXVectors)
    }

    /// The PF's config space bytes (with the SR-IOV capability).
    public func pfConfigBytes() -> [UInt8] {
        let numVFs = self.numVFs
        return simulatedConfigSpace(pfIdentity, sriov: SimulatedSRIOV(
            totalVFs: configuration.totalVFs, numVFs: numVFs, firstVFOffset: configuration.firstVFOffset,
            vfStride: configuration.vfStride, vfType: configuration.vfType, vfBAR0Base: SimulatedSysfsTree.vfBAR0Base))
    }

    /// The PF's decoded config space.
    public func pfConfigSpace() -> PCIConfigSpace {
        // SAFETY of `try!`: the model's own layout always decodes (checked by its tests).
        try! PCIConfigSpace(decoding: pfConfigBytes(), address: pfAddress, barSizes: [SimulatedBARLayout.size, 0, 0, 0, 0, 0])
    }

    /// VF `index`'s decoded config space (its MSI-X table size follows its provisioned vectors).
    public func vfConfigSpace(_ index: Int) -> PCIConfigSpace {
        let vectors = lock.withLock { admin.members[index].msixVectors }
        let identity = SimulatedFunctionIdentity(address: configuration.vfAddress(index), type: configuration.vfType,
                                                 bar0Address: SimulatedSysfsTree.vfBAR0Base + UInt64(index) * SimulatedBARLayout.size,
                                                 msixTableSize: max(vectors, 1))
        return try! PCIConfigSpace(decoding: simulatedConfigSpace(identity), address: identity.address,
                                   barSizes: [SimulatedBARLayout.size, 0, 0, 0, 0, 0])
    }

    /// The PF's BAR 0.
    public func pfBAR() -> any RegisterSpace { SimulatedBAR(device: self, function: nil) }
    /// VF `index`'s BAR 0.
    public func vfBAR(_ index: Int) -> any RegisterSpace {
        precondition(index < configuration.totalVFs)
        return SimulatedBAR(device: self, function: index)
    }

    /// The fake sysfs tree of this device's current state.
    public func sysfsTree() -> SimulatedSysfsTree {
        lock.withLock {
            var tree = SimulatedSysfsTree(totalVFs: configuration.totalVFs, numVFs: admin.numVFs)
            tree.pfAddress = configuration.pfAddress
            tree.pfType = configuration.pfType
            tree.vfType = configuration.vfType
            tree.pfMSIXVectors = configuration.pfMSIXVectors
            tree.vfMSIXCounts = admin.members.map { max($0.msixVectors, 1) }
            tree.vfTotalMSIX = admin.pool
            tree.firstVFOffset = configuration.firstVFOffset
            tree.vfStride = configuration.vfStride
            return tree
        }
    }
}
