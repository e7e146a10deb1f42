import Foundation
import PKMModel
import PKMTensor

/// Which implementation's memory layout a checkpoint uses (`--memory-layout`; `/work/shared/spec/peer-layouts.md`).
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

/// How a memory's tensors are found and canonicalised on import.
public struct MemoryImportOptions: Sendable, Codable, Equatable {
    /// Layout to assume, or `auto`.
    public var layout: MemoryLayoutChoice = .auto
    /// Module attribute holding the memory under `encoder.layer.{i}.` besides ``KeyMapping/memoryAttributes``.
    public var attribute: String?
    public init(layout: MemoryLayoutChoice = .auto, attribute: String? = nil) {
        self.layout = layout
        self.attribute = attribute
    }
}

/// A detected layout, finer than ``MemoryLayoutChoice`` (lucidrains' two query normalisations differ in names).
public enum DetectedMemoryLayout: String, Sendable, Codable {
    case xlm
    /// lucidrains 0.2.x–0.3.0: per-half LayerNorm `norm.{weight,bias}` `[D]`.
    case lucidrains
    /// lucidrains 0.1.x: BatchNorm over the whole query, `norm.fn.*` `[H·K]`.
    case lucidrainsBatchNorm = "lucidrains-0.1"
    case lingua
}
