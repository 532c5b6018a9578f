import PCIConfig
import VirtioSpec

/// A position in the policy file (1-based).
public struct SourcePosition: Hashable, Sendable, CustomStringConvertible {
    /// The line, from 1.
    public var line: Int
    /// The column in UTF-8 bytes, from 1.
    public var column: Int
    /// The position at `line`:`column` (both 1-based).
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
    /// `LINE:COLUMN`.
    public var description: String { "\(line):\(column)" }
}

/// A policy error: where and what, as `FILE:LINE:COLUMN: message`.
public struct PolicyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The policy file's path, as given.
    public var file: String
    /// Where in the file the problem is.
    public var position: SourcePosition
    /// What is wrong, in words (`unknown key 'bogus'`).
    public var message: String
    /// An error at `position` of `file`.
    public init(file: String, position: SourcePosition, message: String) {
        self.file = file
        self.position = position
        self.message = message
    }
    /// `FILE:LINE:COLUMN: message`, one sentence.
    public var description: String { "\(file):\(position): \(message)" }
}

/// What to do when provisioning a VF fails.
public enum FailureAction: String, Sendable, Hashable, CaseIterable {
    /// Log it and let the VF's driver bind anyway.
    case bindAnyway = "bind-anyway"
    /// Log it and keep the VF away from drivers (a VM never gets a misconfigured VF).
    case keepUnbound = "keep-unbound"
}

/// Which VFs a rule covers.
public enum VFSelection: Sendable, Hashable, CustomStringConvertible {
    case all
    case ranges([ClosedRange<Int>])

    /// Whether the 0-based VF index `index` is selected.
    public func contains(_ index: Int) -> Bool {
        switch self {
        case .all: true
        case .ranges(let ranges): ranges.contains { $0.contains(index) }
        }
    }

    /// Whether some VF index is selected by both.
    public func overlaps(_ other: VFSelection) -> Bool {
        switch (self, other) {
        case (.all, _), (_, .all): return true
        case let (.ranges(a), .ranges(b)): return a.contains { left in b.contains { $0.overlaps(left) } }
        }
    }

    /// `all`, or the ranges as the policy writes them (`0-3,8`).
    public var description: String {
        switch self {
        case .all: "all"
        case .ranges(let ranges): ranges.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
        }
    }

    /// Parses `all`, `3`, `0-7`, `0-3,8,10-11`.
    public init?(_ text: String) {
        if text == "all" { self = .all; return }
        var ranges: [ClosedRange<Int>] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
                  low >= 0, high >= low, high < 65536 else { return nil }
            ranges.append(low...high)
        }
        self = .ranges(ranges)
    }
}

/// Resources a VF should have; nil fields are left as they are.
public struct DesiredResources: Sendable, Hashable {
    /// MSI-X vectors the VF should have; `nil` leaves them as they are.
    public var msixVectors: Int?
    /// Feature names (resolved against the VF's device type when applied).
    public var featureNames: [String]?
    /// The exact feature bits the VF should offer (`features-mask`); wins over ``featureNames``.
    public var featuresMask: FeatureSet?
    /// What happens to the VF when provisioning it fails.
    public var onFailure: FailureAction

    /// Resources to provision; `nil` fields are left as they are.
    public init(msixVectors: Int? = nil, featureNames: [String]? = nil, featuresMask: FeatureSet? = nil, onFailure: FailureAction = .bindAnyway) {
        self.msixVectors = msixVectors
        self.featureNames = featureNames
        self.featuresMask = featuresMask
        self.onFailure = onFailure
    }

    /// The feature set for a VF of `type`.
    public func features(for type: VirtioDeviceType?) -> FeatureSet? {
        if let featuresMask { return featuresMask }
        guard let featureNames else { return nil }
        var set = FeatureSet()
        for name in featureNames { if let bit = FeatureSet.bit(named: name, for: type) { set.insert(FeatureSet(bit: bit)) } }
        return set
    }
}

/// What a PF rule is matched against: the identity of one PCI function (built from an
/// enumerated `VirtioFunction` by `FunctionIdentity(_:)`, the one place that maps it).
public struct FunctionIdentity: Sendable, Hashable {
    /// The function's PCI address.
    public var address: PCIAddress
    /// PCI vendor id (0x1af4 for virtio).
    public var vendorID: UInt16
    /// PCI device id (0x1040 + virtio device type for a modern function).
    public var deviceID: UInt16
    /// PCI subsystem vendor id, when known.
    public var subsystemVendorID: UInt16?
    /// PCI subsystem id, when known.
    public var subsystemID: UInt16?
    /// The virtio device type, when the device id names one.
    public var type: VirtioDeviceType?

    /// The identity of a function from its PCI ids.
    public init(address: PCIAddress, vendorID: UInt16, deviceID: UInt16, subsystemVendorID: UInt16? = nil, subsystemID: UInt16? = nil,
                type: VirtioDeviceType? = nil) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemID = subsystemID
        self.type = type
    }
}

/// How a PF rule picks PFs: every given field must match.
public struct PFMatch: Sendable, Hashable, CustomStringConvertible {
    /// The PF's address (`match = { address = "…" }`).
    public var address: PCIAddress?
    /// The PCI vendor id (`vendor`).
    public var vendorID: UInt16?
    /// The PCI device id (`device`).
    public var deviceID: UInt16?
    /// The PCI subsystem vendor id (`subsystem-vendor`).
    public var subsystemVendorID: UInt16?
    /// The PCI subsystem id (`subsystem-device`).
    public var subsystemID: UInt16?
    /// The virtio device type (`type = "net"`).
    public var type: VirtioDeviceType?

    /// A match with no field given: any virtio PF.
    public init() {}

    /// Whether `function` has every field this match gives.
    public func matches(_ function: FunctionIdentity) -> Bool {
        (address == nil || address == function.address) && (vendorID == nil || vendorID == function.vendorID)
            && (deviceID == nil || deviceID == function.deviceID)
            && (subsystemVendorID == nil || subsystemVendorID == function.subsystemVendorID)
            && (subsystemID == nil || subsystemID == function.subsystemID) && (type == nil || type == function.type)
    }

    /// The fields given, in words (`type net`), or `any virtio PF`.
    public var description: String {
        var parts: [String] = []
        if let address { parts.append("address \(address)") }
        if let vendorID { parts.append("vendor \(hex(vendorID, width: 4))") }
        if let deviceID { parts.append("device \(hex(deviceID, width: 4))") }
        if let subsystemVendorID { parts.append("subsystem-vendor \(hex(subsystemVendorID, width: 4))") }
        if let subsystemID { parts.append("subsystem-device \(hex(subsystemID, width: 4))") }
        if let type { parts.append("type \(type.name)") }
        return parts.isEmpty ? "any virtio PF" : parts.joined(separator: ", ")
    }
}

/// One `[[pf.vf]]` table: which VFs of the PF, and what they should get.
public struct VFRule: Sendable, Hashable {
    /// The VFs the rule covers (`vfs = "0-7"`).
    public var vfs: VFSelection
    /// What those VFs should get.
    public var resources: DesiredResources
    /// Where the table starts in the policy file.
    public var position: SourcePosition
}

/// One `[[pf]]` table: which PFs (`match`) and the rules of their VFs.
public struct PFRule: Sendable, Hashable {
    /// Which PFs the rule applies to; the first matching rule wins.
    public var match: PFMatch
    /// The rules of the PF's VFs, in file order.
    public var vfRules: [VFRule]
    /// Write 0 to the PF's `sriov_drivers_autoprobe` when it appears, so that new VFs wait
    /// for the helper (which probes each VF's driver after provisioning it).
    public var holdVFDrivers: Bool
    /// Where the table starts in the policy file.
    public var position: SourcePosition
}

/// A provisioning policy: defaults and PF rules.
public struct ProvisioningPolicy: Sendable, Hashable {
    /// What a VF no rule covers gets (`[defaults]`).
    public var defaults: DesiredResources
    /// Whether PFs hold new VFs back from drivers until they are provisioned (`hold-vf-drivers`), unless a PF rule says otherwise.
    public var holdVFDrivers: Bool
    /// The PF rules, in file order.
    public var pfs: [PFRule]

    /// Where the udev helper and the service read the policy by default.
    public static let standardPath = "/etc/virtio-admin/policy.toml"
    /// MSI-X allows at most 2048 vectors per function.
    public static let maximumVectors = 2048

    /// The first PF rule matching a function.
    public func rule(for function: FunctionIdentity) -> PFRule? {
        pfs.first { $0.match.matches(function) }
    }

    /// What VF `index` of a PF under `rule` should have (nil: the policy says nothing about it).
    public func desired(for index: Int, under rule: PFRule) -> DesiredResources? {
        guard let vfRule = rule.vfRules.first(where: { $0.vfs.contains(index) }) else {
            return defaults.msixVectors == nil && defaults.featureNames == nil && defaults.featuresMask == nil ? nil : defaults
        }
        var resources = vfRule.resources
        resources.msixVectors = resources.msixVectors ?? defaults.msixVectors
        if resources.featureNames == nil && resources.featuresMask == nil {
            resources.featureNames = defaults.featureNames
            resources.featuresMask = defaults.featuresMask
        }
        return resources
    }
}
