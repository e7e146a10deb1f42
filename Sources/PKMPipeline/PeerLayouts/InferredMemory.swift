import Foundation
import PKMModel
import PKMTensor

/// What the weights of the memories say about the `pkm` object (used to fill and check the config).
struct InferredMemory {
    var facts: [(field: String, value: String, tensor: String, apply: (inout MemoryConfig) -> Void, stated: (MemoryConfig) -> String)] = []

    /// Fills unstated fields and reports stated ones that disagree.
    func reconcile(_ memory: inout MemoryConfig) -> (filled: [String], conflicts: [String]) {
        var filled: [String] = [], conflicts: [String] = []
        for fact in facts {
            if memory.statedFields.contains(fact.field) {
                let stated = fact.stated(memory)
                if stated != fact.value {
                    conflicts.append("config pkm.\(fact.field) is \(stated) but tensor '\(fact.tensor)' shows \(fact.value)")
                }
            } else if fact.stated(memory) != fact.value {
                fact.apply(&memory)
                filled.append(fact.field)
            }
        }
        return (filled, conflicts)
    }

    /// Reads the facts from the canonical names and shapes of the memory tensors, per layer.
    init(layers: [Int: [String: (source: String, shape: [Int])]]) {
        typealias M = ParameterNames.Memory
        guard let (_, leaves) = layers.sorted(by: { $0.key < $1.key }).first(where: { $0.value[M.keys] != nil }) else { return }
        func add(_ field: String, _ value: String, _ tensor: String, _ apply: @escaping (inout MemoryConfig) -> Void,
                 _ stated: @escaping (MemoryConfig) -> String) {
            facts.append((field, value, tensor, apply, stated))
        }
        if let keys = leaves[M.keys], keys.shape.count == 4 {
            let (h, n, k) = (keys.shape[0], keys.shape[2], 2 * keys.shape[3])
            add("heads", "\(h)", keys.source, { $0.headCount = h }, { "\($0.headCount)" })
            add("n_keys", "\(n)", keys.source, { $0.keyCount = n }, { "\($0.keyCount)" })
            add("k_dim", "\(k)", keys.source, { $0.keyDimension = k }, { "\($0.keyDimension)" })
            let owners = layers.filter { $0.value[M.values] != nil }
            if let values = owners.sorted(by: { $0.key < $1.key }).first?.value[M.values], values.shape.count == 2 {
                let v = values.shape[1], rows = values.shape[0]
                add("v_dim", "\(v)", values.source, { $0.valueDimension = v }, { "\($0.valueDimension)" })
                if rows != n * n {
                    add("slot_map", "\"modulo\"", values.source, { $0.slotMap = .modulo }, { "\"\($0.slotMap.rawValue)\"" })
                    add("modulo_size", "\(rows)", values.source, { $0.moduloSize = rows }, { $0.moduloSize.map(String.init) ?? "absent" })
                }
            }
            if owners.count == 1, layers.count > 1, let owner = owners.first?.key, let source = owners.first?.value[M.values]?.source {
                add("shared_values", "\(owner)", source, { $0.sharedValues = owner }, { $0.sharedValues.map(String.init) ?? "absent" })
            }
        }
        if let permutations = leaves[M.headPermutations] {
            add("slot_map", "\"head_permutations\"", permutations.source, { $0.slotMap = .headPermutations }, { "\"\($0.slotMap.rawValue)\"" })
        }
        // Query network: linears at query_mlps.{0, 2|3, …}; a batchnorm follows a linear when the next index has running stats.
        var widths: [Int] = [], index = 0, batchNorm = false, bias = false, firstQuery = ""
        while let linear = leaves[M.queryModule(index) + ".weight"], linear.shape.count == 2 {
            if widths.isEmpty { firstQuery = linear.source; bias = leaves[M.queryModule(index) + ".bias"] != nil }
            widths.append(linear.shape[0])
            if leaves[M.queryModule(index + 1) + ".running_mean"] != nil { batchNorm = true; index += 3 } else { index += 2 }
        }
        if !widths.isEmpty {
            let hidden = Array(widths.dropLast())
            add("query_layer_sizes", "\(hidden)", firstQuery, { $0.queryLayerSizes = hidden }, { "\($0.queryLayerSizes)" })
            add("query_bias", "\(bias)", firstQuery, { $0.queryBias = bias }, { "\($0.queryBias)" })
            let norm: QueryNorm = batchNorm ? .batchnorm : (leaves[M.queryNorm + ".weight"] != nil ? .layernorm : .none)
            add("query_norm", "\"\(norm.rawValue)\"", firstQuery, { $0.queryNorm = norm }, { "\"\($0.queryNorm.rawValue)\"" })
        }
        let input = leaves[M.inputNorm + ".weight"], output = leaves[M.outputNorm + ".weight"]
        let anchor = leaves[M.keys]?.source ?? ""
        let hasInput = input != nil, hasOutput = output != nil
        add("input_norm", "\(hasInput)", input?.source ?? anchor, { $0.inputNorm = hasInput }, { "\($0.inputNorm)" })
        add("output_norm", "\(hasOutput)", output?.source ?? anchor, { $0.outputNorm = hasOutput }, { "\($0.outputNorm)" })
        let swiglu = leaves[M.swigluProjection + ".weight"], linear = leaves[M.valueProjection + ".weight"]
        let projection: ValueProjection = swiglu != nil ? .swiglu : (linear != nil ? .linear : .none)
        add("value_projection", "\"\(projection.rawValue)\"", linear?.source ?? anchor, { $0.valueProjection = projection },
            { "\"\($0.valueProjection.rawValue)\"" })
        let gating = leaves[M.gating + ".weight"]
        let gate: OutputGate = gating != nil ? .sigmoid : .none
        add("output_gate", "\"\(gate.rawValue)\"", gating?.source ?? anchor, { $0.outputGate = gate }, { "\"\($0.outputGate.rawValue)\"" })
    }
}
