import Foundation
import PKMModel
import PKMTestSupport
import Testing
@testable import PKMPipeline

@Suite("Key mapping")
struct KeyMappingTests {
    @Test("canonical names map to themselves", arguments: [
        SyntheticModel.config(memoryLayers: [0, 2], modes: [.residual, .replace]),
        SyntheticModel.config(type: .roberta, memoryLayers: [1], modes: [.after], queryBatchNorm: false, queryBias: false),
    ])
    func canonicalIsFixedPoint(config: ModelConfig) {
        for spec in PKMBertModel.parameterSpecs(for: config) {
            let mapped = KeyMapping.canonicalName(for: spec.name)
            #expect(mapped.canonical == spec.name)
            #expect(mapped.applied.isEmpty, "\(spec.name) had rules \(mapped.applied)")
        }
    }

    @Test("every alias of spec §6 reaches its canonical name", arguments: [
        ("bert.encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.weight", ["strip:bert."]),
        ("roberta.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", ["strip:roberta."]),
        ("module.bert.pooler.dense.bias", "pooler.dense.bias", ["strip:module.", "strip:bert."]),
        ("model.encoder.layer.3.output.dense.weight", "encoder.layer.3.output.dense.weight", ["strip:model."]),
        ("bert.embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight", ["strip:bert.", "layernorm-gamma"]),
        ("encoder.layer.1.attention.output.LayerNorm.beta", "encoder.layer.1.attention.output.LayerNorm.bias", ["layernorm-beta"]),
        ("encoder.layer.2.memory.query_proj.0.weight", "encoder.layer.2.memory.query_proj.query_mlps.0.weight", ["xlm-query-proj"]),
        ("encoder.layer.2.memory.query_proj.1.running_var", "encoder.layer.2.memory.query_proj.query_mlps.1.running_var", ["xlm-query-proj"]),
        ("encoder.layer.4.layer_norm.weight", "encoder.layer.4.output.LayerNorm.weight", ["replace-layer-norm"]),
        ("encoder.layer.4.layer_norm.gamma", "encoder.layer.4.output.LayerNorm.weight", ["replace-layer-norm", "layernorm-gamma"]),
        ("memories.3_in.keys", "encoder.layer.3.memory.keys", ["xlm-memory-in"]),
        ("memories.5_after.values.weight", "encoder.layer.5.memory.values.weight", ["xlm-memory-after"]),
        ("module.memories.5_after.query_proj.0.bias", "encoder.layer.5.memory.query_proj.query_mlps.0.bias", ["strip:module.", "xlm-memory-after", "xlm-query-proj"]),
    ])
    func aliases(source: String, canonical: String, rules: [String]) {
        let mapped = KeyMapping.canonicalName(for: source)
        #expect(mapped.canonical == canonical)
        #expect(mapped.applied == rules)
    }

    @Test("XLM memory names imply the mode; prefixes imply the model type")
    func implications() {
        let inside = KeyMapping.canonicalName(for: "memories.3_in.keys")
        #expect(inside.impliedMemoryMode?.layer == 3)
        #expect(inside.impliedMemoryMode?.mode == .replace)
        #expect(KeyMapping.canonicalName(for: "memories.0_after.keys").impliedMemoryMode?.mode == .after)
        #expect(KeyMapping.canonicalName(for: "roberta.pooler.dense.weight").impliedModelType == .roberta)
        #expect(KeyMapping.canonicalName(for: "pooler.dense.weight").impliedModelType == nil)
    }

    @Test("every aliased form of a full model maps back onto the model with nothing unmatched")
    func fullModelRoundTrip() {
        let config = SyntheticModel.config(memoryLayers: [0, 2], modes: [.after, .replace])
        let canonical = Set(PKMBertModel.parameterSpecs(for: config).map(\.name))
        // Rewrite canonical names into the aliases a legacy XLM-style export would use.
        func legacy(_ name: String) -> String {
            var n = name
            n = n.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma").replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
            n = n.replacingOccurrences(of: "query_proj.query_mlps.", with: "query_proj.")
            n = n.replacingOccurrences(of: "encoder.layer.0.memory.", with: "memories.0_after.")
            n = n.replacingOccurrences(of: "encoder.layer.2.output.LayerNorm.gamma", with: "encoder.layer.2.layer_norm.weight")
            return "module.bert." + n
        }
        let mapped = Set(canonical.map { KeyMapping.canonicalName(for: legacy($0)).canonical })
        #expect(mapped == canonical)
    }

    @Test("unused tensors keep their name after prefix stripping")
    func unexpectedNames() {
        #expect(KeyMapping.canonicalName(for: "cls.predictions.bias").canonical == "cls.predictions.bias")
        #expect(KeyMapping.canonicalName(for: "lm_head.dense.weight").canonical == "lm_head.dense.weight")
        #expect(KeyMapping.isIgnoredBuffer(KeyMapping.canonicalName(for: "bert.embeddings.position_ids").canonical))
    }

    @Test("XLM's container rules come from its layout's positions and read back what its export writes")
    func xlmContainers() throws {
        // The ids appear in import reports' `rules`.
        #expect(KeyMapping.containerRules.map(\.id) == ["xlm-memory-in", "xlm-memory-after"])
        for (kind, mode) in XLM.positions {
            let place = try #require(PeerLayout.xlm.export).place(7, mode, "memory")
            #expect(place == .prefix(XLM.container(layer: 7, kind: kind)))
            let mapped = KeyMapping.canonicalName(for: XLM.container(layer: 7, kind: kind) + "query_proj.0.weight")
            #expect(mapped.canonical == "encoder.layer.7.memory.query_proj.query_mlps.0.weight")
            #expect(mapped.impliedMemoryMode?.layer == 7 && mapped.impliedMemoryMode?.mode == mode)
            #expect(XLMParams.modes[kind] == mode)
        }
        #expect(Set(XLM.positions.map(\.mode)) == Set(MemoryMode.allCases).subtracting([.residual]))
    }
}
