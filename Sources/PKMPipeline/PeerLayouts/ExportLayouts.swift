import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

extension Exporter {
    /// What a lucidrains `PKM` module cannot express: (field, why), checked against the memory config.
    static func lucidrainsIncompatibilities(_ memory: MemoryConfig, hiddenSize: Int) -> [String] {
        var problems: [(Bool, String)] = [
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
        if memory.queryNorm == .batchnorm {
            // 0.1.x layout: BatchNorm over the whole query, none of the 0.2+ options.
            problems += [(memory.inputNorm, "pkm.input_norm is true (lucidrains 0.1.x, the batchnorm layout, has no pre_layernorm)"),
                         (memory.outputNorm, "pkm.output_norm is true (lucidrains 0.1.x has no norm_output)"),
                         (memory.scoreActivation != .softmax, "pkm.score_activation is not softmax (lucidrains 0.1.x)"),
                         (memory.batchNormEpsilon != 1e-5, "pkm.bn_eps is \(memory.batchNormEpsilon)")]
        }
        return problems.filter(\.0).map(\.1)
    }

    /// The exported name and transform of canonical memory leaf `leaf` at `layer`, or nil to drop it.
    static func memoryName(layer: Int, leaf: String, mode: MemoryMode, memory: MemoryConfig, options: ExportOptions) throws
        -> (name: String, transform: LayoutTransform?) {
        let attribute = ParameterNames.layerPrefix(layer) + options.attribute + "."
        switch options.layout {
        case .canonical:
            return (attribute + leaf, nil)
        case .xlm:
            guard mode != .residual else {
                throw PipelineError.invalidSetting(.exportLayout, value: "xlm", reason: "the memory at layer \(layer) is in residual mode, which XLM has no name for (only memories.{i}_in and memories.{i}_after)")
            }
            return ("memories.\(layer)_\(mode == .replace ? "in" : "after").\(leaf)", nil)
        case .lucidrains:
            let layout: DetectedMemoryLayout = memory.queryNorm == .batchnorm ? .lucidrainsBatchNorm : .lucidrains
            var rules = MemoryLayouts.leafRules[layout] ?? []
            if layout == .lucidrains {
                rules += [MemoryLayouts.rule("output_norm.weight", "output_norm.weight"), MemoryLayouts.rule("output_norm.bias", "output_norm.bias")]
            }
            let inverse: [LayoutTransform: LayoutTransform] = [.halfHeadRows: .headHalfRows, .keysSwapKeyHalf: .keysToLucidrains]
            if let rule = rules.first(where: { $0.canonical == leaf }) {
                return (attribute + rule.source, rule.transform.flatMap { inverse[$0] })
            }
            return (attribute + leaf, nil)
        }
    }
}
