import Foundation
import PKMTestSupport
import Testing
@testable import PKMTokenizers

/// fixtures/tokenizers/cases.json, written by tools/gen_tokenizer_fixtures.py from HF `tokenizers`.
struct TokenizerCases: Decodable {
    struct Expected: Decodable, Equatable {
        let ids: [Int]
        /// Absent for the random cases, which record ids only.
        let tokens: [String]?
        let type_ids: [Int]?
        let attention_mask: [Int]?
    }

    struct Case: Decodable {
        let text: String
        let pair: String?
        let max_length: Int?
        let add_special_tokens: Bool
        let expected: [String: Expected]
    }

    struct BatchExpected: Decodable {
        let ids: [[Int]]
        let attention_mask: [[Int]]
        let type_ids: [[Int]]
    }

    struct Batch: Decodable {
        let texts: [String]
        let expected: [String: BatchExpected]
    }

    let tokenizers: [String: String]
    let cases: [Case]
    let batches: [Batch]

    static let folder = TestPaths.repository("fixtures/tokenizers")

    static func load() throws -> TokenizerCases {
        try JSONDecoder().decode(TokenizerCases.self, from: Data(contentsOf: folder.appendingPathComponent("cases.json")))
    }

    static func tokenizer(_ name: String) throws -> Tokenizer {
        try Tokenizer.load(folder: folder.appendingPathComponent(name))
    }
}

/// Compares every case with HF's ids, tokens, type ids and masks; returns one line per mismatch.
func mismatches(_ tokenizer: Tokenizer, expectedFrom name: String, in cases: TokenizerCases,
                skipping skip: (String) -> Bool = { _ in false }) throws -> [String] {
    var problems: [String] = []
    for (index, testCase) in cases.cases.enumerated() where !skip(testCase.text) && !skip(testCase.pair ?? "") {
        guard let expected = testCase.expected[name] else {
            problems.append("case \(index) has no expected values for \(name)")
            continue
        }
        let encoding = try tokenizer.encode(testCase.text, pair: testCase.pair, addSpecialTokens: testCase.add_special_tokens,
                                            maxLength: testCase.max_length)
        let full = expected.tokens != nil
        let actual = TokenizerCases.Expected(ids: encoding.ids, tokens: full ? encoding.tokens : nil,
                                             type_ids: full ? encoding.typeIds : nil, attention_mask: full ? encoding.attentionMask : nil)
        if actual != expected {
            problems.append("case \(index) \(String(reflecting: String(testCase.text.prefix(40)))) pair \(String(describing: testCase.pair)) "
                + "max \(String(describing: testCase.max_length)) special \(testCase.add_special_tokens):\n"
                + "  swift \(encoding.tokens) \(actual.ids) \(encoding.typeIds)\n  hf    \(expected.tokens ?? []) \(expected.ids) \(expected.type_ids ?? [])")
        }
    }
    return problems
}

@Suite("Tokenizer parity with HF tokenizers")
struct TokenizerParityTests {
    @Test("tokenizer.json: every case matches HF exactly", arguments: ["minilm", "bpe", "bpe_prefix"])
    func tokenizerJSONMatchesHF(name: String) throws {
        let cases = try TokenizerCases.load()
        #expect(cases.cases.count >= 373)
        let tokenizer = try TokenizerCases.tokenizer(name)
        let problems = try mismatches(tokenizer, expectedFrom: name, in: cases)
        #expect(problems.isEmpty, "\(problems.count) of \(cases.cases.count) cases differ:\n\(problems.joined(separator: "\n"))")
    }

    /// The legacy layouts (vocab.txt; vocab.json + merges.txt) give the same ids as the tokenizer.json
    /// of the same model. The MiniLM tokenizer.json truncates at 128, which vocab.txt cannot say; the
    /// legacy BPE layout gives `<mask>` RoBERTa's `lstrip` (tested below), which bpe/tokenizer.json lacks.
    @Test("legacy files: every case matches HF exactly", arguments: [("minilm_vocab", "minilm"), ("bpe_legacy", "bpe")])
    func legacyFilesMatchHF(folder: String, name: String) throws {
        let cases = try TokenizerCases.load()
        var tokenizer = try TokenizerCases.tokenizer(folder)
        #expect(tokenizer.truncation == nil)
        if name == "minilm" { tokenizer.truncation = Tokenizer.Truncation(maxLength: 128) }
        let problems = try mismatches(tokenizer, expectedFrom: name, in: cases, skipping: { $0.contains("<mask>") })
        #expect(problems.isEmpty, "\(problems.count) cases differ:\n\(problems.joined(separator: "\n"))")
    }

    /// `serialized` of a legacy folder is a tokenizer.json that reads back to the same tokenizer.
    @Test("serialized legacy tokenizers read back identically", arguments: [("minilm_vocab", "minilm"), ("bpe_legacy", "bpe")])
    func serializedRoundTrips(folder: String, name: String) throws {
        let cases = try TokenizerCases.load()
        let original = try TokenizerCases.tokenizer(folder)
        var reread = try Tokenizer.load(tokenizerJSON: original.serialized, source: "serialized")
        if name == "minilm" { reread.truncation = Tokenizer.Truncation(maxLength: 128) }
        let problems = try mismatches(reread, expectedFrom: name, in: cases, skipping: { $0.contains("<mask>") })
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(reread.vocabSize == original.vocabSize)
        #expect(try JSONSerialization.jsonObject(with: original.serialized) is [String: Any])
    }

    @Test("legacy BPE folders give <mask> RoBERTa's lstrip")
    func legacyMaskStripsLeft() throws {
        let tokenizer = try TokenizerCases.tokenizer("bpe_legacy")
        let encoding = try tokenizer.encode("Hello   <mask> world<mask>!")
        #expect(encoding.tokens == ["<s>", "Hello", "   <mask>", "Ġworld", "<mask>", "!", "</s>"])
        #expect(encoding.ids == [0, 1275, 4, 1621, 4, 5, 2])
    }

    @Test("tokenizer.json bytes are kept as read")
    func serializedKeepsTheFile() throws {
        let url = TokenizerCases.folder.appendingPathComponent("minilm/tokenizer.json")
        let tokenizer = try Tokenizer.load(folder: url.deletingLastPathComponent())
        #expect(tokenizer.serialized == (try Data(contentsOf: url)))
    }

    @Test("batches pad to the longest row as HF does", arguments: ["minilm", "bpe", "bpe_prefix"])
    func batchesMatchHF(name: String) throws {
        let cases = try TokenizerCases.load()
        let tokenizer = try TokenizerCases.tokenizer(name)
        for batch in cases.batches {
            guard let expected = batch.expected[name] else { continue }
            let encoded = try tokenizer.encodeBatch(batch.texts)
            #expect(encoded.ids == expected.ids, "\(batch.texts)")
            #expect(encoded.attentionMask == expected.attention_mask)
            #expect(encoded.typeIds == expected.type_ids)
            #expect(Set(encoded.ids.map(\.count)).count == 1)
        }
    }

    @Test("vocabulary facts of the MiniLM and BPE tokenizers")
    func vocabularyFacts() throws {
        let minilm = try TokenizerCases.tokenizer("minilm")
        #expect(minilm.vocabSize == 30_522)
        #expect(minilm.maxTokenId == 30_521)
        #expect(minilm.padTokenId == 0)
        #expect(minilm.truncation == Tokenizer.Truncation(maxLength: 128, strategy: .longestFirst))
        #expect(minilm.token(forId: 101) == "[CLS]")
        let bpe = try TokenizerCases.tokenizer("bpe")
        #expect(bpe.vocabSize == 2_000)
        #expect(bpe.padTokenId == 1)
        #expect(bpe.truncation == nil)
    }
}
