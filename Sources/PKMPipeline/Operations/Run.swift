import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// Timing of repeated forward passes (load time excluded).
public struct ForwardTiming: Sendable, Codable {
    public var repeats: Int
    public var medianSeconds: Double
    public var minimumSeconds: Double
    public var tokensPerSecond: Double
    public var threads: Int
    /// Mean seconds per forward pass spent in each component (`attention`, `feed_forward`, `memory`, …).
    public var componentSeconds: [String: Double]
}

/// Result of `run`.
public struct RunResult: Sendable, Codable {
    public var checkpoint: String
    public var batchSize: Int
    public var sequenceLength: Int
    public var hiddenSize: Int
    /// Where outputs were written (reference layout), if requested.
    public var output: String?
    /// The first token's final hidden state per sequence (first 8 values), for a quick look.
    public var firstTokenPreview: [[Float]]
    public var poolerPreview: [[Float]]?
    public var timing: ForwardTiming?
    public var loadSeconds: Double
}

/// `run`: forward passes outside a verification, writing outputs other tools can compare.
public enum Runner {
    /// Outputs of a forward pass as tensors named in the spec §5 layout (`inputs/…`, `outputs/…`).
    public static func referenceTensors(inputs: ModelInputs, outputs: ModelOutputs, config: ModelConfig) throws -> StateDict {
        let (b, t, d) = (inputs.batchSize, inputs.sequenceLength, config.hiddenSize)
        var dict = StateDict()
        try dict.insert(Tensor(int64: inputs.inputIds.map(Int64.init), shape: [b, t]), named: "inputs/input_ids")
        try dict.insert(Tensor(int64: (inputs.attentionMask ?? [Int](repeating: 1, count: b * t)).map(Int64.init), shape: [b, t]),
                        named: "inputs/attention_mask")
        if let types = inputs.tokenTypeIds {
            try dict.insert(Tensor(int64: types.map(Int64.init), shape: [b, t]), named: "inputs/token_type_ids")
        }
        try dict.insert(Tensor(float32: outputs.lastHiddenState, shape: [b, t, d]), named: "outputs/last_hidden_state")
        if let pooled = outputs.poolerOutput { try dict.insert(Tensor(float32: pooled, shape: [b, d]), named: "outputs/pooler_output") }
        for (n, state) in outputs.hiddenStates.enumerated() {
            try dict.insert(Tensor(float32: state, shape: [b, t, d]), named: "outputs/hidden_states/\(n)")
        }
        for (layer, trace) in outputs.memoryTraces.sorted(by: { $0.key < $1.key }) {
            try dict.insert(Tensor(int64: trace.indices, shape: trace.shape), named: "outputs/memory/\(layer)/indices")
            try dict.insert(Tensor(float32: trace.weights, shape: trace.shape), named: "outputs/memory/\(layer)/scores")
        }
        dict.metadata["generator"] = "\(PKMVersion.toolName) run (Swift, float32)"
        return dict
    }

    /// Runs `inputs` through the checkpoint; writes the reference layout to `outputURL` (HDF5) when given,
    /// and times `repeats` extra forward passes when `repeats > 0`.
    /// - Throws: ``PipelineError``, ``FormatError``.
    public static func run(checkpoint url: URL, inputs: ModelInputs, outputURL: URL? = nil, repeats: Int = 0,
                           configURL: URL? = nil, limits: ReaderLimits = ReaderLimits(),
                           memory: MemoryImportOptions = MemoryImportOptions()) throws -> RunResult {
        try run(checkpoint: url, source: .given(inputs), outputURL: outputURL, repeats: repeats, configURL: configURL, limits: limits,
                memory: memory)
    }

    /// Runs the inputs of `source` (a file's `/inputs`, given ids, or seeded random ids drawn from the
    /// model's vocabulary) through the checkpoint; see ``run(checkpoint:inputs:outputURL:repeats:configURL:limits:)``.
    /// `run CHECKPOINT --random-inputs 4x24 --seed 0 -o base.h5` so makes a reference file of the model's own outputs.
    /// - Parameter loadProgress: called while the weights are read, with (bytes read, total).
    /// - Throws: ``PipelineError``, ``FormatError``.
    public static func run(checkpoint url: URL, source: InputSource, outputURL: URL? = nil, repeats: Int = 0,
                           configURL: URL? = nil, limits: ReaderLimits = ReaderLimits(),
                           memory: MemoryImportOptions = MemoryImportOptions(),
                           loadProgress: ((Int, Int) -> Void)? = nil) throws -> RunResult {
        let loadStart = Date()
        let checkpoint = try ResolvedCheckpoint(url: url, configURL: configURL, limits: limits, memory: memory)
        let model = try checkpoint.makeModel(byteProgress: loadProgress)
        let loadSeconds = Date().timeIntervalSince(loadStart)
        let inputs = try source.inputs(for: model.config, limits: limits)
        func forward(full: Bool, profile: Bool = false) throws -> ModelOutputs {
            do {
                return try model.forward(inputs, collectHiddenStates: full, collectMemoryTraces: full, profile: profile)
            } catch let error as ModelError {
                throw PipelineError.model(checkpoint: url.path, underlying: error)
            }
        }
        let outputs = try forward(full: outputURL != nil)
        if let outputURL {
            let tensors = try referenceTensors(inputs: inputs, outputs: outputs, config: model.config)
            try Checkpoints.write(tensors, to: outputURL, format: .hdf5)
        }
        var timing: ForwardTiming?
        if repeats > 0 {
            var times: [Double] = []
            var components: [String: Double] = [:]
            for _ in 0..<repeats {
                let start = DispatchTime.now().uptimeNanoseconds
                let timed = try forward(full: false, profile: true)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                for (name, seconds) in timed.profile { components[name, default: 0] += seconds / Double(repeats) }
            }
            times.sort()
            let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
            timing = ForwardTiming(repeats: repeats, medianSeconds: median, minimumSeconds: times[0],
                                   tokensPerSecond: Double(inputs.batchSize * inputs.sequenceLength) / median,
                                   threads: ProcessInfo.processInfo.activeProcessorCount, componentSeconds: components)
        }
        let d = model.config.hiddenSize
        let preview = (0..<inputs.batchSize).map { b in Array(outputs.lastHiddenState[(b * inputs.sequenceLength * d)..<(b * inputs.sequenceLength * d + min(8, d))]) }
        let pooled = outputs.poolerOutput.map { p in (0..<inputs.batchSize).map { b in Array(p[(b * d)..<(b * d + min(8, d))]) } }
        return RunResult(checkpoint: url.path, batchSize: inputs.batchSize, sequenceLength: inputs.sequenceLength, hiddenSize: d,
                         output: outputURL?.path, firstTokenPreview: preview, poolerPreview: pooled, timing: timing, loadSeconds: loadSeconds)
    }
}
