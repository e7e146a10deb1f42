import Foundation

/// How a memory layer attaches to an encoder layer (spec §3).
public enum MemoryMode: String, Sendable, Codable, CaseIterable {
    /// The memory replaces the feed-forward block: `y = LN_out(a + M(a))`.
    case replace
    /// The memory sits beside the feed-forward block (the paper's ResM): `y = LN_out(a + FFN(a) + M(a))`.
    case residual
    /// XLM's `i+` placement: `y = LN_out(a + FFN(a))`, then `y = y + M(y)`.
    case after
}

/// Product-key memory hyper-parameters (the config's `pkm` object, spec §2).
public struct MemoryConfig: Sendable, Codable, Equatable {
    /// Encoder layer indices that carry a memory.
    public var layers: [Int]
    /// One mode per entry of `layers`.
    public var modes: [MemoryMode]
    /// Sub-keys per half, N (the memory has N² slots).
    public var keyCount: Int
    /// Memory heads, H.
    public var headCount: Int
    /// Slots selected per head, k.
    public var knn: Int
    /// Query width per head, K (even).
    public var keyDimension: Int
    /// Value width, V (must equal the hidden size).
    public var valueDimension: Int
    /// Whether the query network ends in a BatchNorm1d.
    public var queryBatchNorm: Bool
    /// Whether the query linear has a bias.
    public var queryBias: Bool
    /// BatchNorm epsilon.
    public var batchNormEpsilon: Double

    enum CodingKeys: String, CodingKey {
        case layers, modes, keyCount = "n_keys", headCount = "heads", knn, keyDimension = "k_dim", valueDimension = "v_dim"
        case queryBatchNorm = "query_batchnorm", queryBias = "query_bias", batchNormEpsilon = "bn_eps"
    }

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
        self.queryBatchNorm = queryBatchNorm
        self.queryBias = queryBias
        self.batchNormEpsilon = batchNormEpsilon
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        layers = try container.decode([Int].self, forKey: .layers)
        // A single mode string applies to every layer.
        if let single = try? container.decode(MemoryMode.self, forKey: .modes) {
            modes = Array(repeating: single, count: layers.count)
        } else {
            modes = try container.decode([MemoryMode].self, forKey: .modes)
        }
        keyCount = try container.decode(Int.self, forKey: .keyCount)
        headCount = try container.decode(Int.self, forKey: .headCount)
        knn = try container.decode(Int.self, forKey: .knn)
        keyDimension = try container.decode(Int.self, forKey: .keyDimension)
        valueDimension = try container.decode(Int.self, forKey: .valueDimension)
        queryBatchNorm = try container.decodeIfPresent(Bool.self, forKey: .queryBatchNorm) ?? true
        queryBias = try container.decodeIfPresent(Bool.self, forKey: .queryBias) ?? true
        batchNormEpsilon = try container.decodeIfPresent(Double.self, forKey: .batchNormEpsilon) ?? 1e-5
    }

    /// The mode of the memory at `layer`, if it has one.
    public func mode(ofLayer layer: Int) -> MemoryMode? {
        guard let position = layers.firstIndex(of: layer), position < modes.count else { return nil }
        return modes[position]
    }

    /// Total slots, N².
    public var slotCount: Int { keyCount * keyCount }
}

/// The architecture of a BERT or RoBERTa model, optionally with product-key memories.
///
/// Decodes a Hugging Face `config.json` (spec §2); unknown fields are ignored.
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

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", vocabSize = "vocab_size", hiddenSize = "hidden_size", layerCount = "num_hidden_layers"
        case attentionHeadCount = "num_attention_heads", intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings", typeVocabSize = "type_vocab_size"
        case layerNormEpsilon = "layer_norm_eps", padTokenId = "pad_token_id", hiddenActivation = "hidden_act", memory = "pkm"
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

    /// Decodes a config from JSON bytes and validates it.
    /// - Throws: ``ModelError/invalidConfig(field:reason:)`` naming the field.
    public static func decode(json: Data) throws -> ModelConfig {
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: json)
        } catch let error as ModelError {
            throw error
        } catch let DecodingError.keyNotFound(key, context) {
            throw ModelError.invalidConfig(field: (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: "."), reason: "missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw ModelError.invalidConfig(field: context.codingPath.map(\.stringValue).joined(separator: "."), reason: "wrong type: \(context.debugDescription)")
        } catch let DecodingError.valueNotFound(_, context) {
            throw ModelError.invalidConfig(field: context.codingPath.map(\.stringValue).joined(separator: "."), reason: "null where a value is required")
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ModelError.invalidConfig(field: field.isEmpty ? "(json)" : field, reason: context.debugDescription)
        } catch {
            throw ModelError.invalidConfig(field: "(json)", reason: "\(error)")
        }
        try config.validate()
        return config
    }

    /// The config as pretty, key-sorted JSON.
    public func encodedJSON() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? encoder.encode(self)) ?? Data("{}".utf8)
    }

    /// Width of one attention head.
    public var attentionHeadSize: Int { hiddenSize / max(attentionHeadCount, 1) }

    /// Checks internal consistency (spec §2): positive sizes, divisibility, memory layers in range,
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
        guard let memory else { return }
        try positive(memory.keyCount, "pkm.n_keys", limit: 1 << 16)
        try positive(memory.headCount, "pkm.heads", limit: 1024)
        try positive(memory.knn, "pkm.knn", limit: 1 << 16)
        try positive(memory.keyDimension, "pkm.k_dim", limit: 1 << 16)
        guard memory.knn <= memory.keyCount else {
            throw ModelError.invalidConfig(field: "pkm.knn", reason: "\(memory.knn) exceeds n_keys \(memory.keyCount)")
        }
        guard memory.keyDimension % 2 == 0 else {
            throw ModelError.invalidConfig(field: "pkm.k_dim", reason: "\(memory.keyDimension) must be even (it is split into two halves)")
        }
        guard memory.valueDimension == hiddenSize else {
            throw ModelError.invalidConfig(field: "pkm.v_dim", reason: "\(memory.valueDimension) must equal hidden_size \(hiddenSize)")
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
    }
}
