import Foundation
import PKMTensor

/// How a memory layer attaches to an encoder layer (`schemas/pkm-checkpoints.md` §3).
public enum MemoryMode: String, Sendable, Codable, CaseIterable {
    /// The memory replaces the feed-forward block: `y = LN_out(a + M(a))`.
    case replace
    /// The memory sits beside the feed-forward block (the paper's ResM): `y = LN_out(a + FFN(a) + M(a))`.
    case residual
    /// XLM's `i+` placement: `y = LN_out(a + FFN(a))`, then `y = y + M(y)`.
    case after
}

/// How the memory normalises its queries before scoring (`schemas/pkm-checkpoints.md` §3 step 1).
public enum QueryNorm: String, Sendable, Codable, CaseIterable {
    /// No normalisation.
    case none
    /// Eval-mode BatchNorm1d over the whole `[H·K]` query (`query_mlps.{last}.{weight,bias,running_mean,running_var}`).
    case batchnorm
    /// LayerNorm of every half-query (width K/2) separately, one γ/β `[K/2]` shared by all heads and
    /// halves (`query_norm.{weight,bias}`; lucidrains 0.2+ `norm`).
    case layernorm
}

/// What turns the k selected scores of a head into the weights of its value rows (`schemas/pkm-checkpoints.md` §3 step 7).
public enum ScoreActivation: String, Sendable, Codable, CaseIterable {
    /// Float32 softmax over the k scores (the default).
    case softmax
    /// ReLU of each score, not normalised (lucidrains `non_competitive_gates`).
    case relu
    /// The scores themselves (XLM `mem_score_softmax=False`).
    case identity
}

/// Optional rescaling of each half-query before scoring.
public enum QueryNormalize: String, Sendable, Codable, CaseIterable {
    case none
    /// Each half divided by its L2 norm (XLM `mem_normalize_query`; no epsilon, as XLM).
    case l2
}

/// What maps the memory's read-out (width V) to the model width d.
public enum ValueProjection: String, Sendable, Codable, CaseIterable {
    /// None: V must equal d.
    case none
    /// `value_proj(m)` with `value_proj.{weight,bias}` `[d, V]`, `[d]`.
    case linear
    /// Meta's Memory+: `value_proj(m ⊙ silu(swilu_projection(x)))`, `swilu_projection.{weight,bias}` `[V, d]`, `[V]`.
    case swiglu
}

/// An optional gate on the memory's output.
public enum OutputGate: String, Sendable, Codable, CaseIterable {
    case none
    /// The output times `sigmoid(gating(x))`, `gating.{weight,bias}` `[1, d]`, `[1]` (Meta `mem_gated`).
    case sigmoid
}

/// How a selected product-key slot becomes the value row actually read (`schemas/pkm-checkpoints.md` §3 step 8).
public enum SlotMap: String, Sendable, Codable, CaseIterable {
    /// Slot s reads row s.
    case none
    /// Row `head_permutations[h][s]` (XLM `mem_shuffle_indices`; int64 buffer `[H, N²]`).
    case headPermutations = "head_permutations"
    /// Row `s mod modulo_size` (XLM `mem_modulo_size`; values then hold `modulo_size` rows).
    case modulo
}

/// Product-key memory hyper-parameters (the config's `pkm` object, `schemas/pkm-checkpoints.md` §2).
///
/// Fields added for the peer layouts (`query_norm`, `score_activation`, …) default to values that
/// reproduce the original XLM math, so a config without them means what it always meant. The
/// sizes (`n_keys`, `heads`, `k_dim`, `v_dim`) and the layout facts the weights show may be absent
/// from a config: they are then 0 / nil here (``isComplete`` is false) until the checkpoint's
/// tensors fill them in (PKMPipeline's `MemoryLayout`).
public struct MemoryConfig: Sendable, Codable, Equatable {
    /// Encoder layer indices that carry a memory.
    public var layers: [Int]
    /// One mode per entry of `layers`.
    public var modes: [MemoryMode]
    /// Sub-keys per half, N (the memory has N² slots). 0 when the config leaves it to the weights.
    public var keyCount: Int
    /// Memory heads, H. 0 when the config leaves it to the weights.
    public var headCount: Int
    /// Slots selected per head, k (not recoverable from weights).
    public var knn: Int
    /// Query width per head, K (even). 0 when the config leaves it to the weights.
    public var keyDimension: Int
    /// Value width, V (must equal the hidden size unless a value projection maps it). 0 when unknown.
    public var valueDimension: Int
    /// Query normalisation.
    public var queryNorm: QueryNorm
    /// Whether the query linear(s) have a bias.
    public var queryBias: Bool
    /// BatchNorm epsilon.
    public var batchNormEpsilon: Double
    /// Epsilon of the memory's own LayerNorms (query layernorm, input and output norms); PyTorch's default 1e-5.
    public var layerNormEpsilon: Double
    /// Hidden widths of the query MLP between d and H·K (XLM `mem_query_layer_sizes` without its
    /// leading and trailing 0); ReLU after every linear but the last. Empty: one linear.
    public var queryLayerSizes: [Int]
    /// Per-half query rescaling.
    public var queryNormalize: QueryNormalize
    /// LayerNorm of the input before the query network only (`input_norm.{weight,bias}` `[d]`; lucidrains `pre_layernorm`).
    public var inputNorm: Bool
    /// LayerNorm of the memory's output (`output_norm.{weight,bias}` `[d]`; lucidrains `norm_output`).
    public var outputNorm: Bool
    /// Score → weight activation.
    public var scoreActivation: ScoreActivation
    /// Scores are divided by this before the activation (XLM `mem_temperature`).
    public var temperature: Double
    /// Read-out → model width.
    public var valueProjection: ValueProjection
    /// Output gate.
    public var outputGate: OutputGate
    /// When set, every memory reads the value table of this layer's memory, and only that memory
    /// stores `values.weight` (XLM / Meta `mem_share_values`).
    public var sharedValues: Int?
    /// Slot → value row.
    public var slotMap: SlotMap
    /// Value rows under ``SlotMap/modulo``.
    public var moduloSize: Int?

    public init(layers: [Int], modes: [MemoryMode], keyCount: Int = 512, headCount: Int = 4, knn: Int = 32,
                keyDimension: Int = 256, valueDimension: Int, queryBatchNorm: Bool = true, queryBias: Bool = true,
                batchNormEpsilon: Double = 1e-5) {
        self.layers = layers
        self.modes = modes
        self.keyCount = keyCount
        self.headCount = headCount
        self.knn = knn
        self.keyDimension = keyDimension
        self.valueDimension = valueDimension
        self.queryNorm = queryBatchNorm ? .batchnorm : .none
        self.queryBias = queryBias
        self.batchNormEpsilon = batchNormEpsilon
        layerNormEpsilon = 1e-5
        queryLayerSizes = []
        queryNormalize = .none
        inputNorm = false
        outputNorm = false
        scoreActivation = .softmax
        temperature = 1
        valueProjection = .none
        outputGate = .none
        sharedValues = nil
        slotMap = .none
        moduloSize = nil
    }

    /// The `pkm` fields a config stated explicitly (the others were defaulted or left to the weights).
    /// Not part of equality or the encoding.
    public var statedFields: Set<String> {
        get { stated.names }
        set { stated.names = newValue }
    }

    /// A set of field names that every other set equals, so what a config stated never makes two memories differ
    /// (equality is synthesized over the fields that change the math).
    struct StatedFields: Sendable, Equatable {
        var names: Set<String> = []
        static func == (_: StatedFields, _: StatedFields) -> Bool { true }
    }
    private var stated = StatedFields()

    /// The `pkm` object's fields as data: each JSON key, once, with the property it sets. Decoding starts from the
    /// defaults of ``init(layers:modes:keyCount:headCount:knn:keyDimension:valueDimension:queryBatchNorm:queryBias:batchNormEpsilon:)``
    /// (sizes 0: left to the weights) and sets what the config states; encoding writes every field. A new knob is its
    /// property, its default, and one line here.
    static var fields: [Field] {
        [.value(\.keyCount, "n_keys"), .value(\.headCount, "heads"), .value(\.knn, "knn", required: true),
         .value(\.keyDimension, "k_dim"), .value(\.valueDimension, "v_dim"), .queryNorm,
         .value(\.queryBias, "query_bias"), .value(\.batchNormEpsilon, "bn_eps"), .value(\.layerNormEpsilon, "norm_eps"),
         .value(\.queryLayerSizes, "query_layer_sizes"), .value(\.queryNormalize, "query_normalize"),
         .value(\.inputNorm, "input_norm"), .value(\.outputNorm, "output_norm"), .value(\.scoreActivation, "score_activation"),
         .value(\.temperature, "temperature"), .value(\.valueProjection, "value_projection"), .value(\.outputGate, "output_gate"),
         .optional(\.sharedValues, "shared_values"), .value(\.slotMap, "slot_map"), .optional(\.moduloSize, "modulo_size")]
    }

    /// A JSON key of the `pkm` object.
    struct FieldKey: CodingKey {
        let stringValue: String
        init(_ key: String) { stringValue = key }
        init?(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    /// How one field is read from and written to the `pkm` object.
    struct Field {
        let key: String
        let decode: (inout MemoryConfig, KeyedDecodingContainer<FieldKey>) throws -> Void
        let encode: (MemoryConfig, inout KeyedEncodingContainer<FieldKey>) throws -> Void

        /// A field always written; read when present (or required).
        static func value<V: Codable>(_ path: WritableKeyPath<MemoryConfig, V>, _ key: String, required: Bool = false) -> Field {
            Field(key: key, decode: { memory, container in
                if required || container.contains(FieldKey(key)) { memory[keyPath: path] = try container.decode(V.self, forKey: FieldKey(key)) }
            }, encode: { memory, container in try container.encode(memory[keyPath: path], forKey: FieldKey(key)) })
        }

        /// A field written only when set.
        static func optional<V: Codable>(_ path: WritableKeyPath<MemoryConfig, V?>, _ key: String) -> Field {
            Field(key: key, decode: { memory, container in
                memory[keyPath: path] = try container.decodeIfPresent(V.self, forKey: FieldKey(key))
            }, encode: { memory, container in try container.encodeIfPresent(memory[keyPath: path], forKey: FieldKey(key)) })
        }

        /// `query_norm`, and the legacy `query_batchnorm` it replaced: both read (they must agree), both written
        /// (`query_batchnorm` for readers that predate `query_norm`).
        static var queryNorm: Field {
            Field(key: "query_norm", decode: { memory, container in
                let legacy = try container.decodeIfPresent(Bool.self, forKey: FieldKey("query_batchnorm"))
                if let norm = try container.decodeIfPresent(QueryNorm.self, forKey: FieldKey("query_norm")) {
                    if let legacy, legacy != (norm == .batchnorm) {
                        throw ModelError.invalidConfig(field: "pkm.query_batchnorm", reason: "is \(legacy) but pkm.query_norm is \"\(norm.rawValue)\"")
                    }
                    memory.queryNorm = norm
                } else if let legacy {
                    memory.queryNorm = legacy ? .batchnorm : .none
                }
                if legacy != nil { memory.statedFields.insert("query_norm") }
            }, encode: { memory, container in
                try container.encode(memory.queryNorm == .batchnorm, forKey: FieldKey("query_batchnorm"))
                try container.encode(memory.queryNorm, forKey: FieldKey("query_norm"))
            })
        }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: FieldKey.self)
        let layers = try container.decode([Int].self, forKey: FieldKey("layers"))
        // A single mode string applies to every layer.
        let modes: [MemoryMode]
        if let single = try? container.decode(MemoryMode.self, forKey: FieldKey("modes")) {
            modes = Array(repeating: single, count: layers.count)
        } else {
            modes = try container.decode([MemoryMode].self, forKey: FieldKey("modes"))
        }
        // Sizes the weights show may be left out: 0 until the checkpoint's tensors fill them in.
        self.init(layers: layers, modes: modes, keyCount: 0, headCount: 0, keyDimension: 0, valueDimension: 0)
        for field in Self.fields { try field.decode(&self, container) }
        statedFields.formUnion(container.allKeys.map(\.stringValue))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: FieldKey.self)
        try container.encode(layers, forKey: FieldKey("layers"))
        try container.encode(modes, forKey: FieldKey("modes"))
        for field in Self.fields { try field.encode(self, &container) }
    }

    /// Whether the query network ends in a BatchNorm1d (``queryNorm`` is ``QueryNorm/batchnorm``).
    public var queryBatchNorm: Bool {
        get { queryNorm == .batchnorm }
        set { queryNorm = newValue ? .batchnorm : (queryNorm == .batchnorm ? .none : queryNorm) }
    }

    /// Whether every size is known (a config may leave them to the checkpoint's tensors).
    public var isComplete: Bool { keyCount > 0 && headCount > 0 && keyDimension > 0 && valueDimension > 0 }

    /// The mode of the memory at `layer`, if it has one.
    public func mode(ofLayer layer: Int) -> MemoryMode? {
        guard let position = layers.firstIndex(of: layer), position < modes.count else { return nil }
        return modes[position]
    }

    /// Total slots, N².
    public var slotCount: Int { keyCount * keyCount }

    /// Rows of the value table: N², or ``moduloSize`` under ``SlotMap/modulo``.
    public var valueRowCount: Int { slotMap == .modulo ? (moduloSize ?? 0) : slotCount }

    /// The layer whose memory stores the values the memory at `layer` reads.
    public func valueOwner(ofLayer layer: Int) -> Int { sharedValues ?? layer }

    /// Widths of the query network's linears, input first: `[d, hidden…, H·K]`.
    public func queryWidths(inputWidth: Int) -> [Int] { [inputWidth] + queryLayerSizes + [headCount * keyDimension] }

    /// Index of the j-th linear of the query network inside `query_proj.query_mlps` (XLM's
    /// `mlp()`: Linear, [BatchNorm1d], ReLU between linears; batchnorm follows every linear).
    public func queryLinearIndex(_ j: Int) -> Int { j * (queryNorm == .batchnorm ? 3 : 2) }
}

/// The architecture of a BERT or RoBERTa model, optionally with product-key memories.
///
/// Decodes a Hugging Face `config.json` (`schemas/pkm-checkpoints.md` §2); unknown fields are ignored.
public struct ModelConfig: Sendable, Codable, Equatable {
    /// Model family.
    public enum ModelType: String, Sendable, Codable { case bert, roberta }

    public var modelType: ModelType
    public var vocabSize: Int
    public var hiddenSize: Int
    public var layerCount: Int
    public var attentionHeadCount: Int
    public var intermediateSize: Int
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var layerNormEpsilon: Double
    public var padTokenId: Int
    public var hiddenActivation: String
    /// The memory layers, if any.
    public var memory: MemoryConfig?
    /// The task head on the encoder (`schemas/pkm-checkpoints.md` §3b), nil for a bare encoder. Decoded from the first
    /// entry of `architectures` when it names a class this model runs; otherwise PKMPipeline infers it from the
    /// checkpoint's tensor names.
    public var head: HeadKind?
    /// `architectures` as the config states it (nil when absent).
    public var statedArchitectures: [String]?
    /// Classification labels: `num_labels`, else the size of `id2label`; nil when the config states neither (then
    /// the classifier's weights tell).
    public var labelCount: Int?
    /// `id2label` ordered by id, when the config has it.
    public var labelNames: [String]?
    /// `problem_type`, when stated.
    public var problemType: ProblemType?
    /// `tie_word_embeddings` (default true): the masked-LM decoder reads the word embeddings, whatever decoder weight
    /// the checkpoint holds (as transformers ties them on load).
    public var tieWordEmbeddings: Bool = true

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", vocabSize = "vocab_size", hiddenSize = "hidden_size", layerCount = "num_hidden_layers"
        case attentionHeadCount = "num_attention_heads", intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings", typeVocabSize = "type_vocab_size"
        case layerNormEpsilon = "layer_norm_eps", padTokenId = "pad_token_id", hiddenActivation = "hidden_act", memory = "pkm"
        case architectures, labelCount = "num_labels", id2label, label2id, problemType = "problem_type"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    public init(modelType: ModelType, vocabSize: Int, hiddenSize: Int, layerCount: Int, attentionHeadCount: Int,
                intermediateSize: Int, maxPositionEmbeddings: Int, typeVocabSize: Int, layerNormEpsilon: Double = 1e-12,
                padTokenId: Int = 0, hiddenActivation: String = "gelu", memory: MemoryConfig? = nil) {
        self.modelType = modelType
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.attentionHeadCount = attentionHeadCount
        self.intermediateSize = intermediateSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        self.layerNormEpsilon = layerNormEpsilon
        self.padTokenId = padTokenId
        self.hiddenActivation = hiddenActivation
        self.memory = memory
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let typeName = try container.decodeIfPresent(String.self, forKey: .modelType) ?? "bert"
        guard let type = ModelType(rawValue: typeName) else {
            throw ModelError.invalidConfig(field: "model_type", reason: "'\(typeName)' is not supported (bert or roberta)")
        }
        modelType = type
        vocabSize = try container.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try container.decode(Int.self, forKey: .hiddenSize)
        layerCount = try container.decode(Int.self, forKey: .layerCount)
        attentionHeadCount = try container.decode(Int.self, forKey: .attentionHeadCount)
        intermediateSize = try container.decode(Int.self, forKey: .intermediateSize)
        maxPositionEmbeddings = try container.decode(Int.self, forKey: .maxPositionEmbeddings)
        typeVocabSize = try container.decodeIfPresent(Int.self, forKey: .typeVocabSize) ?? 2
        layerNormEpsilon = try container.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-12
        padTokenId = try container.decodeIfPresent(Int.self, forKey: .padTokenId) ?? (type == .roberta ? 1 : 0)
        hiddenActivation = try container.decodeIfPresent(String.self, forKey: .hiddenActivation) ?? "gelu"
        memory = try container.decodeIfPresent(MemoryConfig.self, forKey: .memory)
        try Self.checkMathFields(try decoder.container(keyedBy: FieldKey.self))
        try decodeHead(container)
    }

    /// Reads `architectures`, `num_labels`, `id2label`, `problem_type` and `tie_word_embeddings`
    /// (`schemas/pkm-checkpoints.md` §2).
    private mutating func decodeHead(_ container: KeyedDecodingContainer<CodingKeys>) throws {
        statedArchitectures = try container.decodeIfPresent([String].self, forKey: .architectures)
        if let first = statedArchitectures?.first, let (type, head) = Self.architecture(named: first) {
            guard type == modelType else {
                throw ModelError.invalidConfig(field: "architectures", reason: "names \(first), a \(type.rawValue) class, but model_type is \(modelType.rawValue)")
            }
            self.head = head
        }
        if let table = try container.decodeIfPresent([String: String].self, forKey: .id2label) {
            var names = [String](repeating: "", count: table.count)
            for (key, name) in table {
                guard let id = Int(key), id >= 0, id < table.count else {
                    throw ModelError.invalidConfig(field: "id2label", reason: "has key '\(key)'; its keys must be the label ids 0..<\(table.count)")
                }
                names[id] = name
            }
            labelNames = names
        }
        let stated = try container.decodeIfPresent(Int.self, forKey: .labelCount)
        if let stated, let labelNames, stated != labelNames.count {
            throw ModelError.invalidConfig(field: "num_labels", reason: "is \(stated) but id2label names \(labelNames.count) labels")
        }
        labelCount = stated ?? labelNames?.count
        problemType = try container.decodeIfPresent(ProblemType.self, forKey: .problemType)
        tieWordEmbeddings = try container.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
    }

    /// The config's fields; the head's (`architectures`, `id2label`/`label2id`, `problem_type`, `tie_word_embeddings`
    /// when false) only when there is a head, so a bare encoder's config encodes as it always did.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(modelType, forKey: .modelType)
        try container.encode(vocabSize, forKey: .vocabSize)
        try container.encode(hiddenSize, forKey: .hiddenSize)
        try container.encode(layerCount, forKey: .layerCount)
        try container.encode(attentionHeadCount, forKey: .attentionHeadCount)
        try container.encode(intermediateSize, forKey: .intermediateSize)
        try container.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try container.encode(typeVocabSize, forKey: .typeVocabSize)
        try container.encode(layerNormEpsilon, forKey: .layerNormEpsilon)
        try container.encode(padTokenId, forKey: .padTokenId)
        try container.encode(hiddenActivation, forKey: .hiddenActivation)
        try container.encodeIfPresent(memory, forKey: .memory)
        guard let head else { return }
        try container.encode([architectureName], forKey: .architectures)
        if head.usesLabels, let labelCount {
            let names = (0..<labelCount).map(labelName)
            try container.encode(Dictionary(uniqueKeysWithValues: names.enumerated().map { (String($0.offset), $0.element) }), forKey: .id2label)
            try container.encode(Dictionary(names.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first }), forKey: .label2id)
        }
        try container.encodeIfPresent(problemType, forKey: .problemType)
        if !tieWordEmbeddings { try container.encode(false, forKey: .tieWordEmbeddings) }
    }

    /// A config key by name.
    struct FieldKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// HF config fields that change the forward math, with the only value(s) this model implements.
    /// A checkpoint setting any other value is refused: running it as plain BERT would produce
    /// confident, wrong outputs.
    static let mathFields: [(field: String, accepted: [String], meaning: String)] = [
        ("position_embedding_type", ["\"absolute\""], "relative position embeddings are not implemented; only \"absolute\" is"),
        ("is_decoder", ["false"], "a causal (decoder) attention mask is not implemented"),
        ("add_cross_attention", ["false"], "cross-attention layers are not implemented"),
    ]

    /// Refuses ``mathFields`` with values other than the accepted ones; `embedding_size` must equal `hidden_size`.
    static func checkMathFields(_ container: KeyedDecodingContainer<FieldKey>) throws {
        for (field, accepted, meaning) in mathFields {
            let key = FieldKey(stringValue: field)
            guard container.contains(key), !(try container.decodeNil(forKey: key)) else { continue }
            let text: String
            if let value = try? container.decode(Bool.self, forKey: key) { text = value ? "true" : "false" }
            else if let value = try? container.decode(String.self, forKey: key) { text = "\"\(value)\"" }
            else if let value = try? container.decode(Double.self, forKey: key) { text = "\(value)" }
            else { text = "(a non-scalar value)" }
            guard accepted.contains(text) else {
                throw ModelError.invalidConfig(field: field, reason: "is \(text): \(meaning), so the checkpoint cannot be run faithfully")
            }
        }
        let embedding = FieldKey(stringValue: "embedding_size"), hidden = FieldKey(stringValue: "hidden_size")
        if let size = try? container.decode(Int.self, forKey: embedding), let width = try? container.decode(Int.self, forKey: hidden), size != width {
            throw ModelError.invalidConfig(field: "embedding_size", reason: "is \(size) but hidden_size is \(width): factorised embeddings (an embedding projection) are not implemented")
        }
    }

    /// Decodes a config from JSON bytes and validates it (unless `validating` is false: import
    /// first fills memory sizes the config leaves to the weights, then validates).
    /// - Throws: ``ModelError/invalidConfig(field:reason:)`` naming the field.
    public static func decode(json: Data, validating: Bool = true) throws -> ModelConfig {
        let config: ModelConfig
        if let depth = JSONSyntax.depthError(in: json) {
            throw ModelError.invalidConfig(field: "", reason: "the JSON is \(depth); a config is an object of a few levels")
        }
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: json)
        } catch let error as ModelError {
            throw error
        } catch let DecodingError.keyNotFound(key, context) {
            throw ModelError.invalidConfig(field: (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: "."), reason: "missing")
        } catch let DecodingError.typeMismatch(type, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ModelError.invalidConfig(field: field, reason: "wrong type: \(Self.describeTypeMismatch(expected: type, context))")
        } catch let DecodingError.valueNotFound(_, context) {
            throw ModelError.invalidConfig(field: context.codingPath.map(\.stringValue).joined(separator: "."), reason: "null where a value is required")
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            guard field.isEmpty else { throw ModelError.invalidConfig(field: field, reason: context.debugDescription) }
            // The document itself: not JSON (Foundation's underlying error has the position), or not an object.
            throw ModelError.invalidConfig(field: "", reason: Self.describeUnreadableJSON(context, json: json))
        } catch {
            throw ModelError.invalidConfig(field: "", reason: "\(error)")
        }
        if validating { try config.validate() }
        return config
    }

    /// "expected an integer, found a string": a type mismatch in JSON's words, not Swift's
    /// (`Dictionary<String, Any>`, `Int`).
    static func describeTypeMismatch(expected type: Any.Type, _ context: DecodingError.Context) -> String {
        let name = String(describing: type)
        let expected: String
        if name.hasPrefix("Dictionary") || name.hasPrefix("KeyedDecodingContainer") {
            expected = "a JSON object"
        } else if name.hasPrefix("Array") || name.hasPrefix("UnkeyedDecodingContainer") {
            expected = "a JSON array"
        } else if name == "String" {
            expected = "a string"
        } else if name.hasPrefix("Int") || name.hasPrefix("UInt") {
            expected = "an integer"
        } else if name == "Double" || name == "Float" {
            expected = "a number"
        } else if name == "Bool" {
            expected = "true or false"
        } else {
            expected = "another type"
        }
        // Foundation says "… but found a string instead."; keep only what was found.
        let text = context.debugDescription
        if let start = text.range(of: "found "), let end = text.range(of: " instead", range: start.upperBound..<text.endIndex) {
            let found = text[start.upperBound..<end.lowerBound]
            let article = found.hasPrefix("a ") || found.hasPrefix("an ") || found == "null" ? "" : (found.first.map { "aeiou".contains($0) } == true ? "an " : "a ")
            return "expected \(expected), found \(article)\(found)"
        }
        if text.contains("Number") || text.contains("number") { return "expected \(expected), found a number that does not fit (\(text))" }
        return "expected \(expected)"
    }

    /// Why a config document could not be decoded at all, in words: the syntax error and its
    /// position, or what the top level is instead of an object (never Swift's type names such as
    /// `Dictionary<String, Any>`).
    static func describeUnreadableJSON(_ context: DecodingError.Context, json: Data) -> String {
        if let syntax = JSONSyntax.firstError(in: json) {
            return "it is not valid JSON: \(syntax)"
        }
        if let value = try? JSONSerialization.jsonObject(with: json, options: [.fragmentsAllowed]), !(value is [String: Any]) {
            let kind: String
            switch value {
            case is [Any]: kind = "an array"
            case is String: kind = "a string"
            case is NSNull: kind = "null"
            case is NSNumber: kind = "a number or true/false"
            default: kind = "not an object"
            }
            return "its top level is \(kind), not a JSON object of config fields"
        }
        return "it is not valid JSON (\(context.debugDescription))"
    }

    /// The config as pretty, key-sorted JSON.
    public func encodedJSON() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? encoder.encode(self)) ?? Data("{}".utf8)
    }

    /// Width of one attention head.
    public var attentionHeadSize: Int { hiddenSize / max(attentionHeadCount, 1) }

    /// Checks internal consistency (`schemas/pkm-checkpoints.md` §2): positive sizes, divisibility, memory layers in range,
    /// `knn ≤ n_keys`, even `k_dim`, `v_dim = hidden_size`.
    /// - Throws: ``ModelError/invalidConfig(field:reason:)``.
    public func validate() throws {
        func positive(_ value: Int, _ field: String, limit: Int = 1 << 24) throws {
            guard value > 0, value <= limit else { throw ModelError.invalidConfig(field: field, reason: "must be between 1 and \(limit), is \(value)") }
        }
        try positive(vocabSize, "vocab_size", limit: 1 << 26)
        try positive(hiddenSize, "hidden_size", limit: 1 << 16)
        try positive(layerCount, "num_hidden_layers", limit: 1024)
        try positive(attentionHeadCount, "num_attention_heads", limit: 4096)
        try positive(intermediateSize, "intermediate_size", limit: 1 << 18)
        try positive(maxPositionEmbeddings, "max_position_embeddings", limit: 1 << 20)
        try positive(typeVocabSize, "type_vocab_size", limit: 1 << 16)
        guard hiddenSize % attentionHeadCount == 0 else {
            throw ModelError.invalidConfig(field: "num_attention_heads", reason: "\(attentionHeadCount) does not divide hidden_size \(hiddenSize)")
        }
        guard layerNormEpsilon > 0, layerNormEpsilon.isFinite else {
            throw ModelError.invalidConfig(field: "layer_norm_eps", reason: "must be a positive number")
        }
        guard hiddenActivation == "gelu" else {
            throw ModelError.invalidConfig(field: "hidden_act", reason: "'\(hiddenActivation)' is not supported; only exact erf 'gelu' is")
        }
        guard padTokenId >= 0, padTokenId < vocabSize else {
            throw ModelError.invalidConfig(field: "pad_token_id", reason: "\(padTokenId) is outside the vocabulary (\(vocabSize))")
        }
        if modelType == .roberta, maxPositionEmbeddings <= padTokenId + 1 {
            throw ModelError.invalidConfig(field: "max_position_embeddings", reason: "RoBERTa needs more than pad_token_id + 1 positions")
        }
        if let head, head.usesLabels {
            guard let labelCount else {
                throw ModelError.invalidConfig(field: "num_labels", reason: "missing (and not inferred from the classifier's weights); a \(architectureName) needs its number of labels")
            }
            try positive(labelCount, "num_labels", limit: 1 << 20)
            if let labelNames, labelNames.count != labelCount {
                throw ModelError.invalidConfig(field: "id2label", reason: "names \(labelNames.count) labels but num_labels is \(labelCount)")
            }
        }
        guard let memory else { return }
        // 0 stands for "absent, to be inferred from the weights"; a 0 the config states is a wrong value, not a missing one.
        let sizes = [(memory.keyCount, "n_keys", "keys per product half"), (memory.headCount, "heads", "query heads"),
                     (memory.keyDimension, "k_dim", "key width"), (memory.valueDimension, "v_dim", "value width")]
        for (value, key, meaning) in sizes where value == 0 {
            if memory.statedFields.contains(key) {
                throw ModelError.invalidConfig(field: "pkm." + key, reason: "is 0, but a memory needs at least 1 (\(meaning)); fix the value, or leave the field out to infer it from the weights")
            }
            throw ModelError.invalidConfig(field: "pkm." + key, reason: "missing (and not inferred from the checkpoint's memory tensors)")
        }
        try positive(memory.keyCount, "pkm.n_keys", limit: 1 << 16)
        try positive(memory.headCount, "pkm.heads", limit: 1024)
        try positive(memory.knn, "pkm.knn", limit: 1 << 16)
        try positive(memory.keyDimension, "pkm.k_dim", limit: 1 << 16)
        try positive(memory.valueDimension, "pkm.v_dim", limit: 1 << 20)
        guard memory.knn <= memory.keyCount else {
            throw ModelError.invalidConfig(field: "pkm.knn", reason: "\(memory.knn) exceeds n_keys \(memory.keyCount)")
        }
        guard memory.keyDimension % 2 == 0 else {
            throw ModelError.invalidConfig(field: "pkm.k_dim", reason: "\(memory.keyDimension) must be even (it is split into two halves)")
        }
        guard memory.valueProjection != .none || memory.valueDimension == hiddenSize else {
            throw ModelError.invalidConfig(field: "pkm.v_dim", reason: "\(memory.valueDimension) must equal hidden_size \(hiddenSize) (or set pkm.value_projection)")
        }
        guard memory.layers.count == memory.modes.count else {
            throw ModelError.invalidConfig(field: "pkm.modes", reason: "\(memory.modes.count) modes for \(memory.layers.count) layers")
        }
        guard !memory.layers.isEmpty else { throw ModelError.invalidConfig(field: "pkm.layers", reason: "is empty") }
        guard Set(memory.layers).count == memory.layers.count else {
            throw ModelError.invalidConfig(field: "pkm.layers", reason: "lists a layer twice: \(memory.layers)")
        }
        for layer in memory.layers where layer < 0 || layer >= layerCount {
            throw ModelError.invalidConfig(field: "pkm.layers", reason: "layer \(layer) is outside 0..<\(layerCount)")
        }
        guard memory.batchNormEpsilon >= 0, memory.batchNormEpsilon.isFinite else {
            throw ModelError.invalidConfig(field: "pkm.bn_eps", reason: "must be a non-negative number")
        }
        guard memory.layerNormEpsilon >= 0, memory.layerNormEpsilon.isFinite else {
            throw ModelError.invalidConfig(field: "pkm.norm_eps", reason: "must be a non-negative number")
        }
        guard memory.temperature > 0, memory.temperature.isFinite else {
            throw ModelError.invalidConfig(field: "pkm.temperature", reason: "must be a positive number, is \(memory.temperature)")
        }
        for size in memory.queryLayerSizes { try positive(size, "pkm.query_layer_sizes", limit: 1 << 18) }
        guard memory.queryLayerSizes.count <= 16 else {
            throw ModelError.invalidConfig(field: "pkm.query_layer_sizes", reason: "more than 16 hidden layers")
        }
        if let owner = memory.sharedValues, !memory.layers.contains(owner) {
            throw ModelError.invalidConfig(field: "pkm.shared_values", reason: "layer \(owner) has no memory (pkm.layers is \(memory.layers))")
        }
        switch memory.slotMap {
        case .modulo:
            guard let size = memory.moduloSize, size >= 1, size <= memory.slotCount else {
                throw ModelError.invalidConfig(field: "pkm.modulo_size", reason: "slot_map \"modulo\" needs 1 ≤ modulo_size ≤ n_keys² = \(memory.slotCount), is \(memory.moduloSize.map(String.init) ?? "absent")")
            }
        case .none, .headPermutations:
            guard memory.moduloSize == nil else {
                throw ModelError.invalidConfig(field: "pkm.modulo_size", reason: "is set but pkm.slot_map is \"\(memory.slotMap.rawValue)\", not \"modulo\"")
            }
        }
    }
}
