/// Canonical checkpoint tensor names (`schemas/pkm-checkpoints.md` §1), declared once.
///
/// Each layer type declares the tensors it owns once, in its `Parameters` table (name, shape,
/// flags), from which both its public `parameterSpecs` list and its loading are derived; this enum
/// only holds the strings, verbatim, so that the rest of the code never spells a checkpoint key.
public enum ParameterNames {
    /// Leaf of a module's weight, `{module}.weight`.
    public static let weight = "weight"
    /// Leaf of a module's bias, `{module}.bias`.
    public static let bias = "bias"

    public static let wordEmbeddings = "embeddings.word_embeddings.weight"
    public static let positionEmbeddings = "embeddings.position_embeddings.weight"
    public static let tokenTypeEmbeddings = "embeddings.token_type_embeddings.weight"
    public static let embeddingsNormWeight = "embeddings.LayerNorm.weight"
    public static let embeddingsNormBias = "embeddings.LayerNorm.bias"
    /// Buffer saved by older transformers; not a weight (`schemas/pkm-checkpoints.md` §1).
    public static let positionIds = "embeddings.position_ids"
    public static let poolerWeight = "pooler.dense.weight"
    public static let poolerBias = "pooler.dense.bias"

    /// Task heads' modules (`schemas/pkm-checkpoints.md` §3b), at the top level of a Hugging Face state dict (no
    /// `bert.`/`roberta.` prefix).
    public enum Head {
        /// BERT masked-LM transform `[d, d]`, its LayerNorm, the decoder `[vocab, d]` (tied to the word embeddings) and
        /// the output bias `[vocab]` (`cls.predictions.decoder.bias` is the same tensor, saved by some writers).
        public static let bertTransform = "cls.predictions.transform.dense"
        public static let bertTransformNorm = "cls.predictions.transform.LayerNorm"
        public static let bertDecoder = "cls.predictions.decoder"
        public static let bertBias = "cls.predictions.bias"
        /// BERT next-sentence classifier (`BertForPreTraining`): kept, not run.
        public static let bertNextSentence = "cls.seq_relationship"
        /// RoBERTa LM head: dense `[d, d]`, `layer_norm`, decoder `[vocab, d]`, bias `[vocab]`.
        public static let robertaTransform = "lm_head.dense"
        public static let robertaTransformNorm = "lm_head.layer_norm"
        public static let robertaDecoder = "lm_head.decoder"
        public static let robertaBias = "lm_head.bias"
        /// Classifier `[num_labels, d]` (BERT sequence and token classification, RoBERTa token classification).
        public static let classifier = "classifier"
        /// RoBERTa sequence classification: `classifier.dense` `[d, d]` then `classifier.out_proj` `[num_labels, d]`.
        public static let classifierDense = "classifier.dense"
        public static let classifierOutput = "classifier.out_proj"
        /// Question answering: `qa_outputs` `[2, d]` (start, end).
        public static let questionAnswering = "qa_outputs"
    }

    /// `encoder.layer.{i}.`
    public static func layerPrefix(_ layer: Int) -> String { "encoder.layer.\(layer)." }

    /// Names inside one encoder layer, relative to ``layerPrefix(_:)``.
    public enum Layer {
        public static let query = "attention.self.query"
        public static let key = "attention.self.key"
        public static let value = "attention.self.value"
        public static let attentionOutput = "attention.output.dense"
        public static let attentionNorm = "attention.output.LayerNorm"
        public static let intermediate = "intermediate.dense"
        public static let output = "output.dense"
        public static let outputNorm = "output.LayerNorm"
        public static let memory = "memory"
    }

    /// Names inside one memory, relative to `encoder.layer.{i}.memory.`.
    public enum Memory {
        public static let keys = "keys"
        public static let values = "values.weight"
        public static let queryWeight = "query_proj.query_mlps.0.weight"
        public static let queryBias = "query_proj.query_mlps.0.bias"
        public static let batchNormWeight = "query_proj.query_mlps.1.weight"
        public static let batchNormBias = "query_proj.query_mlps.1.bias"
        public static let batchNormMean = "query_proj.query_mlps.1.running_mean"
        public static let batchNormVariance = "query_proj.query_mlps.1.running_var"
        public static let batchNormBatchesTracked = "query_proj.query_mlps.1.num_batches_tracked"
        /// Leaf of a BatchNorm1d's running mean, `{module}.running_mean`.
        public static let runningMean = "running_mean"
        /// Leaf of a BatchNorm1d's running variance, `{module}.running_var`.
        public static let runningVariance = "running_var"
        /// Leaf of a BatchNorm1d's step counter buffer, `{module}.num_batches_tracked`.
        public static let batchesTracked = "num_batches_tracked"
        /// `query_proj.query_mlps.{index}` (a linear, or the batchnorm after one).
        public static func queryModule(_ index: Int) -> String { "query_proj.query_mlps.\(index)" }
        /// Per-half query LayerNorm, `[K/2]` (``QueryNorm/layernorm``).
        public static let queryNorm = "query_norm"
        /// LayerNorm of the input before the query network, `[d]`.
        public static let inputNorm = "input_norm"
        /// LayerNorm of the memory's output, `[d]`.
        public static let outputNorm = "output_norm"
        /// Output projection `[d, V]` (``ValueProjection``).
        public static let valueProjection = "value_proj"
        /// Memory+ gate projection `[V, d]` (``ValueProjection/swiglu``; Meta's spelling).
        public static let swigluProjection = "swilu_projection"
        /// Sigmoid output gate `[1, d]` (``OutputGate/sigmoid``).
        public static let gating = "gating"
        /// Int64 buffer `[H, N²]` (``SlotMap/headPermutations``).
        public static let headPermutations = "head_permutations"
    }
}

/// One tensor a model expects: canonical name, shape, and whether it may be absent.
public struct ParameterSpec: Sendable, Equatable {
    /// Canonical name (`schemas/pkm-checkpoints.md` §1).
    public var name: String
    /// Expected shape.
    public var shape: [Int]
    /// Optional tensors (pooler, `num_batches_tracked`) may be absent without error.
    public var isOptional: Bool
    /// Whether the tensor is a weight the forward pass reads (false for buffers such as `num_batches_tracked`).
    public var isUsed: Bool
    /// Whether the tensor holds integers the forward pass reads (`head_permutations`) rather than float weights.
    public var isInteger: Bool

    public init(name: String, shape: [Int], isOptional: Bool = false, isUsed: Bool = true, isInteger: Bool = false) {
        self.name = name
        self.shape = shape
        self.isOptional = isOptional
        self.isUsed = isUsed
        self.isInteger = isInteger
    }
}

extension ParameterSpec {
    /// `{module}.{leaf}`.
    static func leaf(_ module: String, _ leaf: String, shape: [Int], isOptional: Bool = false, isUsed: Bool = true) -> ParameterSpec {
        ParameterSpec(name: module + "." + leaf, shape: shape, isOptional: isOptional, isUsed: isUsed)
    }
}

/// The weight and bias of one module (a linear or a LayerNorm), as one entry of a layer's
/// parameter table.
struct AffineParameters: Sendable, Equatable {
    /// `{module}.weight`.
    let weight: ParameterSpec
    /// `{module}.bias`.
    let bias: ParameterSpec

    init(weight: ParameterSpec, bias: ParameterSpec) {
        self.weight = weight
        self.bias = bias
    }

    /// `{module}.weight` and `{module}.bias` with the given shapes.
    init(_ module: String, weight: [Int], bias: [Int], isOptional: Bool = false) {
        self.init(weight: .leaf(module, ParameterNames.weight, shape: weight, isOptional: isOptional),
                  bias: .leaf(module, ParameterNames.bias, shape: bias, isOptional: isOptional))
    }

    /// A LayerNorm of `width` at `module`: weight and bias `[width]`.
    static func norm(_ module: String, width: Int) -> AffineParameters {
        AffineParameters(module, weight: [width], bias: [width])
    }

    /// Weight then bias, the order checkpoints list them.
    var specs: [ParameterSpec] { [weight, bias] }
}
