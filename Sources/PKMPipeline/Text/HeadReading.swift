import Foundation
import PKMModel
import PKMTokenizers

/// What a task head says about one text sequence, for people: fill-mask candidates, a label, per-token labels, or an
/// answer span (``LoadedCheckpoint/run(texts:options:)``).
public struct HeadReading: Sendable, Codable, Equatable {
    /// One candidate and its probability.
    public struct Candidate: Sendable, Codable, Equatable {
        public var label: String
        public var id: Int
        public var probability: Double
    }
    /// The top candidates for one masked position.
    public struct MaskedPosition: Sendable, Codable, Equatable {
        /// Index among the sequence's (unpadded) tokens.
        public var position: Int
        public var candidates: [Candidate]
    }
    /// The best answer span (token indices, inclusive) and its score, start logit + end logit.
    public struct Answer: Sendable, Codable, Equatable {
        public var start: Int
        public var end: Int
        public var tokens: [String]
        public var score: Double
    }

    /// `masked_lm`, `sequence_classification`, `token_classification` or `question_answering`.
    public var head: String
    /// Masked LM: the top 5 tokens at every mask token (`[MASK]`, `<mask>`).
    public var masked: [MaskedPosition]?
    /// Sequence classification: every label with its probability (softmax, or sigmoid for multi-label), best first.
    public var labels: [Candidate]?
    /// Token classification: the best label of each (unpadded) token.
    public var tokenLabels: [String]?
    /// Question answering: the best span of at most 30 tokens.
    public var answer: Answer?

    /// Mask tokens of the BERT and RoBERTa tokenizers.
    static let maskTokens: Set<String> = ["[MASK]", "<mask>"]

    /// Reads row `row` of `outputs` (its `positions` are the unpadded token positions, `tokens` their strings).
    static func read(_ outputs: HeadOutputs, row: Int, sequenceLength t: Int, positions: [Int], tokens: [String],
                     config: ModelConfig, tokenizer: Tokenizer, answerInSecondSequence: Bool = false) -> HeadReading? {
        func softmax(_ values: ArraySlice<Float>) -> [Double] {
            let top = Double(values.max() ?? 0)
            let exps = values.map { Foundation.exp(Double($0) - top) }
            let sum = exps.reduce(0, +)
            return exps.map { $0 / sum }
        }
        func label(_ index: Int) -> String { config.labelNames.flatMap { index < $0.count ? $0[index] : nil } ?? "LABEL_\(index)" }
        switch outputs.kind {
        case .maskedLM:
            guard let logits = outputs.logits, let vocabulary = outputs.logitsShape.last else { return nil }
            var masked: [MaskedPosition] = []
            for (index, position) in positions.enumerated() where maskTokens.contains(tokens[index]) {
                let start = (row * t + position) * vocabulary
                let probabilities = softmax(logits[start..<(start + vocabulary)])
                let best = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] || (probabilities[$0] == probabilities[$1] && $0 < $1) }.prefix(5)
                masked.append(MaskedPosition(position: index, candidates: best.map {
                    Candidate(label: tokenizer.token(forId: $0) ?? "<\($0)>", id: $0, probability: probabilities[$0])
                }))
            }
            return HeadReading(head: outputs.kind.rawValue, masked: masked)
        case .sequenceClassification:
            guard let logits = outputs.logits, let count = outputs.logitsShape.last, count > 0 else { return nil }
            let row = logits[(row * count)..<((row + 1) * count)]
            let scores = config.problemType == .multiLabelClassification ? row.map { 1 / (1 + Foundation.exp(-Double($0))) }
                : config.problemType == .regression ? row.map(Double.init) : softmax(row)
            let labels = scores.indices.map { Candidate(label: label($0), id: $0, probability: scores[$0]) }
                .sorted { $0.probability > $1.probability || ($0.probability == $1.probability && $0.id < $1.id) }
            return HeadReading(head: outputs.kind.rawValue, labels: labels)
        case .tokenClassification:
            guard let logits = outputs.logits, let count = outputs.logitsShape.last, count > 0 else { return nil }
            let labels = positions.map { position -> String in
                let start = (row * t + position) * count
                let slice = logits[start..<(start + count)]
                return label(slice.indices.max { slice[$0] < slice[$1] || (slice[$0] == slice[$1] && $0 > $1) }! - start)
            }
            return HeadReading(head: outputs.kind.rawValue, tokenLabels: labels)
        case .questionAnswering:
            guard let starts = outputs.startLogits, let ends = outputs.endLogits, !positions.isEmpty else { return nil }
            // Answers are ordinary tokens; with a question and a context, tokens of the context (after the first run of
            // separators: `[CLS] q [SEP] c [SEP]`, `<s> q </s></s> c </s>`), as transformers' QA pipeline looks for them.
            let special: Set<String> = ["[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"]
            var allowed = Set(tokens.indices.filter { !special.contains(tokens[$0]) })
            if answerInSecondSequence, let separator = tokens.firstIndex(where: { $0 == "[SEP]" || $0 == "</s>" }) {
                allowed = allowed.filter { $0 > separator }
            }
            var best: Answer?
            for (i, startPosition) in positions.enumerated() where allowed.contains(i) {
                for j in i..<min(positions.count, i + 30) where allowed.contains(j) {
                    let score = Double(starts[row * t + startPosition]) + Double(ends[row * t + positions[j]])
                    if best.map({ score > $0.score }) ?? true {
                        best = Answer(start: i, end: j, tokens: Array(tokens[i...j]), score: score)
                    }
                }
            }
            return HeadReading(head: outputs.kind.rawValue, answer: best)
        }
    }
}
