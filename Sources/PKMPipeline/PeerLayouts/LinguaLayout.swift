import Foundation
import PKMModel

extension PeerLayout {
    /// Meta's "Memory Layers at Scale" (facebookresearch/memory, `lingua/product_key/memory.py`): canonical names
    /// (`query_proj.query_mlps.0`, `values.weight`, Memory+ `swilu_projection`, `value_proj`, optional `gating`) and
    /// `keys` `[2·H·N, K/2]`, the canonical `[H, 2, N, K/2]` in the same byte order (a reshape).
    ///
    /// Recognised by a Memory+ or gate projection, or by rank-2 keys whose rows split into H·2 halves of N keys
    /// with N² value rows (XLM's shared `[N, K/2]` keys have N rows). Not exported: its own loader reads canonical names.
    static let lingua = PeerLayout(
        id: .lingua,
        library: .lingua,
        claim: { leaves, forced in
            typealias M = ParameterNames.Memory
            if forced { return .mine }
            let memoryPlusNames = [M.swigluProjection, M.valueProjection, M.gating].map { $0 + ".weight" }
            if memoryPlusNames.contains(where: { leaves[$0] != nil }) { return .mine }
            /// n², or nil when it overflows (then it is no row count either).
            func square(_ n: Int) -> Int? { let (product, overflow) = n.multipliedReportingOverflow(by: n); return overflow ? nil : product }
            guard let keys = leaves[M.keys], keys.count == 2, let values = leaves[M.values], values.count == 2,
                  square(keys[0]) != values[0], let heads = MemoryLayouts.headsFromQuery(leaves), heads > 0,
                  keys[0] % (2 * heads) == 0 else { return .notMine }
            return square(keys[0] / (2 * heads)) == values[0] ? .mine : .notMine
        },
        leafRules: [
            LeafRule(ParameterNames.Memory.keys, ParameterNames.Memory.keys, .keysReshape, sourceRank: 2),
        ],
        refusals: [],
        heads: { MemoryLayouts.headsFromKeys($0) ?? MemoryLayouts.headsFromQuery($0) },
        export: nil)
}
