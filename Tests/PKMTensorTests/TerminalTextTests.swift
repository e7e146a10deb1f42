import Testing
@testable import PKMTensor

@Suite("Terminal text")
struct TerminalTextTests {
    @Test("control characters, DEL, C1 controls and bidi overrides become visible escapes", arguments: [
        ("plain.weight", "plain.weight"),
        ("a\u{1B}[2Jb", "a\\x1b[2Jb"),
        ("line\r\nnext\t\0", "line\\r\\nnext\\t\\0"),
        ("del\u{7F}", "del\\x7f"),
        ("c1\u{85}", "c1\\u{85}"),
        ("rlo\u{202E}txt.exe", "rlo\\u{202E}txt.exe"),
        ("é字 ok", "é字 ok"),
    ])
    func escapes(raw: String, shown: String) {
        #expect(raw.escapedForTerminal == shown)
        #expect(!raw.escapedForTerminal.unicodeScalars.contains(where: String.needsEscape))
        #expect(raw.escapedForTerminal.escapedForTerminal == raw.escapedForTerminal)
    }

    @Test("error descriptions escape names")
    func errorDescription() {
        let error = TensorError.duplicateName("x\u{1B}]0;pwned\u{07}")
        #expect(error.description == "tensor name 'x\\x1b]0;pwned\\x07' appears twice")
    }
}
