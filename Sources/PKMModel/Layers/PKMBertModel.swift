import Dispatch
import Foundation
import PKMTensor

/// Token inputs for one forward pass: row-major `[batch, sequence]` arrays.
public struct ModelInputs: Sendable, Equatable {
    public var batchSize: Int
    public var sequenceLength: Int
    /// Token ids `[batch, sequence]`.
    public var inputIds: [Int]
    /// 1 for real tokens, 0 for padding `[batch, sequence]`; all ones when absent.
    public var attentionMask: [Int]?
    /// Segment ids `[batch, sequence]`; zeros when absent.
    public var tokenTypeIds: [Int]?

    /// Checks that every array has `batch × sequence` entries.
    /// - Throws: ``ModelError/invalidInput(reason:)``.
    public init(batchSize: Int, sequenceLength: Int, inputIds: [Int], attentionMask: [Int]? = nil, tokenTypeIds: [Int]? = nil) throws {
        guard batchSize > 0, sequenceLength > 0 else {
            throw ModelError.invalidInput(reason: "batch \(batchSize) × sequence \(sequenceLength) is empty")
        }
        let count = batchSize * sequenceLength
        guard inputIds.count == count else { throw ModelError.invalidInput(reason: "input_ids has \(inputIds.count) entries, expected \(count)") }
        if let attentionMask, attentionMask.count != count {
            throw ModelError.invalidInput(reason: "attention_mask has \(attentionMask.count) entries, expected \(count)")
        }
        if let tokenTypeIds, tokenTypeIds.count != count {
            throw ModelError.invalidInput(reason: "token_type_ids has \(tokenTypeIds.count) entries, expected \(count)")
        }
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.tokenTypeIds = tokenTypeIds
    }
}

extension ModelInputs {
    /// The sequences `range` (a sub-batch; `range` must lie within `0..<batchSize` and not be empty).
    public func sequences(_ range: Range<Int>) -> ModelInputs {
        let span = (range.lowerBound * sequenceLength)..<(range.upperBound * sequenceLength)
        var part = self
        part.batchSize = range.count
        part.inputIds = Array(inputIds[span])
        part.attentionMask = attentionMask.map { Array($0[span]) }
        part.tokenTypeIds = tokenTypeIds.map { Array($0[span]) }
        return part
    }
}

/// What one memory layer selected: per token and head, slot ids and softmax weights, score-descending.
public struct MemoryTrace: Sendable {
    /// Encoder layer index.
    public var layer: Int
    /// `[batch, sequence, heads, knn]` slot ids (int64, as `schemas/pkm-checkpoints.md` §5 stores them).
    public var indices: [Int64]
    /// `[batch, sequence, heads, knn]` softmax weights.
    public var weights: [Float]
    /// Shape of both arrays.
    public var shape: [Int]
    /// `[batch, sequence, heads · k_dim]` queries after the optional batchnorm.
    public var queries: [Float]
    /// The memory that made the trace, to score any slot for a traced token.
    public var memory: ProductKeyMemory

    /// This memory's score of `slot` for the token at flat position `token` (`batch · sequence`
    /// order) and `head`; nil when any of them is out of range.
    public func score(token: Int, head: Int, slot: Int64) -> Float? {
        let width = memory.config.headCount * memory.config.keyDimension
        guard token >= 0, (token + 1) * width <= queries.count else { return nil }
        return queries.withUnsafeBufferPointer { memory.slotScore(query: $0.baseAddress! + token * width, head: head, slot: slot) }
    }
}

/// Results of a forward pass.
public struct ModelOutputs: Sendable {
    /// `[batch, sequence, hidden]`.
    public var lastHiddenState: [Float]
    /// `[batch, hidden]`, when the model has a pooler.
    public var poolerOutput: [Float]?
    /// `hiddenStates[0]` is the embeddings output, `hiddenStates[i]` the output of layer i−1; each
    /// `[batch, sequence, hidden]`. Empty unless requested.
    public var hiddenStates: [[Float]]
    /// Memory traces by layer, when requested.
    public var memoryTraces: [Int: MemoryTrace]
    /// Seconds spent per component (`embeddings`, `attention`, `feed_forward`, `memory`, `pooler`, `head`), when profiled.
    public var profile: [String: Double] = [:]
    /// What the task head computed, when the model has one.
    public var head: HeadOutputs?
}

/// Accumulates wall-clock seconds per component of a forward pass.
public final class ForwardProfile {
    public private(set) var seconds: [String: Double] = [:]
    public init() {}

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Adds the time since `mark` to `component` and moves `mark` to now.
    func add(_ component: String, since mark: inout UInt64) {
        let current = ForwardProfile.now()
        seconds[component, default: 0] += Double(current - mark) / 1e9
        mark = current
    }
}

/// A BERT or RoBERTa encoder with product-key memories, in float32 (`schemas/pkm-checkpoints.md` §3).
///
/// The model's parameter tree is the checkpoint key space: ``parameterSpecs(for:)`` lists every
/// canonical name and shape; ``init(config:tensor:)`` fails naming the first missing or
/// mis-shaped tensor.
public struct PKMBertModel: Sendable {
    /// The architecture.
    public let config: ModelConfig
    let embeddings: Embeddings
    /// The encoder layers, in order.
    public let layers: [EncoderLayer]
    let poolerWeight: [Float]?
    let poolerBias: [Float]?
    /// The task head, when the config names one (``ModelConfig/head``).
    public let head: TaskHead?

    /// The tensors the model itself owns (the embeddings, every layer and the head declare theirs), each
    /// declared once: the pooler `[d, d]`, `[d]`, optional unless the head reads it.
    struct Parameters: Sendable, Equatable {
        let pooler: AffineParameters

        init(_ config: ModelConfig) {
            let d = config.hiddenSize, optional = !TaskHead.needsPooler(config)
            pooler = AffineParameters(weight: ParameterSpec(name: ParameterNames.poolerWeight, shape: [d, d], isOptional: optional),
                                      bias: ParameterSpec(name: ParameterNames.poolerBias, shape: [d], isOptional: optional))
        }
    }

    /// Every tensor the model can read under `config`, in canonical order: the encoder's, then the head's.
    public static func parameterSpecs(for config: ModelConfig) -> [ParameterSpec] {
        var specs = Embeddings.parameterSpecs(config)
        for index in 0..<config.layerCount { specs += EncoderLayer.parameterSpecs(config, index: index) }
        return specs + Parameters(config).pooler.specs + TaskHead.parameterSpecs(config)
    }

    /// Builds the model from tensors looked up by canonical name.
    /// - Throws: ``ModelError`` for an invalid config, a missing tensor or a shape mismatch.
    public init(config: ModelConfig, tensor: @escaping (String) -> Tensor?) throws {
        try config.validate()
        self.config = config
        let loader = WeightLoader(lookup: tensor)
        embeddings = try Embeddings(config: config, loader: loader)
        layers = try (0..<config.layerCount).map { try EncoderLayer(config: config, index: $0, loader: loader) }
        let pooler = Parameters(config).pooler
        let weight = try loader.optionalFloats(pooler.weight)
        let bias = try loader.optionalFloats(pooler.bias)
        if (weight == nil) != (bias == nil) || (weight == nil && !pooler.weight.isOptional) {
            throw ModelError.missingTensor(name: weight == nil ? pooler.weight.name : pooler.bias.name)
        }
        poolerWeight = weight
        poolerBias = bias
        head = try config.head.map { try TaskHead(config: config, kind: $0, loader: loader) }
    }

    /// Builds the model from a state dict with canonical names.
    /// - Throws: ``ModelError``.
    public init(config: ModelConfig, stateDict: StateDict) throws {
        try self.init(config: config) { stateDict[$0] }
    }

    /// Whether the model has a pooler.
    public var hasPooler: Bool { poolerWeight != nil }

    /// Runs the encoder.
    /// - Parameters:
    ///   - collectHiddenStates: keep the embeddings output and every layer's output.
    ///   - collectMemoryTraces: keep each memory's selected slots and weights.
    /// - Throws: ``ModelError/invalidInput(reason:)`` for ids outside the vocabulary or too-long sequences.
    public func forward(_ inputs: ModelInputs, collectHiddenStates: Bool = false, collectMemoryTraces: Bool = false,
                        profile: Bool = false) throws -> ModelOutputs {
        let d = config.hiddenSize, batch = inputs.batchSize, sequence = inputs.sequenceLength, rows = batch * sequence
        let profiler = profile ? ForwardProfile() : nil
        var mark = ForwardProfile.now()
        var hidden = [Float](repeating: 0, count: rows * d)
        try hidden.withUnsafeMutableBufferPointer { try embeddings.forward(inputs, into: $0.baseAddress!) }
        profiler?.add("embeddings", since: &mark)
        var hiddenStates: [[Float]] = collectHiddenStates ? [hidden] : []
        let mask: [Float] = (inputs.attentionMask ?? [Int](repeating: 1, count: rows)).map { $0 == 0 ? -Float.greatestFiniteMagnitude : 0 }
        var traces: [Int: MemoryTrace] = [:]
        let workspace = ForwardWorkspace()
        for layer in layers {
            var indices: [Int64] = []
            var weights: [Float] = []
            var queries: [Float] = []
            let trace = collectMemoryTraces && layer.memory != nil
            if trace, let memory = layer.memory {
                let count = rows * memory.config.headCount * memory.config.knn
                indices = [Int64](repeating: -1, count: count)
                weights = [Float](repeating: 0, count: count)
                queries = [Float](repeating: 0, count: rows * memory.config.headCount * memory.config.keyDimension)
            }
            hidden.withUnsafeMutableBufferPointer { h in
                indices.withUnsafeMutableBufferPointer { i in
                    weights.withUnsafeMutableBufferPointer { w in
                        queries.withUnsafeMutableBufferPointer { q in
                            let pointers = trace ? ProductKeyMemory.Trace(indices: i.baseAddress!, weights: w.baseAddress!, queries: q.baseAddress!) : nil
                            layer.forward(h.baseAddress!, batch: batch, sequence: sequence, additiveMask: mask,
                                          trace: pointers, profile: profiler, workspace: workspace)
                        }
                    }
                }
            }
            if trace, let memory = layer.memory {
                traces[layer.index] = MemoryTrace(layer: layer.index, indices: indices, weights: weights,
                                                  shape: [batch, sequence, memory.config.headCount, memory.config.knn],
                                                  queries: queries, memory: memory)
            }
            if collectHiddenStates { hiddenStates.append(hidden) }
        }
        mark = ForwardProfile.now()
        var pooled: [Float]?
        if let poolerWeight {
            var first = [Float](repeating: 0, count: batch * d)
            for b in 0..<batch { for i in 0..<d { first[b * d + i] = hidden[b * sequence * d + i] } }
            var out = [Float](repeating: 0, count: batch * d)
            first.withUnsafeBufferPointer { f in
                out.withUnsafeMutableBufferPointer { o in
                    Compute.linear(f.baseAddress!, rows: batch, inFeatures: d, weight: poolerWeight, bias: poolerBias, outFeatures: d, into: o.baseAddress!, blockRows: 1)
                }
            }
            pooled = out.map { tanhf($0) }
        }
        profiler?.add("pooler", since: &mark)
        let headOutputs = head?.forward(hidden: hidden, batch: batch, sequence: sequence, pooled: pooled, wordEmbeddings: embeddings.word)
        if head != nil { profiler?.add("head", since: &mark) }
        return ModelOutputs(lastHiddenState: hidden, poolerOutput: pooled, hiddenStates: hiddenStates, memoryTraces: traces,
                            profile: profiler?.seconds ?? [:], head: headOutputs)
    }
}
