/// A strict recognizer for the TOML subset a policy uses, run before the TOML parser.
///
/// TOMLKit's toml++ core asserts (aborts the process) on some malformed input — fuzzing
/// found `[[[[pfp` and a `}` closing an array. A root helper must never abort on a file, so
/// the text is first checked against this grammar, which reports the first deviation with
/// its line and column; only text it accepts reaches the parser:
///
///     document   = { blank | comment | header | keyvalue }
///     header     = "[" keys "]" | "[[" keys "]]"            (keys: bare, dotted)
///     keyvalue   = key "=" value
///     key        = bare | "\"" chars "\""
///     value      = string | integer | boolean | array | inline-table
///     array      = "[" [ value { "," value } [","] ] "]"    (may span lines, with comments)
///     inline-table = "{" [ key "=" value { "," key "=" value } ] "}"   (one line)
struct PolicyRecognizer {
    let bytes: [UInt8]
    var index = 0
    var line = 1
    var lineStart = 0
    let file: String

    init(_ text: String, file: String) {
        bytes = Array(text.utf8)
        self.file = file
    }

    var position: SourcePosition { SourcePosition(line: line, column: index - lineStart + 1) }
    func fail(_ message: String) -> PolicyError { PolicyError(file: file, position: position, message: message) }
    var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    static func isBare(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) || byte == 0x5f || byte == 0x2d
    }

    mutating func advance() {
        if current == 0x0a { line += 1; lineStart = index + 1 }
        index += 1
    }

    /// Spaces and tabs (and, when `newlines`, line breaks and comments).
    mutating func skipSpace(newlines: Bool = false) {
        while let byte = current {
            // A carriage return counts only as part of a CRLF line end (as in TOML).
            if byte == 0x20 || byte == 0x09 { advance() } else if newlines && (byte == 0x0a || isCRLF) { advance() } else if newlines && byte == UInt8(ascii: "#") {
                while let next = current, next != 0x0a { _ = next; advance() }
            } else { return }
        }
    }

    var isCRLF: Bool { current == 0x0d && index + 1 < bytes.count && bytes[index + 1] == 0x0a }

    /// The end of a line: optional spaces and comment, then a newline or the end.
    mutating func endOfLine() throws(PolicyError) {
        skipSpace()
        if current == UInt8(ascii: "#") {
            while let byte = current, byte != 0x0a {
                if byte < 0x20 && byte != 0x09 && !isCRLF { throw fail("a control character in a comment.") }
                advance()
            }
        }
        if isCRLF { advance() }
        guard current == nil || current == 0x0a else { throw fail("unexpected '\(Character(UnicodeScalar(current!)))' at the end of the line.") }
        if current == 0x0a { advance() }
    }

    mutating func recognize() throws(PolicyError) {
        while current != nil {
            skipSpace()
            guard let byte = current else { return }
            if byte == 0x0a || isCRLF { advance(); continue }
            if byte == UInt8(ascii: "#") { try endOfLine(); continue }
            if byte == UInt8(ascii: "[") { try header(); continue }
            try key()
            skipSpace()
            guard current == UInt8(ascii: "=") else { throw fail("expected '=' after the key.") }
            advance()
            skipSpace()
            try value(depth: 0)
            try endOfLine()
        }
    }

    mutating func header() throws(PolicyError) {
        advance()
        let double = current == UInt8(ascii: "[")
        if double { advance() }
        skipSpace()
        try bareKeys()
        skipSpace()
        guard current == UInt8(ascii: "]") else { throw fail(double ? "an array-of-tables header must end with ]]." : "a table header must end with ].") }
        advance()
        if double {
            guard current == UInt8(ascii: "]") else { throw fail("an array-of-tables header must end with ]].") }
            advance()
        }
        try endOfLine()
    }

    mutating func bareKeys() throws(PolicyError) {
        while true {
            guard let byte = current, Self.isBare(byte) else { throw fail("expected a key (letters, digits, '_' or '-').") }
            while let next = current, Self.isBare(next) { _ = next; advance() }
            skipSpace()
            guard current == UInt8(ascii: ".") else { return }
            advance()
            skipSpace()
        }
    }

    mutating func key() throws(PolicyError) {
        if current == UInt8(ascii: "\"") { try string(); return }
        try bareKeys()
    }

    mutating func string() throws(PolicyError) {
        let quote = current!
        advance()
        while let byte = current {
            if byte == 0x0a || byte == 0x0d { throw fail("a string is not closed on its line.") }
            if byte < 0x20 && byte != 0x09 { throw fail("a control character in a string.") }
            if byte == quote { advance(); return }
            if quote == UInt8(ascii: "\"") && byte == UInt8(ascii: "\\") {
                advance()
                guard let escaped = current, [UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "n"), UInt8(ascii: "t"), UInt8(ascii: "r")].contains(escaped) else {
                    throw fail("unsupported escape in a string (use \\\", \\\\, \\n, \\t or \\r).")
                }
            }
            advance()
        }
        throw fail("a string is not closed.")
    }

    mutating func value(depth: Int) throws(PolicyError) {
        guard depth < 8 else { throw fail("values are nested too deeply.") }
        guard let byte = current else { throw fail("expected a value.") }
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            try string()
        case UInt8(ascii: "["):
            advance()
            skipSpace(newlines: true)
            if current == UInt8(ascii: "]") { advance(); return }
            while true {
                try value(depth: depth + 1)
                skipSpace(newlines: true)
                if current == UInt8(ascii: ",") {
                    advance()
                    skipSpace(newlines: true)
                    if current == UInt8(ascii: "]") { advance(); return }
                    continue
                }
                guard current == UInt8(ascii: "]") else { throw fail("expected ',' or ']' in an array.") }
                advance()
                return
            }
        case UInt8(ascii: "{"):
            advance()
            skipSpace()
            if current == UInt8(ascii: "}") { advance(); return }
            while true {
                try key()
                skipSpace()
                guard current == UInt8(ascii: "=") else { throw fail("expected '=' in an inline table.") }
                advance()
                skipSpace()
                try value(depth: depth + 1)
                skipSpace()
                if current == UInt8(ascii: ",") { advance(); skipSpace(); continue }
                guard current == UInt8(ascii: "}") else { throw fail("expected ',' or '}' in an inline table (inline tables stay on one line).") }
                advance()
                return
            }
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            for word in ["true", "false"] where bytes[index...].starts(with: word.utf8) {
                for _ in word.utf8 { advance() }
                return
            }
            throw fail("expected a value (a string, a number, true/false, an array or an inline table).")
        default:
            // An integer: optional sign, decimal digits or 0x hex, '_' between digits.
            var digits = 0
            if byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-") { advance() }
            if current == UInt8(ascii: "0"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "x") {
                advance(); advance()
                while let next = current, (0x30...0x39).contains(next) || (0x41...0x46).contains(next) || (0x61...0x66).contains(next) || next == 0x5f { _ = next; advance(); digits += 1 }
            } else {
                while let next = current, (0x30...0x39).contains(next) || next == 0x5f { _ = next; advance(); digits += 1 }
            }
            guard digits > 0 else { throw fail("expected a value (a string, a number, true/false, an array or an inline table).") }
            if let next = current, next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") || next == UInt8(ascii: ":") {
                throw fail("floating-point numbers and dates are not used in a policy.")
            }
        }
    }
}
