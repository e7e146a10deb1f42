import PKMTensor

/// Word + position + token-type embeddings followed by LayerNorm (`schemas/pkm-checkpoints.md` §3).
public struct Embeddings: Sendable {
    let config: ModelConfig
    let word: [Float]
    let position: [Float]
    let tokenType: [Float]
    let normWeight: [Float]
    let normBias: [Float]

    /// The tensors this block owns, each declared once: ``parameterSpecs(_:)`` lists them and
    /// ``init(config:loader:)`` loads them.
    struct Parameters: Sendable, Equatable {
        /// `[vocab, d]`.
        let word: ParameterSpec
        /// `[max_position_embeddings, d]`.
        let position: ParameterSpec
        /// `[type_vocab_size, d]`.
        let tokenType: ParameterSpec
        /// LayerNorm `[d]`.
        let norm: AffineParameters

        init(_ config: ModelConfig) {
            let d = config.hiddenSize
            word = ParameterSpec(name: ParameterNames.wordEmbeddings, shape: [config.vocabSize, d])
            position = ParameterSpec(name: ParameterNames.positionEmbeddings, shape: [config.maxPositionEmbeddings, d])
            tokenType = ParameterSpec(name: ParameterNames.tokenTypeEmbeddings, shape: [config.typeVocabSize, d])
            norm = AffineParameters(weight: ParameterSpec(name: ParameterNames.embeddingsNormWeight, shape: [d]),
                                    bias: ParameterSpec(name: ParameterNames.embeddingsNormBias, shape: [d]))
        }

        /// In canonical order.
        var specs: [ParameterSpec] { [word, position, tokenType] + norm.specs }
    }

    /// The tensors this block owns.
    public static func parameterSpecs(_ config: ModelConfig) -> [ParameterSpec] {
        Parameters(config).specs
    }

    init(config: ModelConfig, loader: WeightLoader) throws {
        self.config = config
        let parameters = Parameters(config)
        word = try loader.floats(parameters.word)
        position = try loader.floats(parameters.position)
        tokenType = try loader.floats(parameters.tokenType)
        (normWeight, normBias) = try loader.affine(parameters.norm)
    }

    /// Position ids: `0..T-1` for BERT; for RoBERTa `cumsum(ids != pad) * (ids != pad) + pad`.
    static func positionIds(_ config: ModelConfig, inputs: ModelInputs) -> [Int] {
        let (batch, sequence) = (inputs.batchSize, inputs.sequenceLength)
        var ids = [Int](repeating: 0, count: batch * sequence)
        for b in 0..<batch {
            var running = 0
            for t in 0..<sequence {
                switch config.modelType {
                case .bert:
                    ids[b * sequence + t] = t
                case .roberta:
                    let isToken = inputs.inputIds[b * sequence + t] != config.padTokenId
                    if isToken { running += 1 }
                    ids[b * sequence + t] = isToken ? running + config.padTokenId : config.padTokenId
                }
            }
        }
        return ids
    }

    /// Embeds the inputs into `output` `[batch·sequence, hidden]`.
    func forward(_ inputs: ModelInputs, into output: UnsafeMutablePointer<Float>) throws {
        let d = config.hiddenSize
        let positions = Embeddings.positionIds(config, inputs: inputs)
        let tokens = inputs.batchSize * inputs.sequenceLength
        // BERT's position ids are 0..<T: name the sequence length, not the first position beyond the table.
        if config.modelType == .bert, inputs.sequenceLength > config.maxPositionEmbeddings {
            throw ModelError.invalidInput(reason: "sequence length \(inputs.sequenceLength) exceeds max_position_embeddings \(config.maxPositionEmbeddings) of the model; use sequences of at most \(config.maxPositionEmbeddings) tokens")
        }
        for index in 0..<tokens {
            let id = inputs.inputIds[index]
            guard id >= 0, id < config.vocabSize else {
                throw ModelError.invalidInput(reason: "token id \(id) at position \(index) is outside the vocabulary (0..<\(config.vocabSize))")
            }
            let type = inputs.tokenTypeIds?[index] ?? 0
            guard type >= 0, type < config.typeVocabSize else {
                throw ModelError.invalidInput(reason: "token type \(type) at position \(index) is outside 0..<\(config.typeVocabSize)")
            }
            let positionId = positions[index]
            guard positionId < config.maxPositionEmbeddings else {
                // RoBERTa counts non-padding tokens from pad_token_id + 1.
                let usable = config.maxPositionEmbeddings - config.padTokenId - 1
                throw ModelError.invalidInput(reason: "sequence \(index / inputs.sequenceLength) has more than \(usable) non-padding tokens: RoBERTa numbers them from pad_token_id + 1 = \(config.padTokenId + 1), and max_position_embeddings is \(config.maxPositionEmbeddings); use sequences of at most \(usable) tokens")
            }
            let row = output + index * d
            for i in 0..<d {
                row[i] = word[id * d + i] + tokenType[type * d + i] + position[positionId * d + i]
            }
        }
        Compute.layerNorm(output, rows: tokens, width: d, weight: normWeight, bias: normBias, epsilon: Float(config.layerNormEpsilon))
    }
}
