import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor
import PKMTestSupport
import Testing
import PKMPipeline

/// `run` on text says what the head says; each reading is checked against the logits the same run writes to its
/// reference file (issue 19).
@Suite("What a task head says about a text")
struct HeadReadingTests {
    static func fixture(_ name: String) -> URL { PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/heads/\(name)") }

    /// A WordPiece vocabulary small enough for the fixtures' 99-entry vocabulary.
    static func tokenizerFolder(_ folder: TemporaryFolder) throws -> URL {
        let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "is", "here"]
        try Data(words.joined(separator: "\n").utf8).write(to: folder.file("vocab.txt"))
        return folder.url
    }

    /// The run's result and the logits it wrote, `[B, T, …]` flattened, with T.
    static func run(_ name: String, texts: [String], output: String = "logits") throws -> (TextRunResult, [Float], Int) {
        let folder = try TemporaryFolder()
        let checkpoint = try LoadedCheckpoint(fixture(name), options: OpenOptions(tokenizerURL: try tokenizerFolder(folder)))
        let reference = folder.file("out.h5")
        let result = try checkpoint.run(texts: texts, options: TextOptions(outputURL: reference))
        let written = try Checkpoints.open(reference)
        let logits = try written.tensor(named: "outputs.\(output)")
        let t = try written.tensor(named: "inputs.input_ids").shape[1]
        return (result, logits.floatValues(), t)
    }

    @Test("fill-mask: the five best tokens at [MASK], in logit order, with softmax probabilities")
    func fillMask() throws {
        let (result, logits, t) = try Self.run("bert_mlm_residual", texts: ["the cat [MASK] on the mat"])
        let reading = try #require(result.sequences[0].head)
        let masked = try #require(reading.masked?.first)
        #expect(reading.head == "masked_lm" && masked.position == 3 && masked.candidates.count == 5)
        let vocabulary = logits.count / t
        let row = Array(logits[(3 * vocabulary)..<(4 * vocabulary)])
        let order = row.indices.sorted { row[$0] > row[$1] }
        #expect(masked.candidates.map(\.id) == Array(order.prefix(5)))
        let top = Double(row.max()!), sum = row.reduce(0.0) { $0 + exp(Double($1) - top) }
        #expect(abs(masked.candidates[0].probability - exp(Double(row[order[0]]) - top) / sum) < 1e-9)
    }

    @Test("sequence classification: every label with its softmax probability, best first, named by id2label")
    func classification() throws {
        let (result, logits, _) = try Self.run("bert_seqcls_residual", texts: ["the cat", "a dog is here"])
        for (row, sequence) in result.sequences.enumerated() {
            let labels = try #require(sequence.head?.labels)
            let slice = Array(logits[(row * 3)..<(row * 3 + 3)])
            let top = Double(slice.max()!), sum = slice.reduce(0.0) { $0 + exp(Double($1) - top) }
            for label in labels { #expect(abs(label.probability - exp(Double(slice[label.id]) - top) / sum) < 1e-9) }
            #expect(labels.map(\.probability) == labels.map(\.probability).sorted(by: >))
            #expect(Set(labels.map(\.label)) == ["negative", "neutral", "positive"])
        }
    }

    /// The best span of at most 30 tokens by start + end logit, among `allowed` token positions.
    static func bestSpan(_ starts: [Float], _ ends: [Float], allowed: [Int]) -> (score: Double, start: Int, end: Int) {
        var best = (score: -Double.infinity, start: 0, end: 0)
        for i in allowed {
            for j in allowed where j >= i && j < i + 30 && Double(starts[i]) + Double(ends[j]) > best.score {
                best = (Double(starts[i]) + Double(ends[j]), i, j)
            }
        }
        return best
    }

    @Test("question answering: the best span of ordinary tokens by start + end logit")
    func answerSpan() throws {
        let (result, starts, t) = try Self.run("bert_qa_residual", texts: ["the cat sat on the mat"], output: "start_logits")
        let (_, ends, _) = try Self.run("bert_qa_residual", texts: ["the cat sat on the mat"], output: "end_logits")
        let answer = try #require(result.sequences[0].head?.answer)
        let best = Self.bestSpan(starts, ends, allowed: Array(1..<(t - 1)))  // not [CLS], not [SEP]
        #expect(answer.start == best.start && answer.end == best.end && abs(answer.score - best.score) < 1e-6)
    }

    @Test("question answering with a pair: the answer is looked for in the context, the second sequence")
    func answerInContext() throws {
        let folder = try TemporaryFolder()
        let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "where", "is"]
        try Data(words.joined(separator: "\n").utf8).write(to: folder.file("vocab.txt"))
        let checkpoint = try LoadedCheckpoint(Self.fixture("bert_qa_residual"), options: OpenOptions(tokenizerURL: folder.url))
        let reference = folder.file("qa.h5")
        let result = try checkpoint.run(texts: ["where is the cat"], options: TextOptions(outputURL: reference, pair: "the cat sat on the mat"))
        let sequence = result.sequences[0]
        #expect(sequence.tokens == ["[CLS]", "where", "is", "the", "cat", "[SEP]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"])
        let written = try Checkpoints.open(reference)
        #expect(try written.tensor(named: "inputs.token_type_ids").int64Values() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
        let starts = try written.tensor(named: "outputs.start_logits").floatValues(), ends = try written.tensor(named: "outputs.end_logits").floatValues()
        let answer = try #require(sequence.head?.answer)
        let best = Self.bestSpan(starts, ends, allowed: Array(6...11))
        #expect(answer.start == best.start && answer.end == best.end && answer.start >= 6, "\(answer)")
    }

    @Test("a bare encoder says nothing more")
    func bareEncoder() throws {
        let folder = try TemporaryFolder()
        let checkpoint = try LoadedCheckpoint(PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_base_plain"),
                                              options: OpenOptions(tokenizerURL: try Self.tokenizerFolder(folder)))
        #expect(try checkpoint.run(texts: ["the cat"]).sequences[0].head == nil)
    }
}
