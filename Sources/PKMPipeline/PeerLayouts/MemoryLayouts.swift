import Foundation
import PKMModel

/// Which implementation's memory layout a checkpoint uses (``MemoryImportOptions/layout``; `schemas/pkm-checkpoints.md` §6b).
public enum MemoryLayoutChoice: String, Sendable, Codable, CaseIterable {
    /// Detect per memory from tensor names and shapes.
    case auto
    /// XLM `HashingMemory` (the canonical layout; shared `[N, K/2]` keys are broadcast).
    case xlm
    /// lucidrains `product-key-memory` (`to_queries`, `keys` `[H, N, 2, D]`, `norm`).
    case lucidrains
    /// Meta's "Memory Layers at Scale" (`lingua/product_key`; `keys` `[2·H·N, K/2]`, Memory+ projections).
    case lingua
}

/// A detected layout, finer than ``MemoryLayoutChoice`` (lucidrains' two query normalisations differ in names).
/// The raw values appear in JSON reports.
public enum DetectedMemoryLayout: String, Sendable, Codable, CaseIterable {
    /// XLM `HashingMemory`, the canonical names (``PeerLayout/xlm``).
    case xlm
    /// lucidrains 0.2.x–0.3.0: per-half LayerNorm `norm.{weight,bias}` `[D]`.
    case lucidrains
    /// lucidrains 0.1.x: BatchNorm over the whole query, `norm.fn.*` `[H·K]`.
    case lucidrainsBatchNorm = "lucidrains-0.1"
    /// Meta's `lingua/product_key` (``PeerLayout/lingua``).
    case lingua
}

/// The registry of peer layouts and the machinery that picks one per memory (`schemas/pkm-checkpoints.md` §6b).
///
/// A new peer layout is one file declaring its ``PeerLayout`` value, plus, here, its ``DetectedMemoryLayout``
/// case (and a ``MemoryLayoutChoice`` case for a new library) and its place in ``detectionOrder``.
public enum MemoryLayouts {
    /// Every layout, in the order ``MemoryLayoutChoice/auto`` asks them: the first that claims a memory's leaves wins.
    /// lucidrains first (its names are unmistakable), Meta before XLM, and XLM, which claims anything, last.
    static let detectionOrder: [PeerLayout] = [.lucidrains, .lucidrainsBatchNorm, .lingua, .xlm]

    /// Modules of other libraries that sit where a memory would and are no product-key memory of values.
    /// They are named before the layouts' own refusals: peer-pytorch's PEER holds `norm.gamma` too, which
    /// would otherwise read as lucidrains' EvoNorm.
    static let foreignModules: [MemoryRefusal] = [
        MemoryRefusal(leafPrefix: "weight_down_embed", reason: "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        MemoryRefusal(leafPrefix: "weight_up_embed", reason: "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        MemoryRefusal(leafPrefix: "fast_weight", reason: "fast-weight product-key memories update their values at inference; they are not supported"),
    ]

    /// Every leaf refusal, in the order checked: the first whose leaf a memory holds names the error.
    static var refusals: [MemoryRefusal] { foreignModules + detectionOrder.flatMap(\.refusals) }

    /// The layout of one memory, from its leaves (name → source shape).
    /// - Throws: ``PipelineError/unsupportedMemory(layer:reason:)`` for refused memories, naming `layer`.
    static func detect(layer: Int, leaves: PeerLayout.Leaves, choice: MemoryLayoutChoice) throws -> PeerLayout {
        for refusal in refusals where leaves.keys.contains(where: { $0.hasPrefix(refusal.leafPrefix) }) {
            throw PipelineError.unsupportedMemory(layer: layer, reason: refusal.reason)
        }
        let forced = choice != .auto
        for layout in detectionOrder where !forced || layout.library == choice {
            switch layout.claim(leaves, forced) {
            case .mine: return layout
            case .notMine: continue
            case .refused(let reason): throw PipelineError.unsupportedMemory(layer: layer, reason: reason)
            }
        }
        throw PipelineError.unsupportedMemory(layer: layer, reason: "no \(choice.rawValue) memory layout fits its tensors \(leaves.keys.sorted())")
    }

    /// The layout an export with ``ExportOptions/layout`` `choice` writes a memory with config `memory` in; nil for `canonical`.
    static func exportLayout(_ choice: ExportMemoryLayout, memory: MemoryConfig) -> PeerLayout? {
        detectionOrder.first { $0.export?.choice == choice && $0.export?.writes(memory) == true }
    }

    /// Output width of the last linear of a canonical-named query network (H·K).
    static func queryRows(_ leaves: PeerLayout.Leaves) -> Int? {
        var index = 0, rows: Int?
        while index < 64 {
            if let shape = leaves[ParameterNames.Memory.queryModule(index) + ".weight"], shape.count == 2 { rows = shape[0] }
            index += 1
        }
        return rows
    }

    /// H from keys of rank 4 (`[H, 2, N, D]` canonical, `[H, N, 2, D]` lucidrains).
    static func headsFromKeys(_ leaves: PeerLayout.Leaves) -> Int? {
        guard let keys = leaves[ParameterNames.Memory.keys], keys.count == 4 else { return nil }
        return keys[0]
    }

    /// H from keys of rank 2 (`[·, D]`) and the query width H·K = H·2·D.
    static func headsFromQuery(_ leaves: PeerLayout.Leaves) -> Int? {
        guard let keys = leaves[ParameterNames.Memory.keys], keys.count == 2, keys[1] > 0, let rows = queryRows(leaves),
              rows % (2 * keys[1]) == 0 else { return nil }
        return rows / (2 * keys[1])
    }

    /// The canonical shape of a leaf of shape `shape` after `transform` (nil when the shape does not fit it).
    static func canonicalShape(_ shape: [Int], transform: LayoutTransform?, heads: Int) -> [Int]? {
        guard let transform else { return shape }
        return transform.resultShape(of: shape, heads: heads)
    }
}
