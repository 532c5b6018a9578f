import FeatureBitsResourceManager
import MSIXResourceManager
import PCIConfig
import VirtioLinux
import VirtioAdminDriver
import VirtioProjectCommands
import VirtioSpec

/// One change the provisioner made (or, in a plan, would make).
public struct ProvisioningChange: Sendable, Hashable, CustomStringConvertible {
    /// What changed: MSI-X vectors or feature bits, from and to.
    public enum Kind: Sendable, Hashable {
        case msixVectors(from: Int, to: Int)
        case features(from: FeatureSet, to: FeatureSet)
    }
    /// The VF's 0-based index.
    public var vf: Int
    /// What changed.
    public var kind: Kind
    /// `VF N: MSI-X vectors 2 -> 4`, or the features as hex masks.
    public var description: String {
        switch kind {
        case let .msixVectors(from, to): "VF \(vf): MSI-X vectors \(from) -> \(to)"
        case let .features(from, to): "VF \(vf): features \(from.hexMask) -> \(to.hexMask)"
        }
    }
}

/// Brings VFs to what the policy says, through the PF's admin queue. Reads first and
/// changes only what differs, so running it again changes nothing (idempotent), and a run
/// cut short converges when repeated.
public struct Provisioner: Sendable {
    /// The PF's admin-queue driver the commands go through.
    public let driver: AdminQueueDriver
    /// The VFs' device type (feature names are resolved against it).
    public let memberType: VirtioDeviceType?
    let msix: MSIXResourceManager
    let features: FeatureBitsResourceManager

    /// A provisioner that sends its commands through `driver`.
    /// - Parameters:
    ///   - driver: the PF's admin-queue driver (``AdminGroup/driver`` in `VirtioAdmin`).
    ///   - memberType: the VFs' device type, for the feature bits a policy names.
    public init(driver: AdminQueueDriver, memberType: VirtioDeviceType?) {
        self.init(driver: driver, memberType: memberType, opcodes: .default)
    }

    /// A provisioner with a project opcode table other than the default one.
    package init(driver: AdminQueueDriver, memberType: VirtioDeviceType?, opcodes: ProjectOpcodeTable) {
        self.driver = driver
        self.memberType = memberType
        msix = MSIXResourceManager(opcodes: opcodes)
        features = FeatureBitsResourceManager(opcodes: opcodes)
    }

    /// The changes VF `vf` needs (nothing is written).
    public func plan(vf: Int, desired: DesiredResources) async throws(AdminError) -> [ProvisioningChange] {
        try await plan(vf: vf, desired: desired, on: driver)
    }

    /// ``plan(vf:desired:)`` through `runner` (the bulk path's batcher).
    func plan(vf: Int, desired: DesiredResources, on runner: some AdminCommandRunner) async throws(AdminError) -> [ProvisioningChange] {
        var changes: [ProvisioningChange] = []
        if let vectors = desired.msixVectors {
            let current = try await msix.vectors(of: vf, driver: runner)
            if current != vectors { changes.append(ProvisioningChange(vf: vf, kind: .msixVectors(from: current, to: vectors))) }
        }
        if let wanted = desired.features(for: memberType) {
            let current = try await features.features(of: vf, driver: runner)
            if current != wanted { changes.append(ProvisioningChange(vf: vf, kind: .features(from: current, to: wanted))) }
        }
        return changes
    }

    /// Applies what VF `vf` needs; returns the changes made.
    public func apply(vf: Int, desired: DesiredResources) async throws(AdminError) -> [ProvisioningChange] {
        let changes = try await plan(vf: vf, desired: desired)
        for change in changes { try await write(change) }
        return changes
    }

    /// Makes one change on the device.
    func write(_ change: ProvisioningChange) async throws(AdminError) { try await write(change, on: driver) }

    /// ``write(_:)`` through `runner` (the bulk path's batcher).
    func write(_ change: ProvisioningChange, on runner: some AdminCommandRunner) async throws(AdminError) {
        switch change.kind {
        case .msixVectors(_, let to): try await msix.setVectors(to, of: change.vf, driver: runner)
        case .features(_, let to): try await features.setFeatures(to, of: change.vf, driver: runner)
        }
    }
}

extension ProvisioningPolicy {
    /// The first PF rule matching a function as enumeration found it.
    package func rule(for function: VirtioFunction) -> PFRule? {
        rule(for: FunctionIdentity(function))
    }

    /// What each of `vfs` (index → address) should get under `rule`, in index order.
    public func requests(for vfs: [Int: PCIAddress], under rule: PFRule) -> [VFRequest] {
        vfs.keys.sorted().compactMap { index in desired(for: index, under: rule).map { VFRequest(vf: index, desired: $0) } }
    }
}

extension FunctionIdentity {
    /// The identity a policy matches, of a function as enumeration found it.
    package init(_ function: VirtioFunction) {
        self.init(address: function.address, vendorID: function.vendorID, deviceID: function.deviceID,
                  subsystemVendorID: function.subsystemVendorID, subsystemID: function.subsystemID, type: function.type)
    }
}
