import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// How one source tensor was mapped on import.
public struct MappedTensor: Sendable, Codable, Equatable {
    /// Name in the source file.
    public var source: String
    /// Canonical name (`schemas/pkm-checkpoints.md` §1).
    public var canonical: String
    /// Rules applied (`strip:bert.`, `layernorm-gamma`, …); empty when the name was already canonical.
    public var rules: [String]
    public var dtype: DType
    /// Canonical shape (after ``transform``).
    public var shape: [Int]
    /// The re-ordering that turns the source tensor into the canonical one (peer memory layouts), if any.
    public var transform: LayoutTransform?
    /// Memory heads H, for ``transform``.
    public var transformHeads: Int?
}

/// A shape (or dtype) disagreement between a checkpoint tensor and the config.
public struct ShapeMismatch: Sendable, Codable, Equatable {
    public var name: String
    public var expected: [Int]
    public var actual: [Int]
    public var dtype: DType?
}

/// What the loader found when mapping a checkpoint onto the model, reported as HF's loader does.
public struct MappingReport: Sendable, Codable {
    /// The checkpoint path.
    public var checkpoint: String
    public var format: CheckpointFormat
    /// Where the config came from (the given config file, `HDF5 attribute 'config'`, …).
    public var configSource: String
    public var modelType: ModelConfig.ModelType
    /// Every tensor the model reads, with its source name.
    public var mapped: [MappedTensor]
    /// Required tensors absent from the checkpoint (an error).
    public var missing: [String]
    /// Tensors the model does not use; kept in outputs and reported (an error under ``ImportOptions/strict``).
    public var unexpected: [MappedTensor]
    /// Tensors whose shape disagrees with the config (an error).
    public var shapeMismatches: [ShapeMismatch]
    /// Buffers that are not weights (`embeddings.position_ids`), ignored.
    public var ignored: [MappedTensor]
    /// Other problems (duplicate canonical names, non-float weights, modes implied by names that disagree with the config).
    public var conflicts: [String]
    /// Non-fatal findings.
    public var warnings: [String]
    /// The layout detected (or forced) for each memory, by encoder layer.
    public var memoryLayouts: [String: DetectedMemoryLayout] = [:]
    /// The Hugging Face class the checkpoint is run as (`BertForMaskedLM`, `RobertaModel`, …).
    public var architecture: String = ""
    /// Where the head was chosen from (`config.json architectures`, `tensor names`), nil for a bare encoder.
    public var headSource: String?

    /// Every problem that makes the checkpoint unusable (unexpected tensors too when `strict`).
    public func problems(strict: Bool) -> [MappingProblem] {
        var list = missing.map(MappingProblem.missing)
        list += shapeMismatches.map(MappingProblem.shapeMismatch)
        list += conflicts.map(MappingProblem.conflict)
        if strict { list += unexpected.map { MappingProblem.unexpected($0.source) } }
        return list
    }
}
