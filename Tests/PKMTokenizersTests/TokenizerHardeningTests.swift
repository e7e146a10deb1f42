import Foundation
import Testing
@testable import PKMTokenizers
import PKMTensor

/// Issue 18: WordPiece in linear time, and tokenizer file errors that say where and what.
@Suite("Tokenizer hardening")
struct TokenizerHardeningTests {
    /// The greedy longest-match-first search as it was before issue 18 (every end from the word's
    /// end down), kept here as the reference the capped search must equal.
    static func referenceEncode(_ model: WordPiece, _ word: [Unicode.Scalar]) -> [Int] {
        if word.count > model.maxInputCharactersPerWord { return [model.unknownTokenId] }
        var ids: [Int] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int?
            while start < end {
                var piece = start > 0 ? model.continuingSubwordPrefix : []
                piece.append(contentsOf: word[start..<end])
                if let id = model.vocabulary[VocabularyKey(piece)] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [model.unknownTokenId] }
            ids.append(id)
            start = end
        }
        return ids
    }

    @Test("an 8,000-character word under max_input_chars_per_word = 2^62 tokenizes in well under a second")
    func longWordIsLinear() throws {
        let json = try miniTokenizerJSON(model: ["max_input_chars_per_word": 1 << 62,
                                                 "vocab": ["[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "##a": 5, "##b": 6, "ab": 7]])
        let tokenizer = try Tokenizer.load(tokenizerJSON: json)
        let word = String(repeating: "ab", count: 4_000)
        let clock = ContinuousClock()
        var encoding: Encoding?
        let elapsed = try clock.measure { encoding = try tokenizer.encode(word, addSpecialTokens: false) }
        // "ab" then, per remaining pair, "##a" "##b" (the longest first piece is "ab"; "##ab" is not a token).
        #expect(encoding?.ids == [7] + Array([[5, 6]].lazy.flatMap { $0 }.cycled(3_999)))
        #expect(encoding?.ids.count == 1 + 2 * 3_999)
        #expect(elapsed < .seconds(2), "took \(elapsed)")
        // A word no piece covers past its first character is the unknown token, also fast.
        let stuck = String(repeating: "a", count: 1) + String(repeating: "c", count: 8_000)
        let unknown = try clock.measure { encoding = try tokenizer.encode(stuck, addSpecialTokens: false) }
        #expect(encoding?.ids == [1])
        #expect(unknown < .seconds(2), "took \(unknown)")
    }

    @Test("the capped search gives the same ids as the full search on random words and vocabularies", arguments: 0..<20)
    func sameIdsAsReference(seed: Int) {
        var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let alphabet: [Unicode.Scalar] = ["a", "b", "c", "é", "字"]
        var vocabulary: [VocabularyKey: Int] = [VocabularyKey("[UNK]"): 0]
        for _ in 0..<(5 + next(40)) {
            var token: [Unicode.Scalar] = next(2) == 0 ? ["#", "#"] : []
            for _ in 0..<(1 + next(6)) { token.append(alphabet[next(alphabet.count)]) }
            if vocabulary[VocabularyKey(token)] == nil { vocabulary[VocabularyKey(token)] = vocabulary.count }
        }
        let model = WordPiece(vocabulary: vocabulary, unknownTokenId: 0, continuingSubwordPrefix: ["#", "#"],
                              maxInputCharactersPerWord: next(3) == 0 ? 12 : 1 << 62)
        for _ in 0..<200 {
            let word = (0..<(1 + next(30))).map { _ in alphabet[next(alphabet.count)] }
            #expect(model.encode(word) == Self.referenceEncode(model, word), "word \(String(String.UnicodeScalarView(word)))")
        }
    }

    @Test("malformed tokenizer JSON is reported with its line, column and byte", arguments: [
        ("{\"model\": {\"type\": \"WordPiece\",\n  \"vocab\": {\"a\" 1}}}", "where ':' was expected at line 2, column 17 (byte 48)"),
        ("{\"model\": tru}", "line 1, column 11 (byte 10)"),
        ("{\"a\": \"x\u{01}\"}", "unescaped control character 0x01 inside a string at line 1, column 9 (byte 8)"),
        ("{\"a\": 1} x", "after the end of the JSON value at line 1, column 10 (byte 9)"),
        ("{\"a\": [1, 2", "the file ends where ',' or ']' was expected at line 1, column 12 (byte 11)"),
        ("{\"a\": 01}", "at line 1, column 8 (byte 7)"),
    ])
    func jsonPositions(text: String, expected: String) {
        do {
            _ = try Tokenizer.load(tokenizerJSON: Data(text.utf8), source: "t.json")
            Issue.record("accepted \(text)")
        } catch let error as TokenizerError {
            #expect(error.description.hasPrefix("t.json is not a valid tokenizer JSON file: "), "\(error)")
            #expect(error.description.contains(expected), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("JSON the scanner accepts is JSON Foundation accepts", arguments: [
        "{}", "[]", "{\"a\": [1, -2.5e+3, true, false, null, \"\\u00e9\\n\"], \"b\": {\"c\": {}}}", "  \"x\"  ", "0", "-0.0E-1",
    ])
    func scannerAgreesOnValidJSON(text: String) {
        #expect(JSONSyntax.firstError(in: Data(text.utf8)) == nil)
        #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil)
    }

    @Test("a vocab.txt that is not UTF-8 is called a tokenizer text file, not tokenizer JSON, with the byte")
    func vocabularyTextNotJSON() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-vocab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var bytes = Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\nab".utf8)
        bytes.append(contentsOf: [0xFF, 0x0A])
        try bytes.write(to: folder.appendingPathComponent("vocab.txt"))
        do {
            _ = try Tokenizer.load(folder: folder)
            Issue.record("accepted a vocab.txt holding 0xFF")
        } catch let error as TokenizerError {
            let text = error.description
            #expect(!text.contains("JSON"), "\(text)")
            #expect(text.contains("vocab.txt is not a valid tokenizer text file"), "\(text)")
            #expect(text.contains("line 5, column 3 (byte 26)"), "\(text)")
        }
    }
}

private extension Sequence {
    /// The elements repeated `count` times.
    func cycled(_ count: Int) -> [Element] { (0..<count).flatMap { _ in Array(self) } }
}
