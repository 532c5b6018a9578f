import PCIConfig
import VirtioSpec

extension ProvisioningPolicy {
    static let topKeys: Set<String> = ["defaults", "pf"]
    static let resourceKeys: Set<String> = ["msix-vectors", "features", "features-mask", "on-failure"]
    static let defaultKeys = resourceKeys.union(["hold-vf-drivers"])
    static let pfKeys: Set<String> = ["match", "vf", "hold-vf-drivers"]
    static let vfKeys = resourceKeys.union(["vfs"])
    static let matchKeys: Set<String> = ["address", "vendor", "device", "subsystem-vendor", "subsystem-device", "type"]

    /// Parses and validates a policy: one reading of the text (`PolicyReader`), then the checks
    /// of what the keys hold. Every error names the line and column.
    public init(text: String, file: String) throws(PolicyError) {
        let table = try PolicyReader.read(text, file: file)
        /// An error at `key` of `table` (or at the table when the key is absent).
        func fail(_ table: PolicyTable, _ key: String, _ message: String) -> PolicyError {
            PolicyError(file: file, position: table.keyPosition(key) ?? table.position, message: message)
        }
        func fail(_ table: PolicyTable, _ message: String) -> PolicyError {
            PolicyError(file: file, position: table.position, message: message)
        }
        func checkKeys(_ table: PolicyTable, allowed: Set<String>, path: String) throws(PolicyError) {
            for key in table.keys.sorted() where !allowed.contains(key) {
                throw fail(table, key, "unknown key '\(key)'\(path.isEmpty ? "" : " in [\(path)]"); expected one of \(allowed.sorted().joined(separator: ", ")).")
            }
        }
        try checkKeys(table, allowed: Self.topKeys, path: "")

        func resources(_ table: PolicyTable, type: VirtioDeviceType?, inherited: FailureAction) throws(PolicyError) -> DesiredResources {
            var result = DesiredResources(onFailure: inherited)
            if let value = table["msix-vectors"] {
                guard let vectors = value.int else { throw fail(table, "msix-vectors", "msix-vectors must be a whole number.") }
                guard (0...Self.maximumVectors).contains(vectors) else {
                    throw fail(table, "msix-vectors", "msix-vectors \(vectors) is out of range (0 to \(Self.maximumVectors), the MSI-X limit).")
                }
                result.msixVectors = vectors
            }
            if let value = table["features"] {
                guard let array = value.array else { throw fail(table, "features", "features must be an array of names, e.g. [\"VERSION_1\", \"MAC\"].") }
                var names: [String] = []
                for item in array {
                    guard let name = item.string else { throw fail(table, "features", "features must hold names (strings).") }
                    let types: [VirtioDeviceType?] = type.map { [$0] } ?? [nil, .net, .block]
                    guard types.contains(where: { FeatureSet.bit(named: name, for: $0) != nil }) else {
                        throw fail(table, "features", "unknown feature '\(name)'\(type.map { " for a \($0.name) device" } ?? "").")
                    }
                    names.append(name)
                }
                if !names.contains(where: { FeatureSet.bit(named: $0) == 32 }) {
                    throw fail(table, "features", "features must include VERSION_1 (a VF cannot stop offering it).")
                }
                result.featureNames = names
            }
            if let value = table["features-mask"] {
                guard let text = value.string, let mask = FeatureSet(mask: text) else {
                    throw fail(table, "features-mask", "features-mask must be a string holding a number, e.g. \"0x100000020\".")
                }
                guard result.featureNames == nil else { throw fail(table, "features-mask", "give features or features-mask, not both.") }
                guard mask.contains(.version1) else { throw fail(table, "features-mask", "features-mask must include VERSION_1 (bit 32).") }
                result.featuresMask = mask
            }
            if let value = table["on-failure"] {
                guard let text = value.string, let action = FailureAction(rawValue: text) else {
                    throw fail(table, "on-failure", "on-failure must be one of \(FailureAction.allCases.map(\.rawValue).joined(separator: ", ")).")
                }
                result.onFailure = action
            }
            return result
        }

        /// `hold-vf-drivers` of `table`, or `inherited` when it does not say.
        func holdFlag(_ table: PolicyTable, inherited: Bool) throws(PolicyError) -> Bool {
            guard let value = table["hold-vf-drivers"] else { return inherited }
            guard let flag = value.bool else { throw fail(table, "hold-vf-drivers", "hold-vf-drivers must be true or false.") }
            return flag
        }
        /// The tables of the array of tables `key` in `table` (written `[[header]]`).
        func elements(_ table: PolicyTable, _ key: String, header: String) throws(PolicyError) -> [PolicyTable] {
            guard let value = table[key] else { return [] }
            guard let array = value.array else { throw fail(table, key, "\(key) must be an array of tables: write [[\(header)]].") }
            var tables: [PolicyTable] = []
            for item in array {
                guard let element = item.table else { throw PolicyError(file: file, position: item.position, message: "each [[\(header)]] must be a table.") }
                tables.append(element)
            }
            return tables
        }

        var defaults = DesiredResources()
        var holdVFDrivers = true
        if let value = table["defaults"] {
            guard let defaultsTable = value.table else { throw fail(table, "defaults", "[defaults] must be a table.") }
            try checkKeys(defaultsTable, allowed: Self.defaultKeys, path: "defaults")
            defaults = try resources(defaultsTable, type: nil, inherited: .bindAnyway)
            holdVFDrivers = try holdFlag(defaultsTable, inherited: holdVFDrivers)
        }

        var rules: [PFRule] = []
        for (index, pf) in try elements(table, "pf", header: "pf").enumerated() {
            let path = "pf[\(index)]"
            try checkKeys(pf, allowed: Self.pfKeys, path: path)
            guard let matchTable = pf["match"]?.table else { throw fail(pf, "[[pf]] needs match = { … } (address, vendor, device, subsystem-vendor, subsystem-device or type).") }
            try checkKeys(matchTable, allowed: Self.matchKeys, path: path + ".match")
            var match = PFMatch()
            func hexID(_ key: String) throws(PolicyError) -> UInt16? {
                guard let value = matchTable[key] else { return nil }
                let number: Int?
                if let int = value.int { number = int } else if let text = value.string {
                    number = text.lowercased().hasPrefix("0x") ? Int(text.dropFirst(2), radix: 16) : Int(text, radix: 16)
                } else { number = nil }
                guard let number, (0...0xffff).contains(number) else {
                    throw fail(matchTable, key, "\(key) must be a 16-bit id such as \"0x1af4\".")
                }
                return UInt16(number)
            }
            if let value = matchTable["address"] {
                guard let text = value.string, let address = PCIAddress(text) else {
                    throw fail(matchTable, "address", "address must be a PCI address such as \"0000:3b:00.0\".")
                }
                match.address = address
            }
            match.vendorID = try hexID("vendor")
            match.deviceID = try hexID("device")
            match.subsystemVendorID = try hexID("subsystem-vendor")
            match.subsystemID = try hexID("subsystem-device")
            if let value = matchTable["type"] {
                guard let text = value.string, let type = VirtioDeviceType(name: text) else {
                    throw fail(matchTable, "type", "type must be a virtio device type name such as \"net\" or \"block\".")
                }
                match.type = type
            }
            guard matchTable.keys.count > 0 else { throw fail(pf, "match", "match must name at least one of \(Self.matchKeys.sorted().joined(separator: ", ")).") }
            if let earlier = rules.first(where: { $0.match == match }) {
                throw fail(pf, "match", "duplicate match: the [[pf]] at line \(earlier.position.line) already matches \(match).")
            }
            let hold = try holdFlag(pf, inherited: holdVFDrivers)
            var vfRules: [VFRule] = []
            for (vfIndex, vfTable) in try elements(pf, "vf", header: "pf.vf").enumerated() {
                let vfPath = "\(path).vf[\(vfIndex)]"
                try checkKeys(vfTable, allowed: Self.vfKeys, path: vfPath)
                let selection: VFSelection
                if let value = vfTable["vfs"] {
                    if let number = value.int, number >= 0 { selection = .ranges([number...number]) } else if let text = value.string, let parsed = VFSelection(text) {
                        selection = parsed
                    } else {
                        throw fail(vfTable, "vfs", "vfs must be \"all\", a VF index, or ranges such as \"0-3,8\".")
                    }
                } else {
                    selection = .all
                }
                let position = vfTable.keyPosition("vfs") ?? vfTable.position
                if let overlapping = vfRules.first(where: { $0.vfs.overlaps(selection) }) {
                    throw fail(vfTable, "vfs", "vfs \(selection) overlaps vfs \(overlapping.vfs) at line \(overlapping.position.line).")
                }
                vfRules.append(VFRule(vfs: selection, resources: try resources(vfTable, type: match.type, inherited: defaults.onFailure),
                                      position: position))
            }
            rules.append(PFRule(match: match, vfRules: vfRules, holdVFDrivers: hold, position: pf.keyPosition("match") ?? pf.position))
        }
        self.init(defaults: defaults, holdVFDrivers: holdVFDrivers, pfs: rules)
    }
}
