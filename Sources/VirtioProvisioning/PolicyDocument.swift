import VirtioSpec

/// A table of a policy file, with where each of its keys is written.
final class PolicyTable {
    enum Origin {
        /// The document itself.
        case root
        /// Defined by a `[header]`.
        case header
        /// Created on the way to a deeper header (`[a.b]` creates `a`); a header may define it later.
        case implicit
        /// Created by a dotted key (`a.b = 1` creates `a`).
        case dotted
        /// `{ … }`: complete as written.
        case inline
        /// An element of an array of tables (`[[x]]`).
        case element
    }

    var origin: Origin
    /// Where the table starts: its header's `[`, its `{`, or the key that created it.
    let position: SourcePosition
    private(set) var entries: [String: PolicyEntry] = [:]

    init(origin: Origin, position: SourcePosition) {
        self.origin = origin
        self.position = position
    }

    var keys: [String] { Array(entries.keys) }
    subscript(key: String) -> PolicyValue? { entries[key]?.value }
    /// Where `key` is written (for a table made by a header: the header).
    func keyPosition(_ key: String) -> SourcePosition? { entries[key]?.key }

    func insert(_ key: String, at position: SourcePosition, _ value: PolicyValue) {
        entries[key] = PolicyEntry(key: position, value: value)
    }
}

/// A key of a table: where it is written and what it holds.
struct PolicyEntry {
    var key: SourcePosition
    var value: PolicyValue
}

/// The elements of an array of tables (`[[pf]]`), appended as headers appear.
final class PolicyTableArray {
    var tables: [PolicyTable]
    init(_ first: PolicyTable) { tables = [first] }
}

/// A value of the policy's TOML subset, with its position.
enum PolicyValue {
    case string(String, SourcePosition)
    case integer(Int, SourcePosition)
    case boolean(Bool, SourcePosition)
    case array([PolicyValue], SourcePosition)
    case table(PolicyTable)
    case tables(PolicyTableArray)

    var string: String? { if case .string(let text, _) = self { text } else { nil } }
    var int: Int? { if case .integer(let number, _) = self { number } else { nil } }
    var bool: Bool? { if case .boolean(let flag, _) = self { flag } else { nil } }
    var table: PolicyTable? { if case .table(let table) = self { table } else { nil } }
    /// A written array, or an array of tables (each element as `.table`).
    var array: [PolicyValue]? {
        switch self {
        case .array(let items, _): items
        case .tables(let array): array.tables.map { .table($0) }
        default: nil
        }
    }

    var position: SourcePosition {
        switch self {
        case .string(_, let position), .integer(_, let position), .boolean(_, let position), .array(_, let position): position
        case .table(let table): table.position
        case .tables(let array): array.tables[0].position
        }
    }

    /// How an error names what a key holds.
    var kindName: String {
        switch self {
        case .string: "a string"
        case .integer: "a number"
        case .boolean: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .tables: "an array of tables"
        }
    }
}

/// The policy file read in one pass: the TOML subset a policy uses, parsed into tables whose
/// every key and value knows its line and column. There is no other reader of the text (no
/// pre-check, no second parser): what this does not accept is refused here, as
/// `FILE:LINE:COLUMN: message`, and it never traps on any input (see `FuzzPolicy`).
///
///     document     = { blank | comment | header | keyvalue }      (lines end in LF or CRLF)
///     header       = "[" key "]" | "[[" key "]]"
///     keyvalue     = key "=" value
///     key          = part { "." part }      part = bare | basic-string
///     value        = basic-string | integer | boolean | array | inline-table
///     basic-string = "\"" { char | \" | \\ | \n | \t | \r } "\""   (one line)
///     integer      = [+|-] decimal | "0x" hex                        ('_' between digits)
///     array        = "[" [ value { "," value } [","] ] "]"          (may span lines, with comments)
///     inline-table = "{" [ keyvalue { "," keyvalue } ] "}"           (one line)
///
/// Outside comments a policy is printable ASCII (tab allowed; CR only before LF); comments may
/// hold any text but control characters. Tables follow TOML's rules: a table is defined once, an
/// inline table is closed, `[[x]]` appends to an array of tables and later headers and keys
/// go into its latest element.
struct PolicyReader {
    private let bytes: [UInt8]
    private let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private let root = PolicyTable(origin: .root, position: SourcePosition(line: 1, column: 1))
    /// The table that `key = value` lines go into (the latest header's).
    private var current: PolicyTable

    static let maximumDepth = 8

    init(_ text: String, file: String) {
        bytes = Array(text.utf8)
        self.file = file
        current = root
    }

    /// Reads the whole document.
    static func read(_ text: String, file: String) throws(PolicyError) -> PolicyTable {
        var reader = PolicyReader(text, file: file)
        try reader.document()
        return reader.root
    }

    // MARK: Bytes and positions

    private var position: SourcePosition { SourcePosition(line: line, column: index - lineStart + 1) }
    private var byte: UInt8? { index < bytes.count ? bytes[index] : nil }
    private var isCRLF: Bool { byte == 0x0d && index + 1 < bytes.count && bytes[index + 1] == 0x0a }
    private var isLineEnd: Bool { byte == 0x0a || isCRLF }

    private static func isBare(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) || byte == 0x5f || byte == 0x2d
    }
    private static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    private static func hexDigit(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: Int(byte - 0x30)
        case 0x41...0x46: Int(byte - 0x41 + 10)
        case 0x61...0x66: Int(byte - 0x61 + 10)
        default: nil
        }
    }

    private mutating func advance() {
        if byte == 0x0a { line += 1; lineStart = index + 1 }
        index += 1
    }

    /// Past a line end (LF or CRLF).
    private mutating func newline() {
        if isCRLF { index += 1 }
        advance()
    }

    /// An error at the current byte. A byte a policy never holds outside comments is named
    /// as such, whatever was expected there.
    private func fail(_ message: String) -> PolicyError {
        if let byte, !isCRLF, !(byte == 0x09 || byte == 0x0a || (0x20...0x7e).contains(byte)) {
            let why = byte == 0x0d
                ? "a carriage return (0x0d) may only end a line, before a line feed (CRLF)."
                : "byte \(hex(byte, width: 2)) is not printable ASCII; outside comments a policy is plain ASCII text."
            return PolicyError(file: file, position: position, message: why)
        }
        return PolicyError(file: file, position: position, message: message)
    }

    private func fail(at position: SourcePosition, _ message: String) -> PolicyError {
        PolicyError(file: file, position: position, message: message)
    }

    // MARK: Layout

    private mutating func skipSpaces() {
        while byte == 0x20 || byte == 0x09 { advance() }
    }

    /// Spaces, line ends and comments (inside a multi-line array).
    private mutating func skipBlank() throws(PolicyError) {
        while true {
            skipSpaces()
            if isLineEnd { newline() } else if byte == UInt8(ascii: "#") { try comment() } else { return }
        }
    }

    /// A comment up to (not including) its line end: any text but control characters.
    private mutating func comment() throws(PolicyError) {
        advance()
        while let byte, !isLineEnd {
            if byte < 0x20 && byte != 0x09 || byte == 0x7f {
                throw fail(at: position, byte == 0x0d ? "a carriage return (0x0d) may only end a line, before a line feed (CRLF)."
                                                      : "a control character (\(hex(byte, width: 2))) in a comment.")
            }
            advance()
        }
    }

    /// The rest of a line after a header or a value: spaces, a comment, the line end.
    private mutating func endOfLine() throws(PolicyError) {
        skipSpaces()
        if byte == UInt8(ascii: "#") { try comment() }
        guard let byte else { return }
        guard isLineEnd else { throw fail("unexpected '\(Character(UnicodeScalar(byte)))' at the end of the line.") }
        newline()
    }

    private mutating func document() throws(PolicyError) {
        while true {
            skipSpaces()
            guard let byte else { return }
            if isLineEnd { newline(); continue }
            if byte == UInt8(ascii: "#") { try endOfLine(); continue }
            if byte == UInt8(ascii: "[") { try header(); continue }
            try keyValue(into: current, depth: 0)
            try endOfLine()
        }
    }

    // MARK: Keys and tables

    /// `part { "." part }`, each part with its position.
    private mutating func key() throws(PolicyError) -> [(name: String, position: SourcePosition)] {
        var parts: [(name: String, position: SourcePosition)] = []
        while true {
            let start = position
            if byte == UInt8(ascii: "\"") {
                parts.append((try basicString(), start))
            } else {
                guard let first = byte, Self.isBare(first) else { throw fail("expected a key (letters, digits, '_' or '-').") }
                let from = index
                while let next = byte, Self.isBare(next) { advance() }
                parts.append((String(decoding: bytes[from..<index], as: UTF8.self), start))
            }
            skipSpaces()
            guard byte == UInt8(ascii: ".") else { return parts }
            advance()
            skipSpaces()
        }
    }

    private static func dotted(_ parts: [(name: String, position: SourcePosition)]) -> String {
        parts.map(\.name).joined(separator: ".")
    }

    /// `[a.b]` or `[[a.b]]`: makes the named table the one later keys go into.
    private mutating func header() throws(PolicyError) {
        let start = position
        advance()
        let isArray = byte == UInt8(ascii: "[")
        if isArray { advance() }
        skipSpaces()
        let parts = try key()
        guard byte == UInt8(ascii: "]") else { throw fail(isArray ? "an array-of-tables header must end with ]]." : "a table header must end with ].") }
        advance()
        if isArray {
            guard byte == UInt8(ascii: "]") else { throw fail("an array-of-tables header must end with ]].") }
            advance()
        }
        try endOfLine()

        let name = Self.dotted(parts)
        var table = root
        for part in parts.dropLast() {
            switch table[part.name] {
            case nil:
                let implicit = PolicyTable(origin: .implicit, position: start)
                table.insert(part.name, at: start, .table(implicit))
                table = implicit
            case .table(let inner) where inner.origin != .inline:
                table = inner
            case .tables(let array):
                table = array.tables[array.tables.count - 1]
            case let other?:
                throw fail(at: part.position, "[\(name)]: '\(part.name)' is already \(other.kindName) (line \(table.keyPosition(part.name)!.line)), so it cannot hold a table.")
            }
        }
        let last = parts[parts.count - 1]
        let earlier = table.keyPosition(last.name).map { " (line \($0.line))" } ?? ""
        if isArray {
            let element = PolicyTable(origin: .element, position: start)
            switch table[last.name] {
            case nil: table.insert(last.name, at: start, .tables(PolicyTableArray(element)))
            case .tables(let array): array.tables.append(element)
            case let other?: throw fail(at: start, "[[\(name)]]: '\(last.name)' is already \(other.kindName)\(earlier), not an array of tables.")
            }
            current = element
        } else {
            switch table[last.name] {
            case nil:
                let defined = PolicyTable(origin: .header, position: start)
                table.insert(last.name, at: start, .table(defined))
                current = defined
            case .table(let defined) where defined.origin == .implicit:
                defined.origin = .header
                current = defined
            case .tables:
                throw fail(at: start, "[\(name)] names an array of tables\(earlier): write [[\(name)]].")
            case .table(let defined) where defined.origin == .inline:
                throw fail(at: start, "[\(name)]: '\(last.name)' is an inline table\(earlier), complete as written; add its keys there.")
            case .table:
                throw fail(at: start, "table [\(name)] is defined twice; the first is at line \(table.keyPosition(last.name)!.line).")
            case let other?:
                throw fail(at: start, "[\(name)]: '\(last.name)' is already \(other.kindName)\(earlier).")
            }
        }
    }

    /// `key = value` into `table` (a dotted key creates the tables on its way).
    private mutating func keyValue(into table: PolicyTable, depth: Int) throws(PolicyError) {
        let parts = try key()
        guard byte == UInt8(ascii: "=") else { throw fail(depth == 0 ? "expected '=' after the key." : "expected '=' in an inline table.") }
        advance()
        skipSpaces()
        let value = try value(depth: depth)
        var target = table
        for part in parts.dropLast() {
            switch target[part.name] {
            case nil:
                let dotted = PolicyTable(origin: .dotted, position: part.position)
                target.insert(part.name, at: part.position, .table(dotted))
                target = dotted
            case .table(let inner) where inner.origin == .dotted:
                target = inner
            case let other?:
                throw fail(at: part.position, "'\(Self.dotted(parts))': '\(part.name)' is already \(other.kindName) (line \(target.keyPosition(part.name)!.line)); a dotted key cannot add to it.")
            }
        }
        let last = parts[parts.count - 1]
        if let earlier = target.keyPosition(last.name) {
            throw fail(at: last.position, "duplicate key '\(Self.dotted(parts))': it is already set at line \(earlier.line).")
        }
        target.insert(last.name, at: last.position, value)
    }

    // MARK: Values

    private mutating func value(depth: Int) throws(PolicyError) -> PolicyValue {
        guard depth < Self.maximumDepth else { throw fail("values are nested too deeply.") }
        let start = position
        switch byte {
        case UInt8(ascii: "\""):
            guard !bytes[index...].starts(with: "\"\"\"".utf8) else { throw fail("multi-line strings (\"\"\"...\"\"\") are not used in a policy.") }
            return .string(try basicString(), start)
        case UInt8(ascii: "'"):
            throw fail("a policy string is written in double quotes (\"...\"); literal strings ('...') are not used.")
        case UInt8(ascii: "["):
            advance()
            var items: [PolicyValue] = []
            try skipBlank()
            if byte == UInt8(ascii: "]") { advance(); return .array(items, start) }
            while true {
                items.append(try value(depth: depth + 1))
                try skipBlank()
                if byte == UInt8(ascii: ",") {
                    advance()
                    try skipBlank()
                    if byte == UInt8(ascii: "]") { advance(); return .array(items, start) }
                    continue
                }
                guard byte == UInt8(ascii: "]") else { throw fail("expected ',' or ']' in an array.") }
                advance()
                return .array(items, start)
            }
        case UInt8(ascii: "{"):
            advance()
            let table = PolicyTable(origin: .inline, position: start)
            skipSpaces()
            if byte == UInt8(ascii: "}") { advance(); return .table(table) }
            while true {
                try keyValue(into: table, depth: depth + 1)
                skipSpaces()
                if byte == UInt8(ascii: ",") { advance(); skipSpaces(); continue }
                guard byte == UInt8(ascii: "}") else { throw fail("expected ',' or '}' in an inline table (inline tables stay on one line).") }
                advance()
                return .table(table)
            }
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            for (word, flag) in [("true", true), ("false", false)] where bytes[index...].starts(with: word.utf8) {
                for _ in word.utf8 { advance() }
                if let next = byte, Self.isBare(next) { break }
                return .boolean(flag, start)
            }
            index = start.column - 1 + lineStart
            throw fail("expected a value (a string, a number, true/false, an array or an inline table).")
        default:
            return .integer(try integer(), start)
        }
    }

    /// A basic string on one line, with the escapes \" \\ \n \t \r.
    private mutating func basicString() throws(PolicyError) -> String {
        advance()
        var text: [UInt8] = []
        while let byte {
            if isLineEnd { throw fail("a string is not closed on its line.") }
            guard byte == 0x09 || (0x20...0x7e).contains(byte) else { throw fail("a control character in a string.") }
            advance()
            if byte == UInt8(ascii: "\"") { return String(decoding: text, as: UTF8.self) }
            if byte == UInt8(ascii: "\\") {
                let escapes: [UInt8: UInt8] = [UInt8(ascii: "\""): 0x22, UInt8(ascii: "\\"): 0x5c, UInt8(ascii: "n"): 0x0a, UInt8(ascii: "t"): 0x09, UInt8(ascii: "r"): 0x0d]
                guard let escaped = self.byte, let decoded = escapes[escaped] else {
                    throw fail("unsupported escape in a string (use \\\", \\\\, \\n, \\t or \\r).")
                }
                advance()
                text.append(decoded)
            } else {
                text.append(byte)
            }
        }
        throw fail("a string is not closed.")
    }

    /// `[+|-]` decimal (no leading zero) or `0x` hex; '_' only between two digits.
    private mutating func integer() throws(PolicyError) -> Int {
        let notAValue = "expected a value (a string, a number, true/false, an array or an inline table)."
        let start = position
        var negative = false
        var signed = false
        if byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-") { negative = byte == UInt8(ascii: "-"); signed = true; advance() }
        var radix = 10
        if byte == UInt8(ascii: "0"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "x") {
            guard !signed else { throw fail(at: start, "a hexadecimal number has no sign.") }
            radix = 16
            advance(); advance()
        }
        let digitsStart = position
        var value = 0
        var digits = 0
        var overflow = false
        while let next = byte {
            if next == UInt8(ascii: "_") {
                advance()
                guard digits > 0, let after = byte, (radix == 16 ? Self.hexDigit(after) : (Self.isDigit(after) ? 0 : nil)) != nil else {
                    throw fail("'_' in a number must stand between two digits.")
                }
                continue
            }
            guard let digit = radix == 16 ? Self.hexDigit(next) : (Self.isDigit(next) ? Int(next - 0x30) : nil) else { break }
            let (shifted, o1) = value.multipliedReportingOverflow(by: radix)
            let (sum, o2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            overflow = overflow || o1 || o2
            value = sum
            digits += 1
            advance()
        }
        guard digits > 0 else { throw fail(radix == 16 ? "expected hexadecimal digits after 0x." : notAValue) }
        if let next = byte, next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") || next == UInt8(ascii: ":") || (radix == 10 && next == UInt8(ascii: "-")) {
            throw fail("floating-point numbers and dates are not used in a policy.")
        }
        if radix == 10, digits > 1, bytes[lineStart + digitsStart.column - 1] == UInt8(ascii: "0") {
            throw fail(at: digitsStart, "a decimal number does not start with 0 (write 0x… for hexadecimal).")
        }
        guard !overflow else { throw fail(at: digitsStart, "the number is too large (at most 64 bits, signed).") }
        return value
    }
}
