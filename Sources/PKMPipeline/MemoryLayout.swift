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

/// How a source tensor's bytes become the canonical tensor (a pure re-ordering; values are never changed).
public enum LayoutTransform: String, Sendable, Codable {
    /// Rows in lucidrains' (half p, head h, dim) order → canonical (head, half, dim); for `[H·K, in]` and `[H·K]`.
    case halfHeadRows = "rows (half, head, dim) -> (head, half, dim)"
    /// `[H, N, 2, D]` → `[H, 2, N, D]` (`keys.permute(0, 2, 1, 3)`).
    case keysSwapKeyHalf = "keys [H, N, 2, D] -> [H, 2, N, D]"
    /// `[2·H·N, D]` → `[H, 2, N, D]`, same bytes (Meta).
    case keysReshape = "keys [2HN, D] -> [H, 2, N, D] (reshape)"
    /// `[N, D]` shared by heads and halves → `[H, 2, N, D]` (XLM `mem_use_different_keys=False`).
    case keysBroadcast = "keys [N, D] -> [H, 2, N, D] (broadcast)"
    /// Export: canonical (head, half, dim) rows → lucidrains' (half, head, dim).
    case headHalfRows = "rows (head, half, dim) -> (half, head, dim)"
    /// Export: canonical `[H, 2, N, D]` → lucidrains' `[H, N, 2, D]`.
    case keysToLucidrains = "keys [H, 2, N, D] -> [H, N, 2, D]"

    /// Applies the transform; `heads` is H, `canonicalShape` the result's shape.
    /// - Throws: ``TensorError`` when the element count disagrees (a corrupt shape).
    func apply(to tensor: Tensor, heads: Int, canonicalShape: [Int]) throws -> Tensor {
        let size = tensor.dtype.byteSize
        let bytes = tensor.storage
        var out = Data(count: (ShapeMath.elementCount(canonicalShape) ?? 0) * size)
        switch self {
        case .keysReshape:
            out = bytes
        case .keysBroadcast:
            out = Data()
            for _ in 0..<(2 * heads) { out.append(bytes) }
        case .halfHeadRows:
            let rows = tensor.shape[0], rowBytes = rows > 0 ? bytes.count / rows : 0, d = rows / (2 * heads)
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for h in 0..<heads { for p in 0..<2 {
                        let canonical = (h * 2 + p) * d, original = (p * heads + h) * d
                        target.baseAddress!.advanced(by: canonical * rowBytes)
                            .copyMemory(from: source.baseAddress!.advanced(by: original * rowBytes), byteCount: d * rowBytes)
                    } }
                }
            }
        case .headHalfRows:
            let rows = tensor.shape[0], rowBytes = rows > 0 ? bytes.count / rows : 0, d = rows / (2 * heads)
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for h in 0..<heads { for p in 0..<2 {
                        let canonical = (h * 2 + p) * d, lucidrains = (p * heads + h) * d
                        target.baseAddress!.advanced(by: lucidrains * rowBytes)
                            .copyMemory(from: source.baseAddress!.advanced(by: canonical * rowBytes), byteCount: d * rowBytes)
                    } }
                }
            }
        case .keysToLucidrains:
            let (h, n, d) = (tensor.shape[0], tensor.shape[2], tensor.shape[3]), chunk = d * size
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for head in 0..<h { for key in 0..<n { for p in 0..<2 {
                        target.baseAddress!.advanced(by: ((head * n + key) * 2 + p) * chunk)
                            .copyMemory(from: source.baseAddress!.advanced(by: ((head * 2 + p) * n + key) * chunk), byteCount: chunk)
                    } } }
                }
            }
        case .keysSwapKeyHalf:
            let (h, n, d) = (tensor.shape[0], tensor.shape[1], tensor.shape[3]), chunk = d * size
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for head in 0..<h { for key in 0..<n { for p in 0..<2 {
                        target.baseAddress!.advanced(by: ((head * 2 + p) * n + key) * chunk)
                            .copyMemory(from: source.baseAddress!.advanced(by: ((head * n + key) * 2 + p) * chunk), byteCount: chunk)
                    } } }
                }
            }
        }
        return try Tensor(dtype: tensor.dtype, shape: canonicalShape, storage: out)
    }
}

/// The per-layout tables: source leaf (under the memory's prefix) → canonical leaf and transform.
/// Leaves a layout does not list keep their names (and are reported unexpected if the model does not read them).
public enum MemoryLayouts {
    /// One renaming of a memory leaf.
    public struct LeafRule: Sendable {
        public let source: String
        public let canonical: String
        public let transform: LayoutTransform?
    }

    static func rule(_ source: String, _ canonical: String, _ transform: LayoutTransform? = nil) -> LeafRule {
        LeafRule(source: source, canonical: canonical, transform: transform)
    }

    /// Leaf rules per detected layout.
    public static let leafRules: [DetectedMemoryLayout: [LeafRule]] = [
        .lucidrains: [
            rule("to_queries.weight", "query_proj.query_mlps.0.weight", .halfHeadRows),
            rule("norm.weight", "query_norm.weight"), rule("norm.bias", "query_norm.bias"),
            rule("keys", "keys", .keysSwapKeyHalf),
            rule("pre_layernorm.weight", "input_norm.weight"), rule("pre_layernorm.bias", "input_norm.bias"),
        ],
        .lucidrainsBatchNorm: [
            rule("to_queries.weight", "query_proj.query_mlps.0.weight", .halfHeadRows),
            rule("norm.fn.weight", "query_proj.query_mlps.1.weight", .halfHeadRows),
            rule("norm.fn.bias", "query_proj.query_mlps.1.bias", .halfHeadRows),
            rule("norm.fn.running_mean", "query_proj.query_mlps.1.running_mean", .halfHeadRows),
            rule("norm.fn.running_var", "query_proj.query_mlps.1.running_var", .halfHeadRows),
            rule("norm.fn.num_batches_tracked", "query_proj.query_mlps.1.num_batches_tracked"),
            rule("keys", "keys", .keysSwapKeyHalf),
        ],
        // Meta's and XLM's rank-2 keys are handled by ``keysRule(layout:)``: canonical rank-4 keys need nothing.
        .lingua: [],
        .xlm: [],
    ]

    /// The rule for rank-2 keys: Meta's `[2·H·N, D]` (a reshape) or XLM's shared `[N, D]` (a broadcast).
    static func keysRule(layout: DetectedMemoryLayout) -> LeafRule? {
        switch layout {
        case .lingua: return rule("keys", "keys", .keysReshape)
        case .xlm: return rule("keys", "keys", .keysBroadcast)
        case .lucidrains, .lucidrainsBatchNorm: return nil
        }
    }

    /// Memories pkm-convert refuses, recognised by a leaf, with the reason.
    public static let refusals: [(leafPrefix: String, reason: String)] = [
        ("maybe_concat_combine.", "lucidrains concat_values_and_combine is not supported: upstream it ignores the selection weights, so the memory is not a weighted product-key read"),
        ("weight_down_embed", "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        ("weight_up_embed", "a PEER (parameter-efficient expert retrieval) layer is not a product-key memory of values; it is not supported"),
        ("fast_weight", "fast-weight product-key memories update their values at inference; they are not supported"),
        ("norm.gamma", "lucidrains EvoNorm query normalisation (< 0.1.0 `use_evonorm`) is not supported"),
    ]

    /// The layout of one memory, from its leaves (name → source shape).
    /// - Throws: ``PipelineError/unsupportedMemory(layer:reason:)`` for refused layouts.
    static func detect(layer: Int, leaves: [String: [Int]], choice: MemoryLayoutChoice) throws -> DetectedMemoryLayout {
        for (prefix, reason) in refusals where leaves.keys.contains(where: { $0.hasPrefix(prefix) }) {
            throw PipelineError.unsupportedMemory(layer: layer, reason: reason)
        }
        let lucidrainsNames = leaves["to_queries.weight"] != nil
        func lucidrainsKind() throws -> DetectedMemoryLayout {
            guard let mean = leaves["norm.fn.running_mean"] else { return .lucidrains }
            if let queries = leaves["to_queries.weight"], mean == [queries[0]] { return .lucidrainsBatchNorm }
            throw PipelineError.unsupportedMemory(layer: layer, reason: "lucidrains 0.2.x BatchNorm queries (norm.fn.running_mean \(mean), per half-query) are broken upstream and not supported; use use_layernorm=True")
        }
        switch choice {
        case .lucidrains: return try lucidrainsKind()
        case .lingua: return .lingua
        case .xlm: return .xlm
        case .auto:
            if lucidrainsNames { return try lucidrainsKind() }
            let metaNames = ["swilu_projection.weight", "value_proj.weight", "gating.weight"]
            if metaNames.contains(where: { leaves[$0] != nil }) { return .lingua }
            if let keys = leaves["keys"], keys.count == 2, let values = leaves["values.weight"], values.count == 2 {
                // [N, D] with N² value rows is XLM's shared keys; otherwise Meta's [2·H·N, D].
                if keys[0] * keys[0] != values[0], let rows = queryRows(leaves), keys[1] > 0, rows % (2 * keys[1]) == 0 {
                    let heads = rows / (2 * keys[1])
                    if keys[0] % (2 * heads) == 0, (keys[0] / (2 * heads)) * (keys[0] / (2 * heads)) == values[0] { return .lingua }
                }
            }
            return .xlm
        }
    }

    /// Output width of the last linear of a canonical-named query network (H·K).
    static func queryRows(_ leaves: [String: [Int]]) -> Int? {
        var index = 0, rows: Int?
        while index < 64 {
            if let shape = leaves["query_proj.query_mlps.\(index).weight"], shape.count == 2 { rows = shape[0] }
            index += 1
        }
        return rows
    }

    /// H for the transforms of one memory: from lucidrains keys `[H, N, 2, D]`, or from the query width / K.
    static func heads(layout: DetectedMemoryLayout, leaves: [String: [Int]]) -> Int? {
        guard let keys = leaves["keys"] else { return nil }
        switch layout {
        case .lucidrains, .lucidrainsBatchNorm:
            return keys.count == 4 ? keys[0] : nil
        case .xlm, .lingua:
            if keys.count == 4 { return keys[0] }
            guard keys.count == 2, keys[1] > 0, let rows = queryRows(leaves), rows % (2 * keys[1]) == 0 else { return nil }
            return rows / (2 * keys[1])
        }
    }

    /// The canonical shape of `leaf` after `transform` (nil when the source shape does not fit it).
    static func canonicalShape(_ shape: [Int], transform: LayoutTransform?, heads: Int) -> [Int]? {
        guard let transform else { return shape }
        switch transform {
        case .halfHeadRows:
            return shape.first.map { $0 % (2 * heads) == 0 ? shape : [] }.flatMap { $0.isEmpty ? nil : $0 }
        case .keysSwapKeyHalf:
            return shape.count == 4 && shape[2] == 2 ? [shape[0], 2, shape[1], shape[3]] : nil
        case .keysReshape:
            guard shape.count == 2, shape[0] % (2 * heads) == 0 else { return nil }
            return [heads, 2, shape[0] / (2 * heads), shape[1]]
        case .keysBroadcast:
            return shape.count == 2 ? [heads, 2, shape[0], shape[1]] : nil
        case .headHalfRows:
            return shape
        case .keysToLucidrains:
            return shape.count == 4 && shape[1] == 2 ? [shape[0], shape[2], 2, shape[3]] : nil
        }
    }
}

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
        guard let (_, leaves) = layers.sorted(by: { $0.key < $1.key }).first(where: { $0.value["keys"] != nil }) else { return }
        func add(_ field: String, _ value: String, _ tensor: String, _ apply: @escaping (inout MemoryConfig) -> Void,
                 _ stated: @escaping (MemoryConfig) -> String) {
            facts.append((field, value, tensor, apply, stated))
        }
        if let keys = leaves["keys"], keys.shape.count == 4 {
            let (h, n, k) = (keys.shape[0], keys.shape[2], 2 * keys.shape[3])
            add("heads", "\(h)", keys.source, { $0.headCount = h }, { "\($0.headCount)" })
            add("n_keys", "\(n)", keys.source, { $0.keyCount = n }, { "\($0.keyCount)" })
            add("k_dim", "\(k)", keys.source, { $0.keyDimension = k }, { "\($0.keyDimension)" })
            let owners = layers.filter { $0.value["values.weight"] != nil }
            if let values = owners.sorted(by: { $0.key < $1.key }).first?.value["values.weight"], values.shape.count == 2 {
                let v = values.shape[1], rows = values.shape[0]
                add("v_dim", "\(v)", values.source, { $0.valueDimension = v }, { "\($0.valueDimension)" })
                if rows != n * n {
                    add("slot_map", "\"modulo\"", values.source, { $0.slotMap = .modulo }, { "\"\($0.slotMap.rawValue)\"" })
                    add("modulo_size", "\(rows)", values.source, { $0.moduloSize = rows }, { $0.moduloSize.map(String.init) ?? "absent" })
                }
            }
            if owners.count == 1, layers.count > 1, let owner = owners.first?.key, let source = owners.first?.value["values.weight"]?.source {
                add("shared_values", "\(owner)", source, { $0.sharedValues = owner }, { $0.sharedValues.map(String.init) ?? "absent" })
            }
        }
        if let permutations = leaves["head_permutations"] {
            add("slot_map", "\"head_permutations\"", permutations.source, { $0.slotMap = .headPermutations }, { "\"\($0.slotMap.rawValue)\"" })
        }
        // Query network: linears at query_mlps.{0, 2|3, …}; a batchnorm follows a linear when the next index has running stats.
        var widths: [Int] = [], index = 0, batchNorm = false, bias = false, firstQuery = ""
        while let linear = leaves["query_proj.query_mlps.\(index).weight"], linear.shape.count == 2 {
            if widths.isEmpty { firstQuery = linear.source; bias = leaves["query_proj.query_mlps.\(index).bias"] != nil }
            widths.append(linear.shape[0])
            if leaves["query_proj.query_mlps.\(index + 1).running_mean"] != nil { batchNorm = true; index += 3 } else { index += 2 }
        }
        if !widths.isEmpty {
            let hidden = Array(widths.dropLast())
            add("query_layer_sizes", "\(hidden)", firstQuery, { $0.queryLayerSizes = hidden }, { "\($0.queryLayerSizes)" })
            add("query_bias", "\(bias)", firstQuery, { $0.queryBias = bias }, { "\($0.queryBias)" })
            let norm: QueryNorm = batchNorm ? .batchnorm : (leaves["query_norm.weight"] != nil ? .layernorm : .none)
            add("query_norm", "\"\(norm.rawValue)\"", firstQuery, { $0.queryNorm = norm }, { "\"\($0.queryNorm.rawValue)\"" })
        }
        let input = leaves["input_norm.weight"] != nil, output = leaves["output_norm.weight"] != nil
        let anchor = leaves["keys"]?.source ?? ""
        add("input_norm", "\(input)", leaves["input_norm.weight"]?.source ?? anchor, { $0.inputNorm = input }, { "\($0.inputNorm)" })
        add("output_norm", "\(output)", leaves["output_norm.weight"]?.source ?? anchor, { $0.outputNorm = output }, { "\($0.outputNorm)" })
        let projection: ValueProjection = leaves["swilu_projection.weight"] != nil ? .swiglu : (leaves["value_proj.weight"] != nil ? .linear : .none)
        add("value_projection", "\"\(projection.rawValue)\"", leaves["value_proj.weight"]?.source ?? anchor, { $0.valueProjection = projection },
            { "\"\($0.valueProjection.rawValue)\"" })
        let gate: OutputGate = leaves["gating.weight"] != nil ? .sigmoid : .none
        add("output_gate", "\"\(gate.rawValue)\"", leaves["gating.weight"]?.source ?? anchor, { $0.outputGate = gate }, { "\"\($0.outputGate.rawValue)\"" })
    }
}
