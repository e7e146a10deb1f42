import Foundation
import PKMModel

extension Exporter {
    /// What a lucidrains `PKM` module cannot express: (field, why), checked against the memory config
    /// (the lucidrains layout `export` would write it in, ``MemoryLayouts/exportLayout(_:memory:)``).
    static func lucidrainsIncompatibilities(_ memory: MemoryConfig, hiddenSize: Int) -> [String] {
        MemoryLayouts.exportLayout(.lucidrains, memory: memory)?.export?.unexpressible(memory) ?? []
    }

    /// The exported name and transform of canonical memory leaf `leaf` at `layer`: canonical names under the
    /// attribute, or the peer layout's leaf table read backwards under its container.
    /// - Throws: ``PipelineError/invalidSetting(_:value:reason:)`` (``Setting/exportLayout``) when the layout has no name for the memory.
    static func memoryName(layer: Int, leaf: String, mode: MemoryMode, memory: MemoryConfig, options: ExportOptions) throws
        -> (name: String, transform: LayoutTransform?) {
        guard let layout = MemoryLayouts.exportLayout(options.layout, memory: memory), let export = layout.export else {
            return (ParameterNames.layerPrefix(layer) + options.attribute + "." + leaf, nil)
        }
        switch export.place(layer, mode, options.attribute) {
        case .unnamed(let reason):
            throw PipelineError.invalidSetting(.exportLayout, value: options.layout.rawValue, reason: "\(reason)")
        case .prefix(let prefix):
            let exported = layout.exportedLeaf(leaf)
            return (prefix + exported.leaf, exported.transform)
        }
    }
}
