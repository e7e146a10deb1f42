import Foundation
import PKMModel
import PKMTensor

/// XLM's names around the memory leaves (facebookresearch/XLM `HashingMemory`, the canonical layout's origin).
enum XLM {
    /// Where XLM puts memories: `memories.{i}_in` replaces layer i's FFN (`replace`), `memories.{i}_after` follows
    /// the layer's second LayerNorm (`after`). XLM has no name for `residual`.
    static let positions: [(kind: String, mode: MemoryMode)] = [("in", .replace), ("after", .after)]

    /// `memories.{layer}_{kind}.`
    static func container(layer: Int, kind: String) -> String { "memories.\(layer)_\(kind)." }

    /// Import: XLM's in-model memories → `encoder.layer.{i}.memory` (``KeyMapping/containerRules``), from ``positions``.
    static let containerRules: [KeyMapping.Rule] = positions.map { position in
        KeyMapping.Rule(id: "xlm-memory-\(position.kind)", pattern: #"^memories\.(\d+)_"# + position.kind + #"\.(.+)$"#,
                        template: "encoder.layer.$1.memory.$2", impliedMode: position.mode)
    }

    /// Import: XLM's query network names (``KeyMapping/leafRules``): the PKM notebook's `query_proj.0/1`, and
    /// `QueryMLP` with hidden layers, a ModuleList of one Sequential (`query_mlps.0.{j}.*`).
    static let queryAliases: [KeyMapping.Rule] = [
        KeyMapping.Rule(id: "xlm-query-proj", pattern: #"^(encoder\.layer\.\d+\.memory\.query_proj)\.([01])\.(.+)$"#, template: "$1.query_mlps.$2.$3"),
        KeyMapping.Rule(id: "xlm-query-mlp-list", pattern: #"^(encoder\.layer\.\d+\.memory\.query_proj\.query_mlps)\.0\.(\d+)\.(.+)$"#, template: "$1.$2.$3"),
    ]
}

extension PeerLayout {
    /// XLM `HashingMemory`: the canonical leaf names; with `mem_use_different_keys=False` the keys are one `[N, K/2]`
    /// shared by every head and half, broadcast to `[H, 2, N, K/2]`. Recognised by anything no other layout claims
    /// (so it is last in ``MemoryLayouts/detectionOrder``). Refused options live in its `params` (``XLMParams``).
    /// Exported with the canonical leaves under ``XLM/container(layer:kind:)``.
    static let xlm = PeerLayout(
        id: .xlm,
        library: .xlm,
        claim: { _, _ in .mine },
        leafRules: [
            LeafRule(ParameterNames.Memory.keys, ParameterNames.Memory.keys, .keysBroadcast, sourceRank: 2),
        ],
        refusals: [],
        heads: { MemoryLayouts.headsFromKeys($0) ?? MemoryLayouts.headsFromQuery($0) },
        export: Export(
            choice: .xlm,
            writes: { _ in true },
            place: { layer, mode, _ in
                guard let kind = XLM.positions.first(where: { $0.mode == mode })?.kind else {
                    return .unnamed(reason: "the memory at layer \(layer) is in \(mode.rawValue) mode, which XLM has no name for (only memories.{i}_in and memories.{i}_after)")
                }
                return .prefix(XLM.container(layer: layer, kind: kind))
            },
            // The leaves are written with canonical names and shapes, which XLM reads with mem_use_different_keys=True.
            unexpressible: { _ in [] }))
}

/// XLM training checkpoints (`{"model": state_dict, "params": {...}}`) describe their memories in
/// `params`; when the config has no `pkm` object, these options fill it in (`schemas/pkm-checkpoints.md` §2, §6).
///
/// The mapping is data: each XLM option, the `pkm` field it fills, and how its value converts.
/// `mem_enc_positions` is XLM's parsed list of `(layer, "in" | "after")`: `in` memories replace the
/// layer's FFN (`replace`), `after` memories follow the layer (`after`).
enum XLMParams {
    /// XLM option → `pkm` field, for the integer options.
    static let integerFields: [(option: String, field: String)] = [
        ("mem_n_keys", "n_keys"), ("mem_heads", "heads"), ("mem_knn", "knn"), ("mem_k_dim", "k_dim"),
    ]
    /// XLM option → `pkm` field, for the boolean options.
    static let booleanFields: [(option: String, field: String)] = [
        ("mem_query_batchnorm", "query_batchnorm"), ("mem_query_bias", "query_bias"),
    ]
    /// XLM options whose non-default values change the math in ways the model does not implement: refused.
    /// Values are rendered as JSON scalars (`false`, `"pq_fast"`).
    static let refusedOptions: [(option: String, accepted: [String], meaning: String)] = [
        ("mem_score_subtract", ["\"\""], "score subtraction (min/mean/median) is not implemented"),
        ("mem_score_normalize", ["false"], "L1 score normalisation is not implemented"),
        ("mem_multi_query_net", ["false"], "one query network per head and half is not implemented"),
        ("mem_input2d", ["false"], "convolutional (2-D) query networks are not implemented"),
        ("mem_implementation", ["\"pq_fast\"", "\"pq_default\""], "only product-key memories (pq_fast, pq_default) are implemented"),
        ("mem_shuffle_query", ["false"], "the shuffled identity query is not implemented"),
        ("mem_query_residual", ["false"], "residual query networks are not implemented"),
    ]
    /// XLM position kinds → modes.
    static let modes = Dictionary(uniqueKeysWithValues: XLM.positions.map { ($0.kind, $0.mode) })

    /// The memory config `params` (the JSON of ``TorchCheckpointReader``'s `xlm_params`) describe,
    /// and the `pkm` fields it filled, or nil when `params` describe no memory.
    /// - Throws: ``PipelineError/invalidConfig(source:underlying:)`` naming the option when present
    ///   options are malformed.
    static func memoryConfig(fromJSON json: String, hiddenSize: Int, source: String) throws -> (MemoryConfig, [String])? {
        guard JSONSyntax.depthExceeded(in: Data(json.utf8)) == nil,
              let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return nil }
        func invalid(_ option: String, _ reason: String) -> PipelineError {
            .invalidConfig(source: source, underlying: .invalidConfig(field: "params.\(option)", reason: reason))
        }
        if let useMemory = object["use_memory"] as? Bool, !useMemory { return nil }
        guard let positions = object["mem_enc_positions"] as? [Any], !positions.isEmpty else { return nil }
        var layers: [Int] = [], layerModes: [MemoryMode] = []
        for position in positions {
            guard let pair = position as? [Any], pair.count == 2, let layer = (pair[0] as? NSNumber)?.intValue,
                  let kind = pair[1] as? String, let mode = modes[kind] else {
                throw invalid("mem_enc_positions", "expected [layer, \"in\" | \"after\"] pairs, found \(position)")
            }
            layers.append(layer)
            layerModes.append(mode)
        }
        var filled = ["layers", "modes"]
        var integers: [String: Int] = [:]
        for (option, field) in integerFields {
            guard let value = object[option] else { continue }
            guard let number = value as? NSNumber, !(value is Bool), let integer = Int(exactly: number.doubleValue) else {
                throw invalid(option, "is \(value), not an integer")
            }
            integers[field] = integer
            filled.append(field)
        }
        var booleans: [String: Bool] = [:]
        for (option, field) in booleanFields {
            guard let value = object[option] else { continue }
            guard let flag = value as? Bool else { throw invalid(option, "is \(value), not a boolean") }
            booleans[field] = flag
            filled.append(field)
        }
        for (option, accepted, meaning) in refusedOptions {
            guard let value = object[option], !(value is NSNull) else { continue }
            let text = (value as? Bool).map { $0 ? "true" : "false" } ?? (value as? String).map { "\"\($0)\"" } ?? "\(value)"
            if !accepted.contains(text) { throw invalid(option, "is \(text): \(meaning)") }
        }
        var valueDimension = hiddenSize
        if let value = (object["mem_v_dim"] as? NSNumber)?.intValue, value > 0 { valueDimension = value }
        filled.append("v_dim")
        let config = MemoryConfig(layers: layers, modes: layerModes, keyCount: integers["n_keys"] ?? 512,
                                  headCount: integers["heads"] ?? 4, knn: integers["knn"] ?? 32,
                                  keyDimension: integers["k_dim"] ?? 256, valueDimension: valueDimension,
                                  queryBatchNorm: booleans["query_batchnorm"] ?? false, queryBias: booleans["query_bias"] ?? true)
        var memory = config
        // Options that change the forward math (peer-layouts.md, "XLM HashingMemory").
        if let value = object["mem_normalize_query"] {
            guard let flag = value as? Bool else { throw invalid("mem_normalize_query", "is \(value), not a boolean") }
            memory.queryNormalize = flag ? .l2 : .none
            filled.append("query_normalize")
        }
        if let value = object["mem_temperature"] {
            guard let number = value as? NSNumber, !(value is Bool), number.doubleValue > 0 else { throw invalid("mem_temperature", "is \(value), not a positive number") }
            memory.temperature = number.doubleValue
            filled.append("temperature")
        }
        if let value = object["mem_score_softmax"] {
            guard let flag = value as? Bool else { throw invalid("mem_score_softmax", "is \(value), not a boolean") }
            memory.scoreActivation = flag ? .softmax : .identity
            filled.append("score_activation")
        }
        if let value = object["mem_shuffle_indices"] {
            guard let flag = value as? Bool else { throw invalid("mem_shuffle_indices", "is \(value), not a boolean") }
            if flag { memory.slotMap = .headPermutations; filled.append("slot_map") }
        }
        if let value = object["mem_modulo_size"] {
            guard let number = value as? NSNumber, !(value is Bool), let size = Int(exactly: number.doubleValue) else { throw invalid("mem_modulo_size", "is \(value), not an integer") }
            if size != -1 {
                guard memory.slotMap == .none else { throw invalid("mem_modulo_size", "with mem_shuffle_indices is not implemented") }
                memory.slotMap = .modulo
                memory.moduloSize = size
                filled += ["slot_map", "modulo_size"]
            }
        }
        if let value = object["mem_share_values"] {
            guard let flag = value as? Bool else { throw invalid("mem_share_values", "is \(value), not a boolean") }
            if flag, layers.count > 1, let first = layers.min() { memory.sharedValues = first; filled.append("shared_values") }
        }
        if let value = object["mem_query_layer_sizes"] {
            // XLM parses "0,512,0" into [0, 512, 0]; the 0s stand for d and H·K.
            let sizes: [Int]
            if let text = value as? String {
                sizes = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            } else if let list = value as? [Any] {
                sizes = list.compactMap { ($0 as? NSNumber)?.intValue }
            } else { throw invalid("mem_query_layer_sizes", "is \(value), not a list of sizes") }
            guard sizes.count >= 2, sizes.first == 0, sizes.last == 0 else {
                throw invalid("mem_query_layer_sizes", "is \(value): expected 0,…,0 (an identity query network is not implemented)")
            }
            memory.queryLayerSizes = Array(sizes.dropFirst().dropLast())
            filled.append("query_layer_sizes")
        }
        memory.statedFields = Set(filled)
        return (memory, filled)
    }
}
