import Foundation
import PKMModel

/// lucidrains `product-key-memory` 0.1.x names: a BatchNorm over the whole query, `norm.fn.*` `[H·K]`.
enum LucidrainsBatchNorm {
    /// `norm.fn.running_mean` `[H·K]`: tells 0.1.x (one statistic per query row) from 0.2.x (`[D]`, refused).
    static let runningMean = "norm.fn.running_mean"
}

extension PeerLayout {
    /// lucidrains `product-key-memory` 0.1.0–0.1.11 (`dim_head` = K): `to_queries.weight` `[H·K, d]` in the (half, head,
    /// dim) row order, `norm.fn.*` `[H·K]` a BatchNorm over the whole query (rows permuted alike), `keys` `[H, N, 2, K/2]`.
    /// This is the canonical layout with query batchnorm and no query bias after the permutations. 0.0.x checkpoints
    /// without EvoNorm have exactly these names and shapes and are read as 0.1.x; EvoNorm (`norm.gamma`) is refused.
    static let lucidrainsBatchNorm = PeerLayout(
        id: .lucidrainsBatchNorm,
        library: .lucidrains,
        claim: { leaves, _ in
            guard let mean = leaves[LucidrainsBatchNorm.runningMean], let rows = leaves[Lucidrains.queries]?.first,
                  mean == [rows] else { return .notMine }
            return .mine
        },
        leafRules: [
            LeafRule(Lucidrains.queries, ParameterNames.Memory.queryWeight, .halfHeadRows),
            LeafRule("norm.fn.weight", ParameterNames.Memory.batchNormWeight, .halfHeadRows),
            LeafRule("norm.fn.bias", ParameterNames.Memory.batchNormBias, .halfHeadRows),
            LeafRule(LucidrainsBatchNorm.runningMean, ParameterNames.Memory.batchNormMean, .halfHeadRows),
            LeafRule("norm.fn.running_var", ParameterNames.Memory.batchNormVariance, .halfHeadRows),
            LeafRule("norm.fn.num_batches_tracked", ParameterNames.Memory.batchNormBatchesTracked),
            LeafRule(Lucidrains.keys, ParameterNames.Memory.keys, .keysSwapKeyHalf),
        ],
        refusals: [
            MemoryRefusal(leafPrefix: "norm.gamma", reason: "lucidrains EvoNorm query normalisation (< 0.1.0 `use_evonorm`) is not supported"),
        ],
        heads: Lucidrains.heads,
        export: Export(
            choice: .lucidrains,
            writes: { $0.queryNorm == .batchnorm },
            place: Lucidrains.exportPlace,
            unexpressible: { memory in
                // None of the 0.2+ options exist in 0.1.x.
                let problems: [(Bool, String)] = [
                    (memory.inputNorm, "pkm.input_norm is true (lucidrains 0.1.x, the batchnorm layout, has no pre_layernorm)"),
                    (memory.outputNorm, "pkm.output_norm is true (lucidrains 0.1.x has no norm_output)"),
                    (memory.scoreActivation != .softmax, "pkm.score_activation is not softmax (lucidrains 0.1.x)"),
                    (memory.batchNormEpsilon != 1e-5, "pkm.bn_eps is \(memory.batchNormEpsilon)"),
                ]
                return Lucidrains.unexpressible(memory) + problems.filter(\.0).map(\.1)
            }))
}
