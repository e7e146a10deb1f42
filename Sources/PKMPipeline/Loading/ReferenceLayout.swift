import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// One tensor of the reference layout (`schemas/pkm-checkpoints.md` §5 of `schemas/pkm-checkpoints.md`), spelled once: as a path
/// in the HDF5 file (`outputs/last_hidden_state`, how it is written) and as the dotted name a reader
/// lists (`outputs.last_hidden_state`, how it is read).
public enum ReferenceTensor: Hashable, Sendable {
    case inputIds, attentionMask, tokenTypeIds
    case lastHiddenState, poolerOutput
    /// `outputs/hidden_states/{n}`: the embeddings (0) and each layer's output.
    case hiddenState(Int)
    /// `outputs/memory/{layer}/indices` and `…/scores`: the slots each memory picked and their weights.
    case memoryIndices(layer: Int), memoryScores(layer: Int)
    /// `outputs/logits`: a task head's logits (`[B, T, vocab]` masked LM, `[B, num_labels]` sequence classification,
    /// `[B, T, num_labels]` token classification).
    case logits
    /// `outputs/start_logits`, `outputs/end_logits`: question answering's span logits `[B, T]`.
    case startLogits, endLogits

    /// The path components.
    public var components: [String] {
        switch self {
        case .inputIds: return ["inputs", "input_ids"]
        case .attentionMask: return ["inputs", "attention_mask"]
        case .tokenTypeIds: return ["inputs", "token_type_ids"]
        case .lastHiddenState: return ["outputs", "last_hidden_state"]
        case .poolerOutput: return ["outputs", "pooler_output"]
        case .hiddenState(let n): return ["outputs", "hidden_states", String(n)]
        case .memoryIndices(let layer): return ["outputs", "memory", String(layer), "indices"]
        case .memoryScores(let layer): return ["outputs", "memory", String(layer), "scores"]
        case .logits: return ["outputs", "logits"]
        case .startLogits: return ["outputs", "start_logits"]
        case .endLogits: return ["outputs", "end_logits"]
        }
    }

    /// The name as written: `outputs/hidden_states/3`.
    public var path: String { components.joined(separator: "/") }
    /// The name as a reader lists it: `outputs.hidden_states.3`.
    public var name: String { components.joined(separator: ".") }
    /// The path as shown to people: `/outputs/hidden_states/3`.
    public var displayPath: String { "/" + path }
}

/// Reading and writing the reference layout of `schemas/pkm-checkpoints.md` §5.
public enum ReferenceLayout {
    /// The memory layer of a reader name under `outputs.memory.`, if it is one.
    static func memoryLayer(ofName name: String) -> Int? {
        let parts = name.split(separator: ".")
        guard parts.count >= 3, parts[0] == "outputs", parts[1] == "memory" else { return nil }
        return Int(parts[2])
    }

    /// Reads the inputs group of a reference or inputs file.
    /// - Throws: ``PipelineError/invalidReference(path:reason:)`` when `input_ids` is missing or shapes disagree.
    public static func readInputs(from reader: any CheckpointReader) throws -> ModelInputs {
        let names = Set(reader.tensorInfos.map(\.name))
        guard let info = reader.tensorInfos.first(where: { $0.name == ReferenceTensor.inputIds.name }) else {
            let what: String
            if reader.metadata["config"] != nil || names.contains(where: { $0.contains("embeddings") || $0.contains("encoder.layer") }) {
                what = "this is a checkpoint (\(reader.tensorInfos.count == 1 ? "1 tensor" : "\(reader.tensorInfos.count) tensors") of model weights), not a reference or inputs file"
            } else {
                what = "no /inputs/input_ids dataset, so this is not a reference or inputs file"
            }
            throw PipelineError.invalidReference(path: reader.url.path, reason: "\(what); a reference file (schemas/pkm-checkpoints.md §5) is an HDF5 file holding /inputs/input_ids [batch, sequence] (and optionally attention_mask, token_type_ids) and the model's /outputs/…; make one with \(setting: .referenceRecipe)")
        }
        guard info.shape.count == 2, info.shape[0] > 0, info.shape[1] > 0 else {
            throw PipelineError.invalidReference(path: reader.url.path, reason: "/inputs/input_ids must be [batch, sequence], is \(info.shape)")
        }
        func ints(_ tensor: ReferenceTensor) throws -> [Int]? {
            guard let stored = reader.tensorInfos.first(where: { $0.name == tensor.name }) else { return nil }
            // Token ids, masks and type ids are integers; a float dataset is a reference written wrong, not ids to round.
            guard !stored.dtype.isFloatingPoint else {
                throw PipelineError.invalidReference(path: reader.url.path, reason: "\(tensor.displayPath) has dtype \(stored.dtype.displayName); it must hold integers (int64 or int32)")
            }
            let values = try reader.tensor(named: tensor.name)
            guard values.shape == info.shape else {
                throw PipelineError.invalidReference(path: reader.url.path, reason: "\(tensor.displayPath) has shape \(values.shape), input_ids has \(info.shape)")
            }
            return values.int64Values().map { Int(clamping: $0) }
        }
        do {
            return try ModelInputs(batchSize: info.shape[0], sequenceLength: info.shape[1], inputIds: try ints(.inputIds) ?? [],
                                   attentionMask: try ints(.attentionMask), tokenTypeIds: try ints(.tokenTypeIds))
        } catch let error as ModelError {
            throw PipelineError.invalidReference(path: reader.url.path, reason: "\(error.description)")
        }
    }

    /// Checks that the inputs read from the reference or inputs file at `path` fit a model with `config`, so a bad id is
    /// blamed on the file that holds it, not on the checkpoint.
    /// - Throws: ``PipelineError/invalidReference(path:reason:)`` naming the first id outside the vocabulary or token type range.
    static func check(_ inputs: ModelInputs, fit config: ModelConfig, path: String) throws {
        let t = inputs.sequenceLength
        if let (index, id) = inputs.inputIds.enumerated().first(where: { $0.element < 0 || $0.element >= config.vocabSize }) {
            throw PipelineError.invalidReference(path: path, reason: "/inputs/input_ids holds token id \(id) at [\(index / t), \(index % t)], outside the model's vocabulary 0..<\(config.vocabSize): the file's inputs were made for another model")
        }
        if let types = inputs.tokenTypeIds,
           let (index, type) = types.enumerated().first(where: { $0.element < 0 || $0.element >= config.typeVocabSize }) {
            throw PipelineError.invalidReference(path: path, reason: "/inputs/token_type_ids holds \(type) at [\(index / t), \(index % t)], outside the model's 0..<\(config.typeVocabSize)")
        }
        if let mask = inputs.attentionMask, let (index, value) = mask.enumerated().first(where: { $0.element != 0 && $0.element != 1 }) {
            throw PipelineError.invalidReference(path: path, reason: "/inputs/attention_mask holds \(value) at [\(index / t), \(index % t)]; a mask holds 0 or 1")
        }
    }

    /// A tolerance attribute (`atol`, `rtol`) of a reference file: nil when absent.
    /// - Throws: ``PipelineError/invalidReference(path:reason:)`` when present but not a finite number ≥ 0.
    static func tolerance(_ name: String, of reader: any CheckpointReader) throws -> Double? {
        guard let text = reader.metadata[name] else { return nil }
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite, value >= 0 else {
            throw PipelineError.invalidReference(path: reader.url.path, reason: "the \(name) attribute is '\(text)'; a tolerance is a finite number of 0 or more (fix the file, or give the tolerance explicitly)")
        }
        return value
    }

    /// Inputs and the outputs of a forward pass as tensors named in the `schemas/pkm-checkpoints.md` §5 layout (`inputs/…`, `outputs/…`).
    public static func tensors(inputs: ModelInputs, outputs: ModelOutputs, config: ModelConfig) throws -> StateDict {
        let (b, t, d) = (inputs.batchSize, inputs.sequenceLength, config.hiddenSize)
        var dict = StateDict()
        func insert(_ tensor: Tensor, _ name: ReferenceTensor) throws { try dict.insert(tensor, named: name.path) }
        try insert(Tensor(int64: inputs.inputIds.map(Int64.init), shape: [b, t]), .inputIds)
        try insert(Tensor(int64: (inputs.attentionMask ?? [Int](repeating: 1, count: b * t)).map(Int64.init), shape: [b, t]), .attentionMask)
        if let types = inputs.tokenTypeIds { try insert(Tensor(int64: types.map(Int64.init), shape: [b, t]), .tokenTypeIds) }
        try insert(Tensor(float32: outputs.lastHiddenState, shape: [b, t, d]), .lastHiddenState)
        if let pooled = outputs.poolerOutput { try insert(Tensor(float32: pooled, shape: [b, d]), .poolerOutput) }
        for (n, state) in outputs.hiddenStates.enumerated() { try insert(Tensor(float32: state, shape: [b, t, d]), .hiddenState(n)) }
        for (layer, trace) in outputs.memoryTraces.sorted(by: { $0.key < $1.key }) {
            try insert(Tensor(int64: trace.indices, shape: trace.shape), .memoryIndices(layer: layer))
            try insert(Tensor(float32: trace.weights, shape: trace.shape), .memoryScores(layer: layer))
        }
        if let head = outputs.head {
            if let logits = head.logits { try insert(Tensor(float32: logits, shape: head.logitsShape), .logits) }
            if let start = head.startLogits { try insert(Tensor(float32: start, shape: [b, t]), .startLogits) }
            if let end = head.endLogits { try insert(Tensor(float32: end, shape: [b, t]), .endLogits) }
        }
        dict.metadata["generator"] = "\(PKMVersion.toolName) run (Swift, float32)"
        return dict
    }

    /// Writes inputs and outputs in the reference layout to `url` (HDF5), atomically.
    /// - Throws: ``FormatError``.
    public static func write(inputs: ModelInputs, outputs: ModelOutputs, config: ModelConfig, to url: URL) throws {
        try Checkpoints.write(try tensors(inputs: inputs, outputs: outputs, config: config), to: url, format: .hdf5)
    }
}
