import Foundation
import PKMModel

/// lucidrains' `product-key-memory` names, shared by its two layouts (this file: 0.2.0–0.3.0 with LayerNorm;
/// `LucidrainsBatchNormLayout.swift`: 0.1.x with BatchNorm). `dim_head` D is half a head's query width K.
enum Lucidrains {
    /// `to_queries.weight` `[2·H·D, d]`, no bias; rows ordered (half p, head h, dim) where XLM orders (h, p, dim).
    static let queries = "to_queries.weight"
    /// `keys` `[H, N, 2, D]`; canonical `[H, 2, N, D]` is `keys.permute(0, 2, 1, 3)`.
    static let keys = "keys"

    /// H from the keys `[H, N, 2, D]`.
    static func heads(_ leaves: PeerLayout.Leaves) -> Int? { MemoryLayouts.headsFromKeys(leaves) }

    /// A memory under the module attribute, as users attach `PKM` (`encoder.layer.{i}.{attribute}.`).
    static func exportPlace(layer: Int, mode: MemoryMode, attribute: String) -> PeerLayout.ExportPlace {
        .prefix(ParameterNames.layerPrefix(layer) + attribute + ".")
    }

    /// What a lucidrains `PKM` module of any version cannot express: (field, why), checked against the memory config.
    static func unexpressible(_ memory: MemoryConfig) -> [String] {
        let problems: [(Bool, String)] = [
            (memory.queryBias, "pkm.query_bias is true (lucidrains' to_queries has no bias)"),
            (!memory.queryLayerSizes.isEmpty, "pkm.query_layer_sizes is \(memory.queryLayerSizes) (lucidrains has one query linear)"),
            (memory.queryNorm == .none, "pkm.query_norm is \"none\" (lucidrains always normalises queries)"),
            (memory.queryNormalize != .none, "pkm.query_normalize is \"\(memory.queryNormalize.rawValue)\""),
            (memory.temperature != 1, "pkm.temperature is \(memory.temperature)"),
            (memory.scoreActivation == .identity, "pkm.score_activation is \"identity\""),
            (memory.valueProjection != .none, "pkm.value_projection is \"\(memory.valueProjection.rawValue)\""),
            (memory.outputGate != .none, "pkm.output_gate is \"\(memory.outputGate.rawValue)\""),
            (memory.slotMap != .none, "pkm.slot_map is \"\(memory.slotMap.rawValue)\""),
            (memory.sharedValues != nil, "pkm.shared_values is set"),
            (memory.layerNormEpsilon != 1e-5, "pkm.norm_eps is \(memory.layerNormEpsilon) (nn.LayerNorm's 1e-5)"),
        ]
        return problems.filter(\.0).map(\.1)
    }
}

extension PeerLayout {
    /// lucidrains `product-key-memory` 0.2.0–0.3.0 (`use_layernorm=True`): per-half LayerNorm `norm.{weight,bias}` `[D]`,
    /// optional `pre_layernorm` (0.2.1+) and `output_norm` (0.2.10+, same name as canonical, so not in the table).
    /// Recognised by `to_queries.weight` without BatchNorm statistics; 0.2.x's own BatchNorm option
    /// (`norm.fn.running_mean` `[D]`, per half-query) is broken upstream and refused.
    static let lucidrains = PeerLayout(
        id: .lucidrains,
        library: .lucidrains,
        claim: { leaves, forced in
            guard forced || leaves[Lucidrains.queries] != nil else { return .notMine }
            guard let mean = leaves[LucidrainsBatchNorm.runningMean] else { return .mine }
            if PeerLayout.lucidrainsBatchNorm.claim(leaves, forced) == .mine { return .notMine }
            return .refused("lucidrains 0.2.x BatchNorm queries (\(LucidrainsBatchNorm.runningMean) \(mean), per half-query) are broken upstream and not supported; use use_layernorm=True")
        },
        leafRules: [
            LeafRule(Lucidrains.queries, ParameterNames.Memory.queryWeight, .halfHeadRows),
            LeafRule("norm.weight", ParameterNames.Memory.queryNorm + ".weight"),
            LeafRule("norm.bias", ParameterNames.Memory.queryNorm + ".bias"),
            LeafRule(Lucidrains.keys, ParameterNames.Memory.keys, .keysSwapKeyHalf),
            LeafRule("pre_layernorm.weight", ParameterNames.Memory.inputNorm + ".weight"),
            LeafRule("pre_layernorm.bias", ParameterNames.Memory.inputNorm + ".bias"),
        ],
        refusals: [
            MemoryRefusal(leafPrefix: "maybe_concat_combine.", reason: "lucidrains concat_values_and_combine is not supported: upstream it ignores the selection weights, so the memory is not a weighted product-key read"),
        ],
        heads: Lucidrains.heads,
        export: Export(
            choice: .lucidrains,
            writes: { $0.queryNorm != .batchnorm },
            place: Lucidrains.exportPlace,
            unexpressible: Lucidrains.unexpressible))
}
