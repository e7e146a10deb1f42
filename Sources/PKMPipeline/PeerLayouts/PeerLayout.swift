import Foundation
import PKMModel

/// One peer library's memory layout, as data: how its memories are recognised, how their leaves become canonical
/// leaves (and, read backwards, how canonical leaves are exported), what of it is refused, and what it can express.
///
/// One value per layout, one file each (`LucidrainsLayout.swift`, `LucidrainsBatchNormLayout.swift`,
/// `LinguaLayout.swift`, `XLMLayout.swift`); ``MemoryLayouts/detectionOrder`` lists them. The facts come from the
/// libraries' own source (as their source code stores them); the contract is `schemas/pkm-checkpoints.md` §6b and §9.
/// Leaves are relative to the memory's attribute (`encoder.layer.{i}.memory.`), after ``KeyMapping`` has mapped the
/// containers; leaves a layout's table does not list keep their names in both directions.
struct PeerLayout: Sendable {
    /// One memory's leaves: leaf name → source shape.
    typealias Leaves = [String: [Int]]

    /// One renaming of a memory leaf: the library's leaf → the canonical leaf, with the byte re-ordering between them.
    struct LeafRule: Sendable, Equatable {
        /// The leaf as the library names it.
        let source: String
        /// The canonical leaf (``ParameterNames/Memory``).
        let canonical: String
        /// How the source bytes become the canonical tensor; nil when they are already canonical.
        let transform: LayoutTransform?
        /// The rule applies only to a source tensor of this rank (nil: any rank).
        let sourceRank: Int?

        init(_ source: String, _ canonical: String, _ transform: LayoutTransform? = nil, sourceRank: Int? = nil) {
            self.source = source
            self.canonical = canonical
            self.transform = transform
            self.sourceRank = sourceRank
        }
    }

    /// What a layout says about one memory's leaves during detection.
    enum Claim: Sendable, Equatable {
        /// The leaves are this layout's.
        case mine
        /// They are not; the next layout in ``MemoryLayouts/detectionOrder`` is asked.
        case notMine
        /// They are this library's, in a form pkm-convert refuses, for this reason.
        case refused(String)
    }

    /// Where a memory's tensors go on export.
    enum ExportPlace: Sendable, Equatable {
        /// Under this name prefix (the leaf follows).
        case prefix(String)
        /// Nowhere: the library has no name for such a memory, for this reason.
        case unnamed(reason: String)
    }

    /// The layout's name in reports and JSON (``MappingReport/memoryLayouts``).
    let id: DetectedMemoryLayout
    /// The ``MemoryLayoutChoice`` that names the layout's library (one library may have several layouts).
    let library: MemoryLayoutChoice
    /// Detection: whether `leaves` are this layout's. `forced` is true when ``MemoryImportOptions/layout`` names ``library``,
    /// when the library's names need not be present, only the choice between its layouts is made.
    let claim: @Sendable (_ leaves: Leaves, _ forced: Bool) -> Claim
    /// The leaf table, in the order rules are tried (the first that fits a leaf applies).
    let leafRules: [LeafRule]
    /// Memories refused whatever the chosen layout, recognised by a leaf of this library.
    let refusals: [MemoryRefusal]
    /// H, the head count the transforms need, from the source leaves (nil when they do not say).
    let heads: @Sendable (_ leaves: Leaves) -> Int?
    /// How the layout is written by `export`; nil when pkm-convert does not export it.
    let export: Export?

    /// What an export (``ExportOptions/layout``) needs to write a layout.
    struct Export: Sendable {
        /// The ``ExportOptions/layout`` value that writes this layout.
        let choice: ExportMemoryLayout
        /// Among the layouts of ``choice``, whether this one is written for a memory with this config.
        let writes: @Sendable (_ memory: MemoryConfig) -> Bool
        /// Where a memory at `layer`, in `mode`, goes; `attribute` is ``ExportOptions/attribute``.
        let place: @Sendable (_ layer: Int, _ mode: MemoryMode, _ attribute: String) -> ExportPlace
        /// What the library cannot express of a memory config: one sentence per field, naming it (empty: exportable).
        let unexpressible: @Sendable (_ memory: MemoryConfig) -> [String]
    }

    /// The import rule for source leaf `leaf` of shape `shape`, or nil when the leaf keeps its name and bytes.
    func importRule(leaf: String, shape: [Int]) -> LeafRule? {
        leafRules.first { $0.source == leaf && ($0.sourceRank == nil || $0.sourceRank == shape.count) }
    }

    /// The exported leaf and transform of canonical leaf `canonical`: the leaf table read backwards, with each
    /// transform's ``LayoutTransform/inverse``. Leaves the table does not list keep their canonical names.
    func exportedLeaf(_ canonical: String) -> (leaf: String, transform: LayoutTransform?) {
        guard let rule = leafRules.first(where: { $0.canonical == canonical }) else { return (canonical, nil) }
        return (rule.source, rule.transform?.inverse)
    }
}

/// A memory pkm-convert refuses, recognised by any leaf that starts with ``leafPrefix``.
struct MemoryRefusal: Sendable, Equatable {
    /// The start of a leaf only such memories have.
    let leafPrefix: String
    /// Why it is refused (the text of ``PipelineError/unsupportedMemory(layer:reason:)``).
    let reason: String
}
