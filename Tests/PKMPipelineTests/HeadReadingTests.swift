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

    @Test("question answering: the best span by start + end logit")
    func answerSpan() throws {
        let (result, starts, t) = try Self.run("bert_qa_residual", texts: ["the cat sat on the mat"], output: "start_logits")
        let (_, ends, _) = try Self.run("bert_qa_residual", texts: ["the cat sat on the mat"], output: "end_logits")
        let answer = try #require(result.sequences[0].head?.answer)
        var best = (score: -Double.infinity, start: 0, end: 0)
        for i in 0..<t { for j in i..<min(t, i + 30) where Double(starts[i]) + Double(ends[j]) > best.score { best = (Double(starts[i]) + Double(ends[j]), i, j) } }
        #expect(answer.start == best.start && answer.end == best.end && abs(answer.score - best.score) < 1e-6)
    }

    @Test("a bare encoder says nothing more")
    func bareEncoder() throws {
        let folder = try TemporaryFolder()
        let checkpoint = try LoadedCheckpoint(PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_base_plain"),
                                              options: OpenOptions(tokenizerURL: try Self.tokenizerFolder(folder)))
        #expect(try checkpoint.run(texts: ["the cat"]).sequences[0].head == nil)
    }
}
