import Foundation
import PKMModel

/// XLM training checkpoints (`{"model": state_dict, "params": {...}}`) describe their memories in
/// `params`; when the config has no `pkm` object, these options fill it in (spec §2, §6).
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
    /// XLM position kinds → modes.
    static let modes: [String: MemoryMode] = ["in": .replace, "after": .after]

    /// The memory config `params` (the JSON of ``TorchCheckpointReader``'s `xlm_params`) describe,
    /// and the `pkm` fields it filled, or nil when `params` describe no memory.
    /// - Throws: ``PipelineError/invalidConfig(source:underlying:)`` naming the option when present
    ///   options are malformed.
    static func memoryConfig(fromJSON json: String, hiddenSize: Int, source: String) throws -> (MemoryConfig, [String])? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return nil }
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
        var valueDimension = hiddenSize
        if let value = (object["mem_v_dim"] as? NSNumber)?.intValue, value > 0 { valueDimension = value }
        filled.append("v_dim")
        let config = MemoryConfig(layers: layers, modes: layerModes, keyCount: integers["n_keys"] ?? 512,
                                  headCount: integers["heads"] ?? 4, knn: integers["knn"] ?? 32,
                                  keyDimension: integers["k_dim"] ?? 256, valueDimension: valueDimension,
                                  queryBatchNorm: booleans["query_batchnorm"] ?? false, queryBias: booleans["query_bias"] ?? true)
        return (config, filled)
    }
}
