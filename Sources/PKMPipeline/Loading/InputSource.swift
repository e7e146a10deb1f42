import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel

/// Where `run` and `usage` take their token ids from.
public enum InputSource: Sendable {
    /// The `/inputs` group of an HDF5 reference or inputs file (`schemas/pkm-checkpoints.md` §5).
    case file(URL)
    /// The `/inputs` group of a reference or inputs file already open.
    case reference(LoadedCheckpoint)
    /// Inputs already in memory.
    case given(ModelInputs)
    /// `batchSize × sequenceLength` token ids drawn uniformly from the model's vocabulary
    /// `[0, vocab_size)`, except `pad_token_id` (so no position counts as padding), from `seed`:
    /// the same seed and model give the same ids on every machine.
    case random(batchSize: Int, sequenceLength: Int, seed: UInt64)

    /// A short description for reports: the file's path, `the given ids`, or `random ids (seed 0)`.
    public var label: String {
        switch self {
        case .file(let url): return url.path
        case .reference(let checkpoint): return checkpoint.url.path
        case .given: return "the given ids"
        case .random(_, _, let seed): return "random ids (seed \(seed))"
        }
    }

    /// The inputs for a model with `config`.
    /// - Throws: ``PipelineError``, ``FormatError``.
    public func inputs(for config: ModelConfig, read: ReadOptions = ReadOptions()) throws -> ModelInputs {
        switch self {
        case .file(let url):
            let reader = try Checkpoints.open(url, options: read)
            let inputs = try ReferenceLayout.readInputs(from: reader)
            try ReferenceLayout.check(inputs, fit: config, path: reader.url.path)
            return inputs
        case .reference(let checkpoint):
            let inputs = try ReferenceLayout.readInputs(from: checkpoint.reader)
            try ReferenceLayout.check(inputs, fit: config, path: checkpoint.reader.url.path)
            return inputs
        case .given(let inputs):
            let t = inputs.sequenceLength
            if let (index, id) = inputs.inputIds.enumerated().first(where: { $0.element < 0 || $0.element >= config.vocabSize }) {
                throw PipelineError.invalidSetting(.givenInputs, value: nil, reason: "token id \(id) at position \(index % max(t, 1)) is outside the model's vocabulary 0..<\(config.vocabSize)")
            }
            return inputs
        case .random(let batch, let sequence, let seed):
            let (count, overflow) = batch.multipliedReportingOverflow(by: sequence)
            guard !overflow, count <= 1 << 28 else {
                throw PipelineError.invalidSetting(.randomInputs, value: nil, reason: "\(batch)x\(sequence) is too many tokens")
            }
            var generator = SeededTokens(seed: seed)
            let choices = config.vocabSize - (config.padTokenId < config.vocabSize ? 1 : 0)
            let ids = (0..<count).map { _ -> Int in
                guard choices > 0 else { return 0 }
                let drawn = generator.next(below: choices)
                return drawn >= config.padTokenId ? drawn + 1 : drawn
            }
            return try ModelInputs(batchSize: batch, sequenceLength: sequence, inputIds: ids)
        }
    }
}

/// SplitMix64, for reproducible random token ids.
struct SeededTokens {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `0..<bound` (Lemire's multiply-shift with rejection, so unbiased).
    mutating func next(below bound: Int) -> Int {
        let limit = UInt64(bound)
        while true {
            let product = next().multipliedFullWidth(by: limit)
            if product.low >= (0 &- limit) % limit { return Int(product.high) }
        }
    }
}
