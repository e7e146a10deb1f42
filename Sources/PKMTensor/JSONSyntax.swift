import Foundation

/// Where a JSON file's bytes (a tokenizer.json, a config.json) stop being valid JSON or UTF-8, for
/// error messages.
///
/// Why our own scan: Foundation's `JSONSerialization` and `JSONDecoder` errors say only that "the
/// data couldn't be read" / "was not valid JSON", with no position, so a hand-edited 30 MB
/// tokenizer.json could not be fixed from the message (issue 18). This scanner checks the RFC 8259 grammar (top-level scalars allowed, as the
/// parser is called with `.fragmentsAllowed`) without building anything, iteratively, so any
/// nesting depth costs one byte of stack per level, and reports the first byte that breaks it.
public enum JSONSyntax {
    /// "line L, column C (byte B)" of a 0-based byte offset: lines and columns count from 1,
    /// columns in characters of the line (bytes when the line is not UTF-8).
    public static func position(ofOffset offset: Int, in data: Data) -> String {
        let bytes = [UInt8](data.prefix(offset))
        var line = 1
        var lineStart = 0
        for (index, byte) in bytes.enumerated() where byte == 0x0A {
            line += 1
            lineStart = index + 1
        }
        let lineBytes = bytes[lineStart...]
        let column = (String(validating: lineBytes, as: UTF8.self)?.count ?? lineBytes.count) + 1
        return "line \(line), column \(column) (byte \(offset))"
    }

    /// The length of the longest prefix of `data` that is valid UTF-8.
    public static func validUTF8Prefix(_ data: Data) -> Int {
        let bytes = [UInt8](data)
        var index = 0
        while index < bytes.count {
            let lead = bytes[index]
            let length: Int
            switch lead {
            case 0x00...0x7F: length = 1
            case 0xC2...0xDF: length = 2
            case 0xE0...0xEF: length = 3
            case 0xF0...0xF4: length = 4
            default: return index
            }
            guard index + length <= bytes.count else { return index }
            let sequence = bytes[index..<(index + length)]
            guard String(validating: sequence, as: UTF8.self) != nil else { return index }
            index += length
        }
        return index
    }

    /// The deepest nesting a JSON document from a file may have before it reaches Foundation's parsers. Those
    /// recurse once per level and, past their own limit of 512 levels, trap while describing the error they raise
    /// (a SIGILL inside `JSONError.SourceLocation`, found by fuzzing the config decoder), so a crafted config.json,
    /// tokenizer.json or metadata string would stop the process instead of failing with a message. Real files nest
    /// a handful of levels (a tokenizer.json about 5).
    public static let maximumDepth = 100

    /// The byte offset where `data` opens its container number `limit + 1` deep, or nil when it never nests deeper
    /// than `limit` (brackets inside strings do not count; the scan builds nothing and uses no recursion).
    public static func depthExceeded(in data: Data, limit: Int = maximumDepth) -> Int? {
        var depth = 0, inString = false, escaped = false
        return data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Int? in
            for (offset, byte) in bytes.enumerated() {
                if inString {
                    if escaped { escaped = false } else if byte == 0x5C { escaped = true } else if byte == 0x22 { inString = false }
                    continue
                }
                switch byte {
                case 0x22: inString = true
                case 0x5B, 0x7B:
                    depth += 1
                    if depth > limit { return offset }
                case 0x5D, 0x7D: depth = max(0, depth - 1)
                default: break
                }
            }
            return nil
        }
    }

    /// "nested more than N levels deep at line L, column C (byte B)" when `data` nests deeper than ``maximumDepth``.
    public static func depthError(in data: Data) -> String? {
        depthExceeded(in: data).map { "nested more than \(maximumDepth) levels deep at \(position(ofOffset: $0, in: data))" }
    }

    /// The first syntax error of `data` as "what, at line L, column C (byte B)", or nil when the
    /// scan finds none (then the caller keeps Foundation's own reason).
    public static func firstError(in data: Data) -> String? {
        let utf8End = validUTF8Prefix(data)
        var scanner = Scanner(bytes: [UInt8](data.prefix(utf8End)))
        if let (offset, what) = scanner.scan() {
            return "\(what) at \(position(ofOffset: offset, in: data))"
        }
        if utf8End < data.count {
            return "the bytes at \(position(ofOffset: utf8End, in: data)) are not UTF-8"
        }
        return nil
    }

    private struct Scanner {
        let bytes: [UInt8]
        var index = 0
        /// Open containers: true for an object, false for an array.
        var open: [Bool] = []

        init(bytes: [UInt8]) { self.bytes = bytes }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        func found() -> String {
            guard let byte = current else { return "the file ends" }
            if byte >= 0x21 && byte < 0x7F { return "unexpected '\(Character(Unicode.Scalar(byte)))'" }
            return String(format: "unexpected byte 0x%02x", byte)
        }

        /// Scans the whole document; returns the offset and description of the first error.
        mutating func scan() -> (Int, String)? {
            // Each iteration reads one value, then what follows it, until the top level is closed.
            while true {
                skipSpace()
                guard let byte = current else { return (index, "the file ends where a value was expected") }
                switch byte {
                case UInt8(ascii: "{"):
                    index += 1
                    skipSpace()
                    if current == UInt8(ascii: "}") {
                        index += 1
                    } else {
                        open.append(true)
                        if let error = key() { return error }
                        continue
                    }
                case UInt8(ascii: "["):
                    index += 1
                    skipSpace()
                    if current == UInt8(ascii: "]") {
                        index += 1
                    } else {
                        open.append(false)
                        continue
                    }
                case UInt8(ascii: "\""):
                    if let error = string() { return error }
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    if let error = number() { return error }
                case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                    if let error = literal() { return error }
                default:
                    return (index, "\(found()) where a value was expected")
                }
                // After a complete value: close containers, or move on to the next element.
                while true {
                    skipSpace()
                    guard let isObject = open.last else {
                        return current == nil ? nil : (index, "\(found()) after the end of the JSON value")
                    }
                    let closer = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
                    if current == closer {
                        index += 1
                        open.removeLast()
                        continue
                    }
                    guard current == UInt8(ascii: ",") else {
                        return (index, "\(found()) where ',' or '\(Character(Unicode.Scalar(closer)))' was expected")
                    }
                    index += 1
                    if isObject, let error = key() { return error }
                    break
                }
            }
        }

        /// `"key" :` inside an object.
        mutating func key() -> (Int, String)? {
            skipSpace()
            guard current == UInt8(ascii: "\"") else { return (index, "\(found()) where a quoted key was expected") }
            if let error = string() { return error }
            skipSpace()
            guard current == UInt8(ascii: ":") else { return (index, "\(found()) where ':' was expected") }
            index += 1
            return nil
        }

        mutating func string() -> (Int, String)? {
            let start = index
            index += 1
            while let byte = current {
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return nil
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = current else { return (start, "a string that never ends") }
                    if escaped == UInt8(ascii: "u") {
                        let digits = bytes[(index + 1)..<min(bytes.count, index + 5)]
                        guard digits.count == 4, digits.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) }) else {
                            return (index - 1, "a \\u escape without four hex digits")
                        }
                        index += 5
                    } else if "\"\\/bfnrt".utf8.contains(escaped) {
                        index += 1
                    } else {
                        return (index - 1, "an invalid escape '\\\(Character(Unicode.Scalar(escaped)))'")
                    }
                case 0x00..<0x20:
                    return (index, String(format: "an unescaped control character 0x%02x inside a string", byte))
                default:
                    index += 1
                }
            }
            return (start, "a string that never ends")
        }

        mutating func number() -> (Int, String)? {
            let start = index
            func digits() -> Int {
                let first = index
                while let byte = current, byte >= 0x30 && byte <= 0x39 { index += 1 }
                return index - first
            }
            if current == UInt8(ascii: "-") { index += 1 }
            if current == UInt8(ascii: "0") {
                index += 1
            } else if digits() == 0 {
                return (start, "a number without digits")
            }
            if current == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { return (start, "a number with no digit after '.'") }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { return (start, "a number with no digit in its exponent") }
            }
            return nil
        }

        mutating func literal() -> (Int, String)? {
            for word in ["true", "false", "null"] {
                let utf8 = Array(word.utf8)
                if index + utf8.count <= bytes.count, Array(bytes[index..<(index + utf8.count)]) == utf8 {
                    index += utf8.count
                    return nil
                }
            }
            return (index, "\(found()) where a value was expected")
        }
    }
}
