import Foundation
import PKMTestSupport
import Testing
@testable import PKMTokenizers

/// A minimal WordPiece tokenizer.json with the given fields replaced (`nil` removes a field).
func miniTokenizerJSON(_ overrides: [String: Any?] = [:], model modelOverrides: [String: Any?] = [:]) throws -> Data {
    var model: [String: Any] = ["type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                                "max_input_chars_per_word": 100,
                                "vocab": ["[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6, "a": 7]]
    for (key, value) in modelOverrides { model[key] = value }
    var root: [String: Any] = [
        "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": [],
        "normalizer": ["type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": NSNull(), "lowercase": true],
        "pre_tokenizer": ["type": "BertPreTokenizer"],
        "post_processor": ["type": "BertProcessing", "cls": ["[CLS]", 2], "sep": ["[SEP]", 3]],
        "model": model,
    ]
    for (key, value) in overrides { root[key] = value }
    return try JSONSerialization.data(withJSONObject: root.compactMapValues { $0 }, options: [.sortedKeys])
}

@Suite("Tokenizer behaviour")
struct TokenizerBehaviourTests {
    @Test("BertProcessing pairs get type ids 0 then 1")
    func bertProcessingPairs() throws {
        let tokenizer = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON())
        let encoding = try tokenizer.encode("Hello worlds", pair: "a")
        #expect(encoding.tokens == ["[CLS]", "hello", "world", "##s", "[SEP]", "a", "[SEP]"])
        #expect(encoding.typeIds == [0, 0, 0, 0, 0, 1, 1])
        #expect(encoding.attentionMask == Array(repeating: 1, count: 7))
    }

    @Test("longest_first truncation shortens the longer sequence first, keeping room for special tokens")
    func longestFirst() throws {
        let tokenizer = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON())
        let encoding = try tokenizer.encode("a a a a a a", pair: "hello", maxLength: 6)
        #expect(encoding.tokens == ["[CLS]", "a", "a", "[SEP]", "hello", "[SEP]"])
        let both = try tokenizer.encode("a a a a", pair: "hello hello hello", maxLength: 8)
        #expect(both.tokens == ["[CLS]", "a", "a", "a", "[SEP]", "hello", "hello", "[SEP]"])
    }

    @Test("only_first truncation that cannot reach max_length is an error, as in HF")
    func onlyFirstTooShort() throws {
        var tokenizer = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON())
        tokenizer.truncation = Tokenizer.Truncation(maxLength: 5, strategy: .onlyFirst)
        #expect(throws: TokenizerError.self) { try tokenizer.encode("a", pair: "hello hello hello") }
        let fits = try tokenizer.encode("a a a", pair: "hello")
        #expect(fits.tokens == ["[CLS]", "a", "[SEP]", "hello", "[SEP]"])
        #expect(throws: TokenizerError.self) { try tokenizer.encode("a", maxLength: 1) }
    }

    @Test("truncation from tokenizer.json, and left truncation")
    func truncationFromFile() throws {
        let data = try miniTokenizerJSON(["truncation": ["max_length": 4, "strategy": "LongestFirst", "stride": 0, "direction": "Left"]])
        let tokenizer = try Tokenizer.load(tokenizerJSON: data)
        #expect(tokenizer.truncation == Tokenizer.Truncation(maxLength: 4, strategy: .longestFirst, direction: .left))
        #expect(try tokenizer.encode("hello world a").tokens == ["[CLS]", "world", "a", "[SEP]"])
    }

    @Test("words longer than max_input_chars_per_word are the unknown token")
    func longWords() throws {
        let tokenizer = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON(model: ["max_input_chars_per_word": 4]))
        #expect(try tokenizer.encode("hello a", addSpecialTokens: false).tokens == ["[UNK]", "a"])
    }

    @Test("padding uses tokenizer.json's pad id and type id; rows without a pad token must be equal")
    func padding() throws {
        let data = try miniTokenizerJSON(["padding": ["pad_id": 7, "pad_type_id": 1, "pad_token": "a", "direction": "Left"]])
        let batch = try Tokenizer.load(tokenizerJSON: data).encodeBatch(["hello", "hello world"])
        #expect(batch.ids == [[7, 2, 4, 3], [2, 4, 5, 3]])
        #expect(batch.attentionMask == [[0, 1, 1, 1], [1, 1, 1, 1]])
        #expect(batch.typeIds == [[1, 0, 0, 0], [0, 0, 0, 0]])
        #expect(batch.sequenceLength == 4)
        var vocab: [String: Int] = ["[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3]
        vocab["b"] = 4
        let noPad = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON(
            ["post_processor": ["type": "BertProcessing", "cls": ["[CLS]", 1], "sep": ["[SEP]", 2]]], model: ["vocab": vocab]))
        #expect(noPad.padTokenId == nil)
        #expect(try noPad.encodeBatch(["a", "b"]).ids == [[1, 3, 2], [1, 4, 2]])
        #expect(throws: TokenizerError.self) { try noPad.encodeBatch(["a", "a b"]) }
    }

    @Test("vocabulary lookups are scalar-exact, not canonical equivalence")
    func scalarExactVocabulary() throws {
        #expect(VocabularyKey("caf\u{E9}") != VocabularyKey("cafe\u{301}"))
        let tokenizer = try Tokenizer.load(tokenizerJSON: miniTokenizerJSON(
            ["normalizer": NSNull()], model: ["vocab": ["[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "caf\u{E9}": 3]]))
        #expect(try tokenizer.encode("caf\u{E9}", addSpecialTokens: false).ids == [3])
        #expect(try tokenizer.encode("cafe\u{301}", addSpecialTokens: false).ids == [0])
    }

    @Test("GPT-2 split pattern on hand-checked inputs")
    func gpt2Pattern() {
        func split(_ text: String) -> [String] {
            ByteLevel.splitGPT2(Array(text.unicodeScalars)).map { String(String.UnicodeScalarView($0)) }
        }
        #expect(split("Hello world") == ["Hello", " world"])
        #expect(split("don't  stop\n") == ["don", "'t", " ", " stop", "\n"])
        #expect(split("a  b   ") == ["a", " ", " b", "   "])
        #expect(split("x?'s 12ab") == ["x", "?'", "s", " 12", "ab"])
        #expect(split("\n\nword") == ["\n", "\n", "word"])
    }
}

@Suite("Tokenizer errors")
struct TokenizerErrorTests {
    static var malformed: [(String, [String: Any?], [String: Any?])] { [
        ("unknown model type", [:], ["type": "Unigram"]),
        ("missing vocab", [:], ["vocab": nil]),
        ("missing unk token in vocab", [:], ["unk_token": "<unknown>"]),
        ("unsupported normalizer", ["normalizer": ["type": "Precompiled", "precompiled_charsmap": "AA=="]], [:]),
        ("unsupported pre-tokenizer", ["pre_tokenizer": ["type": "Metaspace", "replacement": "▁"]], [:]),
        ("unsupported post-processor", ["post_processor": ["type": "Mystery"]], [:]),
        ("missing model", ["model": nil], [:]),
        ("vocab id not an integer", [:], ["vocab": ["[UNK]": "zero"]]),
        ("template names an undeclared special token",
         ["post_processor": ["type": "TemplateProcessing", "single": [["SpecialToken": ["id": "[X]", "type_id": 0]]], "pair": [], "special_tokens": [:]]], [:]),
    ] }

    @Test("malformed or unsupported tokenizer.json is an error naming the file and component",
          arguments: 0..<9)
    func malformedTokenizerJSON(index: Int) throws {
        let (label, overrides, model) = Self.malformed[index]
        let data = try miniTokenizerJSON(overrides, model: model)
        do {
            _ = try Tokenizer.load(tokenizerJSON: data, source: "bad/tokenizer.json")
            Issue.record("\(label): loaded without an error")
        } catch let error as TokenizerError {
            #expect(error.description.contains("bad/tokenizer.json"), "\(label): \(error)")
        }
    }

    @Test("the unsupported component's type is in the message")
    func unsupportedNamesType() throws {
        let data = try miniTokenizerJSON(["normalizer": ["type": "Sequence", "normalizers": [["type": "Replace"]]]])
        #expect(throws: TokenizerError.unsupportedComponent(file: "t.json", component: "normalizer.normalizers[0]", type: "Replace")) {
            try Tokenizer.load(tokenizerJSON: data, source: "t.json")
        }
    }

    @Test("not JSON, and a folder without tokenizer files")
    func notJSONAndEmptyFolder() throws {
        #expect(throws: TokenizerError.self) { try Tokenizer.load(tokenizerJSON: Data("{\"model\":".utf8)) }
        #expect(throws: TokenizerError.self) { try Tokenizer.load(tokenizerJSON: Data("[1]".utf8)) }
        let folder = try TemporaryFolder(prefix: "pkm-tokenizer")
        #expect(throws: TokenizerError.noTokenizerFiles(folder: folder.url.path)) { try Tokenizer.load(folder: folder.url) }
    }

    @Test("vocab.txt with a repeated token is an error")
    func repeatedVocabularyLine() throws {
        let folder = try TemporaryFolder(prefix: "pkm-tokenizer")
        try Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n".utf8).write(to: folder.file("vocab.txt"))
        #expect(throws: TokenizerError.self) { try Tokenizer.load(folder: folder.url) }
    }
}
