import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// The reference layout of spec §5, as dotted names in a reader (`/inputs/input_ids` → `inputs.input_ids`).
public enum ReferenceLayout {
    public static let inputIds = "inputs.input_ids"
    public static let attentionMask = "inputs.attention_mask"
    public static let tokenTypeIds = "inputs.token_type_ids"
    public static let lastHiddenState = "outputs.last_hidden_state"
    public static let poolerOutput = "outputs.pooler_output"
    public static func hiddenState(_ n: Int) -> String { "outputs.hidden_states.\(n)" }
    public static func memoryIndices(_ layer: Int) -> String { "outputs.memory.\(layer).indices" }
    public static func memoryScores(_ layer: Int) -> String { "outputs.memory.\(layer).scores" }

    /// Reads the inputs group of a reference or inputs file.
    /// - Throws: ``PipelineError/invalidReference(path:reason:)`` when `input_ids` is missing or shapes disagree.
    public static func readInputs(from reader: any CheckpointReader) throws -> ModelInputs {
        let names = Set(reader.tensorInfos.map(\.name))
        guard names.contains(inputIds), let info = reader.tensorInfos.first(where: { $0.name == inputIds }) else {
            let what: String
            if reader.metadata["config"] != nil || names.contains(where: { $0.contains("embeddings") || $0.contains("encoder.layer") }) {
                what = "this is a checkpoint (\(reader.tensorInfos.count == 1 ? "1 tensor" : "\(reader.tensorInfos.count) tensors") of model weights), not a reference or inputs file"
            } else {
                what = "no /inputs/input_ids dataset, so this is not a reference or inputs file"
            }
            throw PipelineError.invalidReference(path: reader.url.path, reason: "\(what); a reference file (spec §5) is an HDF5 file holding /inputs/input_ids [batch, sequence] (and optionally attention_mask, token_type_ids) and the model's /outputs/…; make one with `pkm-convert run CHECKPOINT --random-inputs 4x24 --seed 0 -o reference.h5`")
        }
        guard info.shape.count == 2, info.shape[0] > 0, info.shape[1] > 0 else {
            throw PipelineError.invalidReference(path: reader.url.path, reason: "/inputs/input_ids must be [batch, sequence], is \(info.shape)")
        }
        func ints(_ name: String) throws -> [Int]? {
            guard names.contains(name) else { return nil }
            let tensor = try reader.tensor(named: name)
            guard tensor.shape == info.shape else {
                throw PipelineError.invalidReference(path: reader.url.path, reason: "/\(name.replacingOccurrences(of: ".", with: "/")) has shape \(tensor.shape), input_ids has \(info.shape)")
            }
            return tensor.int64Values().map { Int(clamping: $0) }
        }
        do {
            return try ModelInputs(batchSize: info.shape[0], sequenceLength: info.shape[1], inputIds: try ints(inputIds) ?? [],
                                   attentionMask: try ints(attentionMask), tokenTypeIds: try ints(tokenTypeIds))
        } catch let error as ModelError {
            throw PipelineError.invalidReference(path: reader.url.path, reason: "\(error)")
        }
    }
}
