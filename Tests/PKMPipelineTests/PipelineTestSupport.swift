import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline
import PKMTensor
import PKMTestSupport

enum PipelineFixtures {
    /// The repository root (the folder holding Package.swift).
    static var repositoryRoot: URL { TestPaths.repositoryRoot }

    /// Writes a synthetic checkpoint (config embedded) and returns its URL.
    static func writeCheckpoint(_ config: ModelConfig, to url: URL, format: CheckpointFormat, seed: UInt64 = 1,
                                rename: (String) -> String = { $0 }, embedConfig: Bool = true, extra: [(String, Tensor)] = []) throws -> URL {
        let dict = try SyntheticModel.stateDict(for: config, seed: seed)
        var renamed = StateDict()
        for (name, tensor) in dict.entries { try renamed.insert(tensor, named: rename(name)) }
        for (name, tensor) in extra { try renamed.insert(tensor, named: name) }
        if embedConfig { renamed.metadata["config"] = String(decoding: config.encodedJSON(), as: UTF8.self) }
        try Checkpoints.write(renamed, to: url, format: format)
        return url
    }

    /// Runs the Swift model on synthetic inputs and writes a spec §5 reference file.
    static func writeReference(for checkpoint: URL, config: ModelConfig, to url: URL, atol: Double? = nil) throws {
        let resolved = try LoadedCheckpoint(checkpoint).resolved()
        let model = try resolved.makeModel()
        let inputs = try SyntheticModel.inputs(config: config, batch: 2, sequence: 7, padding: 2)
        let outputs = try model.forward(inputs, collectHiddenStates: true, collectMemoryTraces: true)
        var tensors = try ReferenceLayout.tensors(inputs: inputs, outputs: outputs, config: config)
        if let atol { tensors.metadata["atol"] = String(atol); tensors.metadata["rtol"] = "0" }
        try Checkpoints.write(tensors, to: url, format: .hdf5)
    }
}
