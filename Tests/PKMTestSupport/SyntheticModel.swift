import Foundation
import PKMModel
import PKMTensor

/// Builds small random models in tests (no fixtures needed): a config and a canonical state dict.
public enum SyntheticModel {
    /// A deterministic generator so tests are reproducible.
    public typealias Generator = SplitMix64

    /// A tiny config: vocab 50, hidden 16, 2 heads, 3 layers, memory n_keys 8, 2 heads, knn 4, k_dim 8.
    public static func config(type: ModelConfig.ModelType = .bert, memoryLayers: [Int] = [], modes: [MemoryMode] = [],
                              queryBatchNorm: Bool = true, queryBias: Bool = true) -> ModelConfig {
        let memory = memoryLayers.isEmpty ? nil : MemoryConfig(layers: memoryLayers, modes: modes, keyCount: 8, headCount: 2, knn: 4,
                                                               keyDimension: 8, valueDimension: 16, queryBatchNorm: queryBatchNorm,
                                                               queryBias: queryBias)
        return ModelConfig(modelType: type, vocabSize: 50, hiddenSize: 16, layerCount: 3, attentionHeadCount: 2, intermediateSize: 32,
                           maxPositionEmbeddings: 40, typeVocabSize: 2, layerNormEpsilon: 1e-12, padTokenId: type == .roberta ? 1 : 0,
                           memory: memory)
    }

    /// Random values for every tensor the config implies (norm weights near 1, variances positive).
    public static func stateDict(for config: ModelConfig, seed: UInt64 = 1, withPooler: Bool = true) throws -> StateDict {
        var generator = Generator(seed: seed)
        var dict = StateDict()
        for spec in PKMBertModel.parameterSpecs(for: config) {
            if spec.name.hasPrefix("pooler."), !withPooler { continue }
            if spec.name.hasSuffix("num_batches_tracked") {
                try dict.insert(Tensor(int64: [7], shape: []), named: spec.name)
                continue
            }
            let count = ShapeMath.elementCount(spec.shape) ?? 0
            var values = (0..<count).map { _ in generator.symmetric() * 0.5 }
            if spec.name.hasSuffix("LayerNorm.weight") || spec.name.hasSuffix("query_mlps.1.weight") {
                values = values.map { 1 + $0 * 0.2 }
            } else if spec.name.hasSuffix("running_var") {
                values = values.map { 0.5 + abs($0) }
            }
            try dict.insert(Tensor(float32: values, shape: spec.shape), named: spec.name)
        }
        return dict
    }

    /// Random inputs `[batch, sequence]` with the last `padding` positions of the last row padded.
    public static func inputs(config: ModelConfig, batch: Int, sequence: Int, padding: Int = 0, seed: UInt64 = 2) throws -> ModelInputs {
        var generator = Generator(seed: seed)
        var ids = (0..<(batch * sequence)).map { _ in generator.int(2..<config.vocabSize) }
        var mask = [Int](repeating: 1, count: batch * sequence)
        for t in (sequence - padding)..<sequence {
            ids[(batch - 1) * sequence + t] = config.padTokenId
            mask[(batch - 1) * sequence + t] = 0
        }
        let types = (0..<(batch * sequence)).map { _ in generator.int(0..<config.typeVocabSize) }
        return try ModelInputs(batchSize: batch, sequenceLength: sequence, inputIds: ids, attentionMask: mask, tokenTypeIds: types)
    }
}
