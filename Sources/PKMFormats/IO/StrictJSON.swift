import Foundation

/// A JSON value as the strict readers see it: the pkmz header, the safetensors header and the
/// sharded safetensors index (package-internal; one parser for every JSON header we read).
///
/// Unlike `JSONSerialization`, numbers keep their source text (so a 64-bit offset is read exactly
/// and `1.0` is not mistaken for an integer), object members keep their order and the byte range
/// of their value (so the header's `config` object is handed out verbatim), duplicate keys are
/// refused, and nesting is capped so hostile input cannot exhaust the stack.
indirect enum StrictJSON: Equatable {
    case null
    case bool(Bool)
    /// The number's text exactly as written (validated against the JSON grammar).
    case number(String)
    case string(String)
    case array([StrictJSON])
    case object([Member])

    /// One object member.
    struct Member: Equatable {
        var key: String
        var value: StrictJSON
        /// Byte range of the value's text in the parsed document.
        var range: Range<Int>
    }

    /// A short name of the value's type, for error messages.
    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// Members of an object, or nil for other values.
    var members: [Member]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The value of member `key` of an object (nil for a missing key or a non-object).
    subscript(key: String) -> StrictJSON? {
        members?.first { $0.key == key }?.value
    }

    /// A JSON number read as an integer.
    enum Integer: Equatable {
        case value(Int)
        /// An integer beyond `Int`'s range.
        case tooLarge
        /// Not a number, or a number written with a fraction or exponent.
        case notInteger
    }

    /// The value as an integer the way serde reads `usize`/`i64`: JSON integers only, so `2.0`,
    /// `1e3` and `true` are not integers.
    var integer: Integer {
        guard case .number(let text) = self else { return .notInteger }
        guard !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) else { return .notInteger }
        return Int(text).map(Integer.value) ?? .tooLarge
    }

    /// The value's text for error messages (numbers as written, strings quoted, containers by type).
    var shortText: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let text): return text
        case .string(let text): return JSONText.quoted(String(text.prefix(64)))
        case .array: return "[…]"
        case .object: return "{…}"
        }
    }
}

/// Why a JSON document did not parse, and at which byte.
struct StrictJSONError: Error, Equatable {
    var message: String
    var offset: Int
    /// For a repeated key: the keys leading to it from the top, the repeated key last
    /// (e.g. `["w"]` for a top-level duplicate, `["w", "dtype"]` for a field repeated inside `w`).
    var duplicateKeyPath: [String]? = nil
}

/// A strict RFC 8259 parser over UTF-8 bytes.
struct StrictJSONParser {
    /// Deepest nesting of arrays and objects accepted.
    static let maxDepth = 128

    private let bytes: [UInt8]
    private var position = 0
    private var depth = 0
    /// Keys of the members whose values are being parsed, outermost first.
    private var keyPath: [String] = []

    /// Parses one complete document (a value surrounded by optional whitespace).
    static func parse(_ bytes: [UInt8]) throws(StrictJSONError) -> StrictJSON {
        var parser = StrictJSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else {
            throw StrictJSONError(message: "unexpected text after the JSON value", offset: parser.position)
        }
        return value
    }

    private init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private func fail(_ message: String) -> StrictJSONError {
        StrictJSONError(message: message, offset: position)
    }

    private mutating func parseValue() throws(StrictJSONError) -> StrictJSON {
        guard position < bytes.count else { throw fail("unexpected end of JSON") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("unexpected character \(Self.describe(bytes[position]))")
        }
    }

    private static func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : String(format: "0x%02X", byte)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(StrictJSONError) {
        let count = literal.utf8CodeUnitCount
        guard count <= bytes.count - position else { throw fail("unexpected end of JSON") }
        let start = literal.utf8Start
        for index in 0..<count where bytes[position + index] != start[index] {
            throw fail("invalid literal")
        }
        position += count
    }

    private mutating func enter() throws(StrictJSONError) {
        depth += 1
        guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func parseObject() throws(StrictJSONError) -> StrictJSON {
        try enter()
        position += 1
        var members: [StrictJSON.Member] = []
        var seen = Set<String>()
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw fail("expected a member name in double quotes")
            }
            let keyOffset = position
            let key = try parseString()
            guard seen.insert(key).inserted else {
                throw StrictJSONError(message: "duplicate key \"\(key)\"", offset: keyOffset, duplicateKeyPath: keyPath + [key])
            }
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            position += 1
            skipWhitespace()
            let start = position
            keyPath.append(key)
            let value = try parseValue()
            keyPath.removeLast()
            members.append(StrictJSON.Member(key: key, value: value, range: start..<position))
            skipWhitespace()
            guard position < bytes.count else { throw fail("unexpected end of JSON inside an object") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "}") { position += 1; break }
            throw fail("expected ',' or '}'")
        }
        depth -= 1
        return .object(members)
    }

    private mutating func parseArray() throws(StrictJSONError) -> StrictJSON {
        try enter()
        position += 1
        var elements: [StrictJSON] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            guard position < bytes.count else { throw fail("unexpected end of JSON inside an array") }
            if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
            if bytes[position] == UInt8(ascii: "]") { position += 1; break }
            throw fail("expected ',' or ']'")
        }
        depth -= 1
        return .array(elements)
    }

    private mutating func parseNumber() throws(StrictJSONError) -> String {
        let start = position
        func digits(_ parser: inout StrictJSONParser) -> Int {
            let first = parser.position
            while parser.position < parser.bytes.count,
                  (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(parser.bytes[parser.position]) {
                parser.position += 1
            }
            return parser.position - first
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < bytes.count else { throw fail("incomplete number") }
        if bytes[position] == UInt8(ascii: "0") {
            position += 1
        } else if digits(&self) == 0 {
            throw fail("invalid number")
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits(&self) > 0 else { throw fail("expected digits after the decimal point") }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            guard digits(&self) > 0 else { throw fail("expected digits in the exponent") }
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func parseHex4() throws(StrictJSONError) -> UInt32 {
        guard bytes.count - position >= 4 else { throw fail("incomplete \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail("invalid hex digit in \\u escape")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    private mutating func parseString() throws(StrictJSONError) -> String {
        let open = position
        position += 1
        var decoded: [UInt8] = []
        var runStart = position
        while true {
            guard position < bytes.count else {
                throw StrictJSONError(message: "unterminated string", offset: open)
            }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                decoded.append(contentsOf: bytes[runStart..<position])
                position += 1
                break
            }
            if byte < 0x20 { throw fail("control character \(Self.describe(byte)) in a string (escape it)") }
            if byte != UInt8(ascii: "\\") {
                position += 1
                continue
            }
            decoded.append(contentsOf: bytes[runStart..<position])
            position += 1
            guard position < bytes.count else { throw fail("incomplete escape") }
            let escape = bytes[position]
            position += 1
            switch escape {
            case UInt8(ascii: "\""): decoded.append(0x22)
            case UInt8(ascii: "\\"): decoded.append(0x5C)
            case UInt8(ascii: "/"): decoded.append(0x2F)
            case UInt8(ascii: "b"): decoded.append(0x08)
            case UInt8(ascii: "f"): decoded.append(0x0C)
            case UInt8(ascii: "n"): decoded.append(0x0A)
            case UInt8(ascii: "r"): decoded.append(0x0D)
            case UInt8(ascii: "t"): decoded.append(0x09)
            case UInt8(ascii: "u"):
                var scalarValue = try parseHex4()
                if (0xD800...0xDBFF).contains(scalarValue) {
                    guard bytes.count - position >= 6, bytes[position] == UInt8(ascii: "\\"),
                          bytes[position + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired UTF-16 surrogate in \\u escape")
                    }
                    position += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired UTF-16 surrogate in \\u escape") }
                    scalarValue = 0x10000 + ((scalarValue - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalarValue) {
                    throw fail("unpaired UTF-16 surrogate in \\u escape")
                }
                guard let scalar = Unicode.Scalar(scalarValue) else { throw fail("invalid \\u escape") }
                decoded.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw fail("invalid escape \\\(Self.describe(escape))")
            }
            runStart = position
        }
        guard let text = String(bytes: decoded, encoding: .utf8) else {
            throw StrictJSONError(message: "string is not valid UTF-8", offset: open)
        }
        return text
    }
}

/// JSON text output for the header writers (pkmz, safetensors).
enum JSONText {
    /// `text` as a JSON string literal: quotes, backslashes and control characters escaped,
    /// everything else as UTF-8.
    static func quoted(_ text: String) -> String {
        var output = "\""
        output.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            default:
                if scalar.value < 0x20 {
                    output += String(format: "\\u%04x", scalar.value)
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        output += "\""
        return output
    }
}
