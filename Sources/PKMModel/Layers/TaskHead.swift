import Foundation
import PKMTensor

/// What a task head computed (`schemas/pkm-checkpoints.md` §3b and §5).
public struct HeadOutputs: Sendable {
    /// The head that made them.
    public var kind: HeadKind
    /// `[batch, sequence, vocab]` (masked LM), `[batch, num_labels]` (sequence classification),
    /// `[batch, sequence, num_labels]` (token classification); nil for question answering.
    public var logits: [Float]?
    /// The shape of ``logits``.
    public var logitsShape: [Int]
    /// Answer-span start and end logits `[batch, sequence]` (question answering only).
    public var startLogits: [Float]?
    public var endLogits: [Float]?
}

/// A task head over the encoder's output (`schemas/pkm-checkpoints.md` §3b): masked-LM, sequence classification,
/// token classification or question answering, for BERT or RoBERTa.
///
/// Every head is the same few steps, chosen by its parameter table: pick the input rows (every token, the pooler
/// output, or the first token), an optional dense + activation (+ LayerNorm) transform, and an output projection.
public struct TaskHead: Sendable {
    /// The rows a head reads.
    public enum Input: Sendable, Equatable {
        /// Every token's final hidden state `[batch·sequence, d]`.
        case everyToken
        /// The pooler output `[batch, d]` (BERT sequence classification).
        case pooled
        /// The first token's final hidden state `[batch, d]` (RoBERTa's `<s>`).
        case firstToken
    }

    /// The activation after the transform.
    enum Activation: Sendable, Equatable { case gelu, tanh }

    /// The tensors a head owns, each declared once: ``parameterSpecs(_:)`` lists them and
    /// ``init(config:loader:)`` loads them.
    struct Parameters: Sendable, Equatable {
        let kind: HeadKind
        let input: Input
        /// Dense `[d, d]` before the output (masked-LM transform, RoBERTa's `classifier.dense`).
        let transform: AffineParameters?
        let activation: Activation
        /// LayerNorm `[d]` after the transform (masked LM).
        let transformNorm: AffineParameters?
        /// Output projection `[width, d]`: the masked-LM decoder, the classifier, `qa_outputs`.
        let outputWeight: ParameterSpec
        /// Output bias `[width]`.
        let outputBias: ParameterSpec
        /// Copies a writer may keep of tied tensors (the decoder's own bias): mapped and carried, never read.
        let duplicates: [ParameterSpec]
        /// An untied masked-LM decoder's own bias (`…decoder.bias`), read instead of ``outputBias`` when present:
        /// transformers 5 adds the decoder's bias in an untied model and never reads `cls.predictions.bias`, while a
        /// transformers 4 file keeps only `cls.predictions.bias` (there the two are one tensor).
        let decoderBias: ParameterSpec?
        /// Whether the output projection is the word-embedding matrix (a tied masked-LM decoder): then
        /// ``outputWeight`` is optional and not read.
        let readsWordEmbeddings: Bool

        init(_ config: ModelConfig, kind: HeadKind) {
            typealias H = ParameterNames.Head
            let d = config.hiddenSize, bert = config.modelType == .bert
            self.kind = kind
            switch kind {
            case .maskedLM:
                let v = config.vocabSize, tied = config.tieWordEmbeddings
                let decoder = bert ? H.bertDecoder : H.robertaDecoder
                input = .everyToken
                transform = AffineParameters(bert ? H.bertTransform : H.robertaTransform, weight: [d, d], bias: [d])
                activation = .gelu
                transformNorm = .norm(bert ? H.bertTransformNorm : H.robertaTransformNorm, width: d)
                outputWeight = .leaf(decoder, ParameterNames.weight, shape: [v, d], isOptional: tied, isUsed: !tied)
                outputBias = ParameterSpec(name: bert ? H.bertBias : H.robertaBias, shape: [v], isOptional: !tied)
                duplicates = tied ? [.leaf(decoder, ParameterNames.bias, shape: [v], isOptional: true, isUsed: false)] : []
                decoderBias = tied ? nil : .leaf(decoder, ParameterNames.bias, shape: [v], isOptional: true)
                readsWordEmbeddings = tied
            case .sequenceClassification:
                let labels = config.labelCount ?? 0
                input = bert ? .pooled : .firstToken
                transform = bert ? nil : AffineParameters(H.classifierDense, weight: [d, d], bias: [d])
                activation = .tanh
                transformNorm = nil
                let output = bert ? H.classifier : H.classifierOutput
                outputWeight = .leaf(output, ParameterNames.weight, shape: [labels, d])
                outputBias = .leaf(output, ParameterNames.bias, shape: [labels])
                duplicates = []
                decoderBias = nil
                readsWordEmbeddings = false
            case .tokenClassification, .questionAnswering:
                let width = kind == .questionAnswering ? 2 : (config.labelCount ?? 0)
                let output = kind == .questionAnswering ? H.questionAnswering : H.classifier
                input = .everyToken
                transform = nil
                activation = .tanh
                transformNorm = nil
                outputWeight = .leaf(output, ParameterNames.weight, shape: [width, d])
                outputBias = .leaf(output, ParameterNames.bias, shape: [width])
                duplicates = []
                decoderBias = nil
                readsWordEmbeddings = false
            }
        }

        /// In the order Hugging Face lists them.
        var specs: [ParameterSpec] {
            (transform?.specs ?? []) + (transformNorm?.specs ?? []) + [outputWeight] + duplicates + (decoderBias.map { [$0] } ?? []) + [outputBias]
        }

        /// The width of the output projection.
        var width: Int { outputBias.shape[0] }
    }

    /// The tensors of `config`'s head (none without one).
    public static func parameterSpecs(_ config: ModelConfig) -> [ParameterSpec] {
        guard let kind = config.head else { return [] }
        return Parameters(config, kind: kind).specs
    }

    /// Whether `config`'s head reads the pooler (so the pooler's tensors are required).
    static func needsPooler(_ config: ModelConfig) -> Bool {
        guard let kind = config.head else { return false }
        return Parameters(config, kind: kind).input == .pooled
    }

    let parameters: Parameters
    let config: ModelConfig
    let transformWeight: [Float]?
    let transformBias: [Float]?
    let normWeight: [Float]?
    let normBias: [Float]?
    /// nil when the projection is the word-embedding matrix.
    let outputWeight: [Float]?
    let outputBias: [Float]

    /// The head's kind.
    public var kind: HeadKind { parameters.kind }
    /// The rows it reads.
    public var input: Input { parameters.input }
    /// Whether its output projection is the word-embedding matrix (a tied masked-LM decoder).
    public var readsWordEmbeddings: Bool { parameters.readsWordEmbeddings }

    init(config: ModelConfig, kind: HeadKind, loader: WeightLoader) throws {
        let parameters = Parameters(config, kind: kind)
        self.parameters = parameters
        self.config = config
        (transformWeight, transformBias) = try loader.affine(parameters.transform)
        (normWeight, normBias) = try loader.affine(parameters.transformNorm)
        outputWeight = parameters.readsWordEmbeddings ? nil : try loader.floats(parameters.outputWeight)
        // An untied decoder adds its own bias when the file has one; otherwise (tied, or a transformers 4 file) the
        // head's `bias`, which a missing-tensor error then names.
        if let decoderBias = parameters.decoderBias, let own = try loader.optionalFloats(decoderBias) {
            outputBias = own
        } else {
            outputBias = try loader.floats(parameters.outputBias)
        }
    }

    /// Runs the head.
    /// - Parameters:
    ///   - hidden: the final hidden states `[batch·sequence, d]`.
    ///   - pooled: the pooler output `[batch, d]` (required by ``Input/pooled``; the model loads a pooler then).
    ///   - wordEmbeddings: `[vocab, d]`, the tied decoder.
    func forward(hidden: [Float], batch: Int, sequence: Int, pooled: [Float]?, wordEmbeddings: [Float]) -> HeadOutputs {
        let d = config.hiddenSize
        var rows: Int
        var x: [Float]
        switch parameters.input {
        case .everyToken:
            rows = batch * sequence
            x = hidden
        case .pooled:
            rows = batch
            x = pooled ?? [Float](repeating: 0, count: batch * d)
        case .firstToken:
            rows = batch
            x = [Float](repeating: 0, count: batch * d)
            for b in 0..<batch { for i in 0..<d { x[b * d + i] = hidden[b * sequence * d + i] } }
        }
        let blockRows = parameters.input == .everyToken ? sequence : 1
        if let transformWeight, let transformBias {
            var y = [Float](repeating: 0, count: rows * d)
            x.withUnsafeBufferPointer { input in
                y.withUnsafeMutableBufferPointer { output in
                    Compute.linear(input.baseAddress!, rows: rows, inFeatures: d, weight: transformWeight, bias: transformBias,
                                   outFeatures: d, into: output.baseAddress!, blockRows: blockRows, gelu: parameters.activation == .gelu)
                }
            }
            if parameters.activation == .tanh { y = y.map { tanhf($0) } }
            if let normWeight, let normBias {
                y.withUnsafeMutableBufferPointer {
                    Compute.layerNorm($0.baseAddress!, rows: rows, width: d, weight: normWeight, bias: normBias,
                                      epsilon: Float(config.layerNormEpsilon))
                }
            }
            x = y
        }
        let width = parameters.width
        var out = [Float](repeating: 0, count: rows * width)
        x.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                Compute.linear(input.baseAddress!, rows: rows, inFeatures: d, weight: outputWeight ?? wordEmbeddings, bias: outputBias,
                               outFeatures: width, into: output.baseAddress!, blockRows: blockRows)
            }
        }
        switch parameters.kind {
        case .questionAnswering:
            let start = (0..<rows).map { out[$0 * 2] }, end = (0..<rows).map { out[$0 * 2 + 1] }
            return HeadOutputs(kind: .questionAnswering, logits: nil, logitsShape: [], startLogits: start, endLogits: end)
        case .sequenceClassification:
            return HeadOutputs(kind: parameters.kind, logits: out, logitsShape: [batch, width], startLogits: nil, endLogits: nil)
        case .maskedLM, .tokenClassification:
            return HeadOutputs(kind: parameters.kind, logits: out, logitsShape: [batch, sequence, width], startLogits: nil, endLogits: nil)
        }
    }
}
