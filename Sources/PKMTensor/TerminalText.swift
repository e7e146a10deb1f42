/// Text from files made safe to print on a terminal.
///
/// Tensor names, shard names and paths come from files written by strangers. A name holding ESC
/// sequences, a carriage return or a NUL could rewrite what a terminal shows (move the cursor,
/// hide the rest of a line, change the window title) when it is printed raw (issue 18). Every
/// human-readable message that shows such a name goes through ``Swift/String/escapedForTerminal``;
/// machine-readable output (JSON) keeps names exact, since its encoder escapes them.
extension String {
    /// The text with every control character written as a visible escape, so printing it cannot
    /// drive a terminal: `\n`, `\r`, `\t`, `\0`, `\x1b` for other C0 controls and DEL, `\u{85}` for
    /// C1 controls, and `\u{202E}` for the Unicode bidirectional overrides and isolates (which can
    /// make a name display reversed). Everything else, including other non-ASCII text, is kept.
    ///
    /// Backslashes are kept as they are, so escaping is idempotent (an escaped message escaped
    /// again, as when a child process's error line is relayed, does not change); the result is for
    /// reading, not for recovering the exact name (use JSON output for that).
    public var escapedForTerminal: String {
        guard unicodeScalars.contains(where: Self.needsEscape) else { return self }
        var result = ""
        result.reserveCapacity(utf8.count + 8)
        for scalar in unicodeScalars {
            guard Self.needsEscape(scalar) else {
                result.unicodeScalars.append(scalar)
                continue
            }
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\0": result += "\\0"
            default:
                let hex = String(scalar.value, radix: 16)
                result += scalar.value < 0x80 ? "\\x" + (hex.count < 2 ? "0" + hex : hex) : "\\u{\(hex.uppercased())}"
            }
        }
        return result
    }

    /// C0 controls, DEL, C1 controls, and the bidirectional embedding, override and isolate characters.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}
