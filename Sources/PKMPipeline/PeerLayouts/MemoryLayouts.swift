import Foundation
import PKMModel
import PKMTensor

/// The per-layout tables: source leaf (under the memory's prefix) → canonical leaf and transform.
/// Leaves a layout does not list keep their names (and are reported unexpected if the model does not read them).
public enum MemoryLayouts {
    /// One renaming of a memory leaf.
    public struct LeafRule: Sendable {
        public let source: String
        public let canonical: String
        public let transform: LayoutTransform?
    }

    static func rule(_ source: String, _ canonical: String, _ transform: LayoutTransform? = nil) -> LeafRule {
        LeafRule(source: source, canonical: canonical, transform: transform)
    }

    /// Leaf rules per detected layout.
    public static let leafRules: [DetectedMemoryLayout: [LeafRule]] = [
        .lucidrains: [
            rule("to_queries.weight", "query_proj.query_mlps.0.weight", .halfHeadRows),
            rule("norm.weight", "query_norm.weight"), rule("norm.bias", "query_norm.bias"),
            rule("keys", "keys", .keysSwapKeyHalf),
            rule("pre_layernorm.weight", "input_norm.weight"), rule("pre_layernorm.bias", "input_norm.bias"),
        ],
        .lucidrainsBatchNorm: [
            rule("to_queries.weight", "query_proj.query_mlps.0.weight", .halfHeadRows),
            rule("norm.fn.weight", "query_proj.query_mlps.1.weight", .halfHeadRows),
            rule("norm.fn.bias", "query_proj.query_mlps.1.bias", .halfHeadRows),
            rule("norm.fn.running_mean", "query_proj.query_mlps.1.running_mean", .halfHeadRows),
            rule("norm.fn.running_var", "query_proj.query_mlps.1.running_var", .halfHeadRows),
            rule("norm.fn.num_batches_tracked", "query_proj.query_mlps.1.num_batches_tracked"),
            rule("keys", "keys", .keysSwapKeyHalf),
        ],
        // Meta's and XLM's rank-2 keys are handled by ``keysRule(layout:)``: canonical rank-4 keys need nothing.
        .lingua: [],
        .xlm: [],
    ]

    /// The rule for rank-2 keys: Meta's `[2·H·N, D]` (a reshape) or XLM's shared `[N, D]` (a broadcast).
    static func keysRule(layout: DetectedMemoryLayout) -> LeafRule? {
        switch layout {
        case .lingua: return rule("keys", "keys", .keysReshape)
        case .xlm: return rule("keys", "keys", .keysBroadcast)
        case .lucidrains, .lucidrainsBatchNorm: return nil
        }
    }

    /// Memories pkm-convert refuses, recognised by a leaf, with the reason.
    public static let refusals: [(leafPrefix: String, reason: String)] = [
        ("maybe_concat_combine.", "lucidrains concat_values_and_combine is not supported: upstream it ignores the selection weights, so the memory is not a weighted product-key read"),
        ("weight_down_embed", "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        ("weight_up_embed", "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        ("fast_weight", "fast-weight product-key memories update their values at inference; they are not supported"),
        ("norm.gamma", "lucidrains EvoNorm query normalisation (< 0.1.0 `use_evonorm`) is not supported"),
    ]

    /// The layout of one memory, from its leaves (name → source shape).
    /// - Throws: ``PipelineError/unsupportedMemory(layer:reason:)`` for refused layouts.
    static func detect(layer: Int, leaves: [String: [Int]], choice: MemoryLayoutChoice) throws -> DetectedMemoryLayout {
        for (prefix, reason) in refusals where leaves.keys.contains(where: { $0.hasPrefix(prefix) }) {
            throw PipelineError.unsupportedMemory(layer: layer, reason: reason)
        }
        let lucidrainsNames = leaves["to_queries.weight"] != nil
        func lucidrainsKind() throws -> DetectedMemoryLayout {
            guard let mean = leaves["norm.fn.running_mean"] else { return .lucidrains }
            if let queries = leaves["to_queries.weight"], mean == [queries[0]] { return .lucidrainsBatchNorm }
            throw PipelineError.unsupportedMemory(layer: layer, reason: "lucidrains 0.2.x BatchNorm queries (norm.fn.running_mean \(mean), per half-query) are broken upstream and not supported; use use_layernorm=True")
        }
        switch choice {
        case .lucidrains: return try lucidrainsKind()
        case .lingua: return .lingua
        case .xlm: return .xlm
        case .auto:
            if lucidrainsNames { return try lucidrainsKind() }
            let metaNames = ["swilu_projection.weight", "value_proj.weight", "gating.weight"]
            if metaNames.contains(where: { leaves[$0] != nil }) { return .lingua }
            if let keys = leaves["keys"], keys.count == 2, let values = leaves["values.weight"], values.count == 2 {
                // [N, D] with N² value rows is XLM's shared keys; otherwise Meta's [2·H·N, D].
                if keys[0] * keys[0] != values[0], let rows = queryRows(leaves), keys[1] > 0, rows % (2 * keys[1]) == 0 {
                    let heads = rows / (2 * keys[1])
                    if keys[0] % (2 * heads) == 0, (keys[0] / (2 * heads)) * (keys[0] / (2 * heads)) == values[0] { return .lingua }
                }
            }
            return .xlm
        }
    }

    /// Output width of the last linear of a canonical-named query network (H·K).
    static func queryRows(_ leaves: [String: [Int]]) -> Int? {
        var index = 0, rows: Int?
        while index < 64 {
            if let shape = leaves["query_proj.query_mlps.\(index).weight"], shape.count == 2 { rows = shape[0] }
            index += 1
        }
        return rows
    }

    /// H for the transforms of one memory: from lucidrains keys `[H, N, 2, D]`, or from the query width / K.
    static func heads(layout: DetectedMemoryLayout, leaves: [String: [Int]]) -> Int? {
        guard let keys = leaves["keys"] else { return nil }
        switch layout {
        case .lucidrains, .lucidrainsBatchNorm:
            return keys.count == 4 ? keys[0] : nil
        case .xlm, .lingua:
            if keys.count == 4 { return keys[0] }
            guard keys.count == 2, keys[1] > 0, let rows = queryRows(leaves), rows % (2 * keys[1]) == 0 else { return nil }
            return rows / (2 * keys[1])
        }
    }

    /// The canonical shape of `leaf` after `transform` (nil when the source shape does not fit it).
    static func canonicalShape(_ shape: [Int], transform: LayoutTransform?, heads: Int) -> [Int]? {
        guard let transform else { return shape }
        switch transform {
        case .halfHeadRows:
            return shape.first.map { $0 % (2 * heads) == 0 ? shape : [] }.flatMap { $0.isEmpty ? nil : $0 }
        case .keysSwapKeyHalf:
            return shape.count == 4 && shape[2] == 2 ? [shape[0], 2, shape[1], shape[3]] : nil
        case .keysReshape:
            guard shape.count == 2, shape[0] % (2 * heads) == 0 else { return nil }
            return [heads, 2, shape[0] / (2 * heads), shape[1]]
        case .keysBroadcast:
            return shape.count == 2 ? [heads, 2, shape[0], shape[1]] : nil
        case .headHalfRows:
            return shape
        case .keysToLucidrains:
            return shape.count == 4 && shape[1] == 2 ? [shape[0], shape[2], 2, shape[3]] : nil
        }
    }
}
