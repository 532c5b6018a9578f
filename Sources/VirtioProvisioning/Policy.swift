import PCIConfig
import VirtioSpec

/// A position in the policy file (1-based).
public struct SourcePosition: Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
    public var description: String { "\(line):\(column)" }
}

/// A policy error: where and what, as `FILE:LINE:COLUMN: message`.
public struct PolicyError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var position: SourcePosition
    public var message: String
    public init(file: String, position: SourcePosition, message: String) {
        self.file = file
        self.position = position
        self.message = message
    }
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

    public func contains(_ index: Int) -> Bool {
        switch self {
        case .all: true
        case .ranges(let ranges): ranges.contains { $0.contains(index) }
        }
    }

    public func overlaps(_ other: VFSelection) -> Bool {
        switch (self, other) {
        case (.all, _), (_, .all): return true
        case let (.ranges(a), .ranges(b)): return a.contains { left in b.contains { $0.overlaps(left) } }
        }
    }

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
    public var msixVectors: Int?
    /// Feature names (resolved against the VF's device type when applied).
    public var featureNames: [String]?
    public var featuresMask: FeatureSet?
    public var onFailure: FailureAction

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
    public var address: PCIAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16?
    public var subsystemID: UInt16?
    public var type: VirtioDeviceType?

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
    public var address: PCIAddress?
    public var vendorID: UInt16?
    public var deviceID: UInt16?
    public var subsystemVendorID: UInt16?
    public var subsystemID: UInt16?
    public var type: VirtioDeviceType?

    public init() {}

    /// Whether `function` has every field this match gives.
    public func matches(_ function: FunctionIdentity) -> Bool {
        (address == nil || address == function.address) && (vendorID == nil || vendorID == function.vendorID)
            && (deviceID == nil || deviceID == function.deviceID)
            && (subsystemVendorID == nil || subsystemVendorID == function.subsystemVendorID)
            && (subsystemID == nil || subsystemID == function.subsystemID) && (type == nil || type == function.type)
    }

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

public struct VFRule: Sendable, Hashable {
    public var vfs: VFSelection
    public var resources: DesiredResources
    public var position: SourcePosition
}

public struct PFRule: Sendable, Hashable {
    public var match: PFMatch
    public var vfRules: [VFRule]
    /// Write 0 to the PF's `sriov_drivers_autoprobe` when it appears, so that new VFs wait
    /// for the helper (which probes each VF's driver after provisioning it).
    public var holdVFDrivers: Bool
    public var position: SourcePosition
}

/// A provisioning policy: defaults and PF rules.
public struct ProvisioningPolicy: Sendable, Hashable {
    public var defaults: DesiredResources
    public var holdVFDrivers: Bool
    public var pfs: [PFRule]

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
