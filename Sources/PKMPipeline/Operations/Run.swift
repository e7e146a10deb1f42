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

/// Options of ``LoadedCheckpoint/run(_:options:loadProgress:)``.
public struct RunOptions: Sendable {
    /// Where to write inputs and outputs in the reference layout (HDF5), if anywhere.
    public var outputURL: URL?
    /// Extra forward passes to time (load time excluded); 0 times none.
    public var repeats = 0
    public init(outputURL: URL? = nil, repeats: Int = 0) {
        self.outputURL = outputURL
        self.repeats = repeats
    }
}

extension LoadedCheckpoint {
    /// `run`: runs the inputs of `source` (a file's `/inputs`, given ids, or seeded random ids drawn from the model's
    /// vocabulary) through the model; writes the reference layout to ``RunOptions/outputURL`` when given (so a run on
    /// seeded random inputs makes a reference file of the model's own outputs), and times ``RunOptions/repeats`` extra
    /// forward passes.
    /// - Parameter loadProgress: called while the weights are read, with (bytes read, total).
    /// - Throws: ``PipelineError``, ``FormatError``.
    public func run(_ source: InputSource, options: RunOptions = RunOptions(),
                    loadProgress: ((Int, Int) -> Void)? = nil) throws -> RunResult {
        let loadStart = Date()
        let model = try model(byteProgress: loadProgress)
        let loadSeconds = Date().timeIntervalSince(loadStart)
        let inputs = try source.inputs(for: model.config, read: self.options.read)
        let outputURL = options.outputURL, repeats = options.repeats, path = url.path
        func forward(full: Bool, profile: Bool = false) throws -> ModelOutputs {
            do {
                return try model.forward(inputs, collectHiddenStates: full, collectMemoryTraces: full, profile: profile)
            } catch let error as ModelError {
                throw PipelineError.model(checkpoint: path, underlying: error)
            }
        }
        let outputs = try forward(full: outputURL != nil)
        if let outputURL {
            try ReferenceLayout.write(inputs: inputs, outputs: outputs, config: model.config, to: outputURL)
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
