import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import PKMTokenizers
import Testing
@testable import PKMPipeline

/// Text in: tokenizers found beside or inside a checkpoint, `run` on text, `usage` over a corpus.
@Suite("Text inputs")
struct TextTests {
    static let minilmTokenizer = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/tokenizers/minilm/tokenizer.json")

    /// A tiny random PKM-BERT with MiniLM's vocabulary (30,522) in an HF folder with the MiniLM tokenizer.
    static func model(in folder: TemporaryFolder, memory: Bool = true) throws -> URL {
        var config = SyntheticModel.config(memoryLayers: memory ? [1] : [], modes: memory ? [.residual] : [])
        config.vocabSize = 30_522
        config.maxPositionEmbeddings = 64
        let dict = try SyntheticModel.stateDict(for: config)
        var withConfig = dict
        withConfig.metadata["config"] = String(decoding: config.encodedJSON(), as: UTF8.self)
        let url = folder.url.appendingPathComponent("model", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try Checkpoints.write(withConfig, to: url.appendingPathComponent("model.safetensors"), format: .safetensors)
        try FileManager.default.copyItem(at: minilmTokenizer, to: url.appendingPathComponent("tokenizer.json"))
        return url
    }

    static let texts = ["The quick brown fox jumps over the lazy dog.", "Café naïve 中文 한국어 👍", "short",
                        "A much longer sentence, with punctuation; numbers 3.14159 and a URL https://example.com/x?y=1."]

    @Test("run on text: HF token ids, batches independent of batch size, -o verifies against itself")
    func runText() throws {
        let folder = try TemporaryFolder(prefix: "pkm-text")
        let model = try Self.model(in: folder)
        let one = try LoadedCheckpoint(model).run(texts: Self.texts, options: TextOptions(batchSize: 1))
        let all = try LoadedCheckpoint(model).run(texts: Self.texts, options: TextOptions(batchSize: 4))
        #expect(one.sequences.map(\.ids) == all.sequences.map(\.ids))
        let tokenizer = try Tokenizer.load(folder: model)
        #expect(one.sequences[0].ids == (try tokenizer.encode(Self.texts[0]).ids))
        #expect(one.sequences[0].tokens.first == "[CLS]" && one.sequences[0].tokens.last == "[SEP]")
        for (a, b) in zip(one.sequences, all.sequences) {
            #expect(abs(a.pooledNorm - b.pooledNorm) < 1e-5 * max(1, a.pooledNorm))
        }
        #expect(one.tokens == Self.texts.indices.map { one.sequences[$0].ids.count }.reduce(0, +))
        // -o writes one reference file (padded to the longest sequence) that verifies.
        let reference = folder.file("text.h5")
        _ = try LoadedCheckpoint(model).run(texts: Self.texts, options: TextOptions(batchSize: 3, outputURL: reference))
        let report = try LoadedCheckpoint(model).verify(against: LoadedCheckpoint(reference), options: VerifyOptions(atol: 1e-5, rtol: 1e-5))
        #expect(report.passed)
        #expect(report.batchSize == Self.texts.count)
    }

    @Test("import and convert to pkmz carry the tokenizer: a pkmz alone runs text")
    func carriedTokenizer() throws {
        let folder = try TemporaryFolder(prefix: "pkm-text")
        let model = try Self.model(in: folder)
        let alone = try TemporaryFolder(prefix: "pkm-text-alone")
        let pkmz = alone.file("model.pkmz")
        _ = try LoadedCheckpoint(model).import(to: pkmz)
        #expect(try Checkpoints.open(pkmz).metadata[TextInputs.metadataKey] != nil)
        let result = try LoadedCheckpoint(pkmz).run(texts: ["hello world"])
        #expect(result.sequences[0].tokens == ["[CLS]", "hello", "world", "[SEP]"])
        #expect(result.tokenizer.contains("carried"))
        // Convert keeps it too; a checkpoint without one says what to do.
        let converted = alone.file("converted.safetensors")
        _ = try LoadedCheckpoint(pkmz).convert(to: converted)
        #expect(try LoadedCheckpoint(converted).run(texts: ["hello"]).sequences.count == 1)
        let bare = alone.file("bare.safetensors")
        var dict = try Checkpoints.open(converted).readAll()
        dict.metadata[TextInputs.metadataKey] = nil
        try Checkpoints.write(dict, to: bare, format: .safetensors)
        let error = try #require(throws: PipelineError.self) { try LoadedCheckpoint(bare).run(texts: ["hello"]) }
        #expect(error.description.contains("OpenOptions.tokenizerURL"))
        // OpenOptions.tokenizerURL points at one explicitly.
        #expect(try LoadedCheckpoint(bare, options: OpenOptions(tokenizerURL: Self.minilmTokenizer)).run(texts: ["hello"]).sequences[0].ids.count == 3)
    }

    @Test("another model's tokenizer and over-long text are refused with what to do")
    func mismatches() throws {
        let plain = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_residual/model.safetensors")
        let error = try #require(throws: PipelineError.self) {
            try LoadedCheckpoint(plain, options: OpenOptions(tokenizerURL: Self.minilmTokenizer)).run(texts: ["the quick brown fox"])
        }
        #expect(error.description.contains("another model's tokenizer"), "\(error)")
        let folder = try TemporaryFolder(prefix: "pkm-text")
        let model = try Self.model(in: folder)
        let long = String(repeating: "word ", count: 100)
        let tooLong = try #require(throws: PipelineError.self) { try LoadedCheckpoint(model).run(texts: [long], options: TextOptions(maxLength: 100)) }
        #expect(tooLong.description.contains("64 positions"), "\(tooLong)")
        #expect(try LoadedCheckpoint(model).run(texts: [long], options: TextOptions(maxLength: 64)).sequences[0].ids.count == 64)
    }

    @Test("usage over a text file streams in batches: the same statistics for any batch size, progress per batch")
    func usageOverCorpus() throws {
        let folder = try TemporaryFolder(prefix: "pkm-text")
        let model = try Self.model(in: folder)
        let corpus = folder.file("corpus.txt")
        var lines: [String] = []
        var random = SplitMix64(seed: 7)
        let words = ["memory", "product", "key", "the", "of", "slots", "usage", "café", "中文", "model", "train", "42"]
        for _ in 0..<50 { lines.append((0..<(3 + random.below(20))).map { _ in random.pick(words) }.joined(separator: " ")) }
        try (lines.joined(separator: "\n") + "\n\n  \n").write(to: corpus, atomically: true, encoding: .utf8)
        var calls: [CorpusProgress] = []
        let small = try LoadedCheckpoint(model).usage(textFile: corpus, options: UsageOptions(batchSize: 7)) { calls.append($0) }
        let large = try LoadedCheckpoint(model).usage(textFile: corpus, options: UsageOptions(batchSize: 64))
        #expect(calls.count == 8 && calls.last?.sequences == 50)
        #expect(calls.last?.bytesRead == calls.last?.totalBytes)
        #expect(small.batchSize == 50 && large.batchSize == 50)
        let a = try #require(small.layers.first), b = try #require(large.layers.first)
        #expect(a.tokens == b.tokens && a.usagePercent == b.usagePercent && a.headUsagePercent == b.headUsagePercent)
        #expect(abs(a.klWeights - b.klWeights) < 1e-6)
        #expect(a.tokens == calls.last?.tokens)
        #expect(a.headUsagePercent.count == 2 && a.weightCurve.last?.slotShare == 1)
        // The plot is a self-contained SVG with one panel per layer.
        let svg = UsagePlot.svg(small)
        #expect(svg.hasPrefix("<svg") && svg.contains("layer 1 (residual)") && svg.contains("head 1") && !svg.contains("<script"))
        // Well-formed XML, so browsers and converters render it.
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "\(String(describing: parser.parserError))")
    }
}
