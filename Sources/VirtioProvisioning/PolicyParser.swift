import PCIConfig
import TOMLKit
import VirtioSpec

/// Where each key of a TOML document is: a scan of the text that follows table headers and
/// `key =` lines (including keys of one-line inline tables). TOMLKit parses and validates
/// the document; this only points error messages at the right line and column.
struct KeyLocator {
    /// "pf[0].vf[1].features" → position of `features`.
    var positions: [String: SourcePosition] = [:]

    init(_ text: String) {
        var arrayCounts: [String: Int] = [:]
        var current = ""
        for (lineIndex, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = Array(rawLine)
            var column = 0
            while column < line.count, line[column] == " " || line[column] == "\t" { column += 1 }
            guard column < line.count, line[column] != "#" else { continue }
            let lineNumber = lineIndex + 1
            if line[column] == "[" {
                let isArray = column + 1 < line.count && line[column + 1] == "["
                let start = column + (isArray ? 2 : 1)
                guard let end = line[start...].firstIndex(of: "]") else { continue }
                let name = String(line[start..<end]).trimmingSpaces
                // Nested array tables ([[pf.vf]]) belong to the latest element of their parent.
                let parts = name.split(separator: ".").map(String.init)
                var path = ""
                for (index, part) in parts.enumerated() {
                    let prefix = path.isEmpty ? part : path + "." + part
                    if index == parts.count - 1 {
                        if isArray {
                            let count = arrayCounts[prefix, default: 0]
                            arrayCounts[prefix] = count + 1
                            path = "\(prefix)[\(count)]"
                        } else {
                            path = prefix
                        }
                    } else {
                        let count = arrayCounts[prefix, default: 0]
                        path = count > 0 ? "\(prefix)[\(count - 1)]" : prefix
                    }
                }
                current = path
                positions[current] = SourcePosition(line: lineNumber, column: column + 1)
                continue
            }
            guard let equals = line[column...].firstIndex(of: "=") else { continue }
            let key = String(line[column..<equals]).trimmingSpaces.trimmingQuotes
            let path = current.isEmpty ? key : current + "." + key
            positions[path] = SourcePosition(line: lineNumber, column: column + 1)
            // Keys inside a one-line inline table: match = { address = "…", type = "net" }
            if let brace = line[equals...].firstIndex(of: "{") {
                var index = brace + 1
                while index < line.count {
                    while index < line.count, line[index] == " " || line[index] == "," { index += 1 }
                    guard index < line.count, line[index] != "}", let innerEquals = line[index...].firstIndex(of: "=") else { break }
                    let inner = String(line[index..<innerEquals]).trimmingSpaces.trimmingQuotes
                    positions[path + "." + inner] = SourcePosition(line: lineNumber, column: index + 1)
                    // Skip the value: to the next comma outside quotes.
                    var cursor = innerEquals + 1
                    var quoted = false
                    while cursor < line.count, quoted || (line[cursor] != "," && line[cursor] != "}") {
                        if line[cursor] == "\"" { quoted.toggle() }
                        cursor += 1
                    }
                    index = cursor
                }
            }
        }
    }

    func position(_ path: String, fallback: String? = nil) -> SourcePosition {
        positions[path] ?? fallback.flatMap { positions[$0] } ?? SourcePosition(line: 1, column: 1)
    }
}

extension String {
    var trimmingSpaces: String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars = scalars.dropFirst() }
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" { scalars = scalars.dropLast() }
        return String(scalars)
    }
    var trimmingQuotes: String {
        hasPrefix("\"") && hasSuffix("\"") && count >= 2 ? String(dropFirst().dropLast()) : self
    }
}

extension ProvisioningPolicy {
    static let topKeys: Set<String> = ["defaults", "pf"]
    static let resourceKeys: Set<String> = ["msix-vectors", "features", "features-mask", "on-failure"]
    static let defaultKeys = resourceKeys.union(["hold-vf-drivers"])
    static let pfKeys: Set<String> = ["match", "vf", "hold-vf-drivers"]
    static let vfKeys = resourceKeys.union(["vfs"])
    static let matchKeys: Set<String> = ["address", "vendor", "device", "subsystem-vendor", "subsystem-device", "type"]

    /// Parses and validates a policy. Every error names the line and column.
    public init(text: String, file: String) throws(PolicyError) {
        // Outside comments a policy is ASCII: ids, addresses, feature names. Anything else
        // (control bytes, invalid UTF-8, other scripts) is refused before the TOML parser sees
        // it — the parser (toml++ inside TOMLKit) aborts on some such input (found by
        // fuzzing). Comments may hold any text; they are blanked out (positions kept).
        var cleaned: [UInt8] = []
        cleaned.reserveCapacity(text.utf8.count)
        var line = 1
        var column = 1
        var inComment = false
        var quoted = false
        for byte in text.utf8 {
            if byte == 0x0a {
                line += 1; column = 1; inComment = false; quoted = false
                cleaned.append(byte)
                continue
            }
            if !inComment && !quoted && byte == UInt8(ascii: "#") { inComment = true }
            if inComment {
                // Keep one byte per column for ASCII; drop UTF-8 continuation bytes.
                if byte & 0xc0 != 0x80 { cleaned.append(byte == UInt8(ascii: "#") ? byte : 0x20) }
                column += 1
                continue
            }
            guard byte == 0x09 || byte == 0x0d || (0x20...0x7e).contains(byte) else {
                throw PolicyError(file: file, position: SourcePosition(line: line, column: column),
                                  message: "byte \(hex(byte, width: 2)) is not printable ASCII; outside comments a policy is plain ASCII text.")
            }
            if byte == UInt8(ascii: "\"") { quoted.toggle() }
            cleaned.append(byte)
            column += 1
        }
        let text = String(decoding: cleaned, as: UTF8.self)
        var recognizer = PolicyRecognizer(text, file: file)
        try recognizer.recognize()
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch let error as TOMLParseError {
            throw PolicyError(file: file, position: SourcePosition(line: error.source.begin.line, column: error.source.begin.column),
                              message: "syntax error: \(error.description)")
        } catch {
            throw PolicyError(file: file, position: SourcePosition(line: 1, column: 1), message: "syntax error: \(error)")
        }
        let locator = KeyLocator(text)
        func fail(_ path: String, _ message: String) -> PolicyError {
            PolicyError(file: file, position: locator.position(path), message: message)
        }
        func checkKeys(_ table: TOMLTable, allowed: Set<String>, path: String) throws(PolicyError) {
            for key in table.keys.sorted() where !allowed.contains(key) {
                let full = path.isEmpty ? key : path + "." + key
                throw fail(full, "unknown key '\(key)'\(path.isEmpty ? "" : " in [\(path)]"); expected one of \(allowed.sorted().joined(separator: ", ")).")
            }
        }
        try checkKeys(table, allowed: Self.topKeys, path: "")

        func resources(_ table: TOMLTable, path: String, type: VirtioDeviceType?, inherited: FailureAction) throws(PolicyError) -> DesiredResources {
            var result = DesiredResources(onFailure: inherited)
            if let value = table["msix-vectors"] {
                guard let vectors = value.int else { throw fail(path + ".msix-vectors", "msix-vectors must be a whole number.") }
                guard (0...Self.maximumVectors).contains(vectors) else {
                    throw fail(path + ".msix-vectors", "msix-vectors \(vectors) is out of range (0 to \(Self.maximumVectors), the MSI-X limit).")
                }
                result.msixVectors = vectors
            }
            if let value = table["features"] {
                guard let array = value.array else { throw fail(path + ".features", "features must be an array of names, e.g. [\"VERSION_1\", \"MAC\"].") }
                var names: [String] = []
                for item in array {
                    guard let name = item.string else { throw fail(path + ".features", "features must hold names (strings).") }
                    let types: [VirtioDeviceType?] = type.map { [$0] } ?? [nil, .net, .block]
                    guard types.contains(where: { FeatureSet.bit(named: name, for: $0) != nil }) else {
                        throw fail(path + ".features", "unknown feature '\(name)'\(type.map { " for a \($0.name) device" } ?? "").")
                    }
                    names.append(name)
                }
                if !names.contains(where: { FeatureSet.bit(named: $0) == 32 }) {
                    throw fail(path + ".features", "features must include VERSION_1 (a VF cannot stop offering it).")
                }
                result.featureNames = names
            }
            if let value = table["features-mask"] {
                guard let text = value.string, let mask = FeatureSet(mask: text) else {
                    throw fail(path + ".features-mask", "features-mask must be a string holding a number, e.g. \"0x100000020\".")
                }
                guard result.featureNames == nil else { throw fail(path + ".features-mask", "give features or features-mask, not both.") }
                guard mask.contains(.version1) else { throw fail(path + ".features-mask", "features-mask must include VERSION_1 (bit 32).") }
                result.featuresMask = mask
            }
            if let value = table["on-failure"] {
                guard let text = value.string, let action = FailureAction(rawValue: text) else {
                    throw fail(path + ".on-failure", "on-failure must be one of \(FailureAction.allCases.map(\.rawValue).joined(separator: ", ")).")
                }
                result.onFailure = action
            }
            return result
        }

        var defaults = DesiredResources()
        var holdVFDrivers = true
        if let value = table["defaults"] {
            guard let defaultsTable = value.table else { throw fail("defaults", "[defaults] must be a table.") }
            try checkKeys(defaultsTable, allowed: Self.defaultKeys, path: "defaults")
            defaults = try resources(defaultsTable, path: "defaults", type: nil, inherited: .bindAnyway)
            if let hold = defaultsTable["hold-vf-drivers"] {
                guard let flag = hold.bool else { throw fail("defaults.hold-vf-drivers", "hold-vf-drivers must be true or false.") }
                holdVFDrivers = flag
            }
        }

        var rules: [PFRule] = []
        if let value = table["pf"] {
            guard let array = value.array else { throw fail("pf", "pf must be an array of tables: write [[pf]].") }
            for (index, item) in array.enumerated() {
                let path = "pf[\(index)]"
                guard let pf = item.table else { throw fail(path, "each [[pf]] must be a table.") }
                try checkKeys(pf, allowed: Self.pfKeys, path: path)
                guard let matchTable = pf["match"]?.table else { throw fail(path, "[[pf]] needs match = { … } (address, vendor, device, subsystem-vendor, subsystem-device or type).") }
                try checkKeys(matchTable, allowed: Self.matchKeys, path: path + ".match")
                var match = PFMatch()
                func hexID(_ key: String) throws(PolicyError) -> UInt16? {
                    guard let value = matchTable[key] else { return nil }
                    let number: Int?
                    if let int = value.int { number = int } else if let text = value.string {
                        number = text.lowercased().hasPrefix("0x") ? Int(text.dropFirst(2), radix: 16) : Int(text, radix: 16)
                    } else { number = nil }
                    guard let number, (0...0xffff).contains(number) else {
                        throw fail(path + ".match." + key, "\(key) must be a 16-bit id such as \"0x1af4\".")
                    }
                    return UInt16(number)
                }
                if let value = matchTable["address"] {
                    guard let text = value.string, let address = PCIAddress(text) else {
                        throw fail(path + ".match.address", "address must be a PCI address such as \"0000:3b:00.0\".")
                    }
                    match.address = address
                }
                match.vendorID = try hexID("vendor")
                match.deviceID = try hexID("device")
                match.subsystemVendorID = try hexID("subsystem-vendor")
                match.subsystemID = try hexID("subsystem-device")
                if let value = matchTable["type"] {
                    guard let text = value.string, let type = VirtioDeviceType(name: text) else {
                        throw fail(path + ".match.type", "type must be a virtio device type name such as \"net\" or \"block\".")
                    }
                    match.type = type
                }
                guard matchTable.keys.count > 0 else { throw fail(path + ".match", "match must name at least one of \(Self.matchKeys.sorted().joined(separator: ", ")).") }
                if let earlier = rules.first(where: { $0.match == match }) {
                    throw fail(path + ".match", "duplicate match: the [[pf]] at line \(earlier.position.line) already matches \(match).")
                }
                var hold = holdVFDrivers
                if let value = pf["hold-vf-drivers"] {
                    guard let flag = value.bool else { throw fail(path + ".hold-vf-drivers", "hold-vf-drivers must be true or false.") }
                    hold = flag
                }
                var vfRules: [VFRule] = []
                if let vfValue = pf["vf"] {
                    guard let vfArray = vfValue.array else { throw fail(path + ".vf", "vf must be an array of tables: write [[pf.vf]].") }
                    for (vfIndex, vfItem) in vfArray.enumerated() {
                        let vfPath = "\(path).vf[\(vfIndex)]"
                        guard let vfTable = vfItem.table else { throw fail(vfPath, "each [[pf.vf]] must be a table.") }
                        try checkKeys(vfTable, allowed: Self.vfKeys, path: vfPath)
                        let selection: VFSelection
                        if let value = vfTable["vfs"] {
                            if let number = value.int, number >= 0 { selection = .ranges([number...number]) } else if let text = value.string, let parsed = VFSelection(text) {
                                selection = parsed
                            } else {
                                throw fail(vfPath + ".vfs", "vfs must be \"all\", a VF index, or ranges such as \"0-3,8\".")
                            }
                        } else {
                            selection = .all
                        }
                        let position = locator.position(vfPath + ".vfs", fallback: vfPath)
                        if let overlapping = vfRules.first(where: { $0.vfs.overlaps(selection) }) {
                            throw fail(vfPath + ".vfs", "vfs \(selection) overlaps vfs \(overlapping.vfs) at line \(overlapping.position.line).")
                        }
                        vfRules.append(VFRule(vfs: selection, resources: try resources(vfTable, path: vfPath, type: match.type, inherited: defaults.onFailure),
                                              position: position))
                    }
                }
                rules.append(PFRule(match: match, vfRules: vfRules, holdVFDrivers: hold, position: locator.position(path + ".match", fallback: path)))
            }
        }
        self.init(defaults: defaults, holdVFDrivers: holdVFDrivers, pfs: rules)
    }
}
