import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// Result of `verify`.
public struct VerifyReport: Sendable, Codable {
    public var checkpoint: String
    public var reference: String
    public var tolerance: Tolerance
    /// Where the tolerances came from (`command line` when the caller gave them, `reference file attributes`, `default`).
    public var toleranceSource: String
    public var batchSize: Int
    public var sequenceLength: Int
    public var outputs: [OutputComparison]
    /// Optional outputs the reference does not hold, or the model cannot produce.
    public var skipped: [String]
    /// The reference's outputs this model cannot produce (also listed in ``skipped``): a failure under
    /// ``VerifyOptions/strict``.
    public var notProduced: [String] = []
    /// Whether ``notProduced`` fails the verification.
    public var strict: Bool = false
    public var passed: Bool
    public var seconds: Double
    /// The narrowest floating-point storage dtype of the checkpoint's weights when it is narrower
    /// than float32 (`float16`, `bfloat16`), else nil: such weights are widened exactly, but a
    /// reference computed from the float32 originals differs by the narrowing's rounding.
    public var storagePrecision: String?
    /// What ``storagePrecision`` means for this comparison, for people.
    public var precisionNote: String?
    /// Tolerances matching ``storagePrecision`` (``Verifier/suggestedTolerance(for:)``), when the
    /// comparison failed at tighter ones.
    public var suggestedTolerance: Tolerance?
    /// The same comparison at ``suggestedTolerance``.
    public var withSuggestedTolerance: SuggestedOutcome?

    /// The outcome of re-comparing at the suggested tolerances.
    public struct SuggestedOutcome: Sendable, Codable {
        public var passed: Bool
        /// Elements (and slot ids) beyond the suggested tolerance, over all outputs.
        public var beyondTolerance: Int
        /// Outputs still failing.
        public var failing: [String]
    }
}

/// Options of ``LoadedCheckpoint/verify(against:options:loadProgress:)``.
public struct VerifyOptions: Sendable {
    /// Absolute and relative tolerances overriding the reference's suggested ones (its `atol`/`rtol` attributes).
    public var atol: Double?
    public var rtol: Double?
    /// A reference output the model cannot produce (logits of a head it lacks, a pooler output without a pooler) fails
    /// the verification instead of being listed as skipped only.
    public var strict: Bool
    public init(atol: Double? = nil, rtol: Double? = nil, strict: Bool = false) {
        self.atol = atol
        self.rtol = rtol
        self.strict = strict
    }
}

/// `verify`: runs the reference inputs through the Swift model and compares every output present (`schemas/pkm-checkpoints.md` §5).
public enum Verifier {
    /// Default tolerance when neither the caller nor the reference file gives one.
    public static let defaultTolerance = 1e-4

    /// Tolerances matching a storage dtype's precision, for comparing its outputs with float32
    /// references: float16 (11 significant bits) atol = rtol = 1e-2, bfloat16 (8 bits) atol = rtol = 5e-2,
    /// wider types ``defaultTolerance``. Rounding errors grow with depth, so these are a starting point
    /// that the bundled fixtures meet, not a bound.
    public static func suggestedTolerance(for dtype: DType) -> Tolerance {
        switch dtype {
        case .float16: return Tolerance(absolute: 1e-2, relative: 1e-2)
        case .bfloat16: return Tolerance(absolute: 5e-2, relative: 5e-2)
        default: return Tolerance(absolute: defaultTolerance, relative: defaultTolerance)
        }
    }

    /// The tolerance: the caller's, else the reference's attributes, else ``defaultTolerance``; and where it came from.
    /// - Throws: ``PipelineError/invalidReference(path:reason:)`` for a tolerance attribute that is not a finite number ≥ 0
    ///   (checked even when the caller's tolerances override it: a damaged attribute is a damaged file).
    static func tolerance(options: VerifyOptions, reference: any CheckpointReader) throws -> (Tolerance, String) {
        let referenceAtol = try ReferenceLayout.tolerance("atol", of: reference)
        let referenceRtol = try ReferenceLayout.tolerance("rtol", of: reference)
        let tolerance = Tolerance(absolute: options.atol ?? referenceAtol ?? defaultTolerance, relative: options.rtol ?? referenceRtol ?? defaultTolerance)
        let source = options.atol != nil || options.rtol != nil ? "command line"
            : (referenceAtol != nil || referenceRtol != nil ? "reference file attributes" : "default")
        return (tolerance, source)
    }

    /// Runs the reference inputs through `model`, keeping every output a reference can hold.
    /// - Throws: ``PipelineError`` for malformed references or a model that cannot run them.
    static func forward(model: PKMBertModel, checkpointName: String, reference: any CheckpointReader) throws -> (ModelInputs, ModelOutputs) {
        let inputs = try ReferenceLayout.readInputs(from: reference)
        try ReferenceLayout.check(inputs, fit: model.config, path: reference.url.path)
        do {
            return (inputs, try model.forward(inputs, collectHiddenStates: true, collectMemoryTraces: true))
        } catch let error as ModelError {
            throw PipelineError.model(checkpoint: checkpointName, underlying: error)
        }
    }

    /// Verifies an already built model against an opened reference.
    /// - Throws: ``PipelineError`` or ``FormatError`` for malformed references.
    public static func verify(model: PKMBertModel, checkpointName: String, reference: any CheckpointReader,
                              options: VerifyOptions = VerifyOptions()) throws -> VerifyReport {
        let start = Date()
        let (inputs, outputs) = try forward(model: model, checkpointName: checkpointName, reference: reference)
        let (tolerance, source) = try tolerance(options: options, reference: reference)
        return try compare(outputs, inputs: inputs, config: model.config, checkpointName: checkpointName, reference: reference,
                           tolerance: tolerance, toleranceSource: source, strict: options.strict, start: start)
    }

    /// Compares outputs already computed with every output the reference holds.
    static func compare(_ outputs: ModelOutputs, inputs: ModelInputs, config: ModelConfig, checkpointName: String,
                        reference: any CheckpointReader, tolerance: Tolerance, toleranceSource source: String,
                        strict: Bool = false, start: Date) throws -> VerifyReport {
        let names = Set(reference.tensorInfos.map(\.name))
        let (batch, sequence, d) = (inputs.batchSize, inputs.sequenceLength, config.hiddenSize)
        var comparisons: [OutputComparison] = []
        var skipped: [String] = []
        var notProduced: [String] = []

        func floats(_ tensor: ReferenceTensor, shape: [Int]) throws -> [Float] {
            let values = try reference.tensor(named: tensor.name)
            guard values.shape == shape else {
                throw PipelineError.invalidReference(path: reference.url.path, reason: "\(tensor.displayPath) has shape \(values.shape), expected \(shape)")
            }
            return values.floatValues()
        }
        func compareValues(_ tensor: ReferenceTensor, _ actual: [Float], shape: [Int]) throws {
            guard names.contains(tensor.name) else { skipped.append("\(tensor.displayPath) (not in reference)"); return }
            comparisons.append(Compare.values(name: tensor.path, actual: actual, expected: try floats(tensor, shape: shape), shape: shape, tolerance: tolerance))
        }

        if names.contains(ReferenceTensor.lastHiddenState.name) {
            try compareValues(.lastHiddenState, outputs.lastHiddenState, shape: [batch, sequence, d])
        } else {
            skipped.append("\(ReferenceTensor.lastHiddenState.displayPath) (not in reference)")
        }
        if let pooled = outputs.poolerOutput {
            try compareValues(.poolerOutput, pooled, shape: [batch, d])
        } else if names.contains(ReferenceTensor.poolerOutput.name) {
            skipped.append("\(ReferenceTensor.poolerOutput.displayPath) (the checkpoint has no pooler)")
            notProduced.append(ReferenceTensor.poolerOutput.displayPath)
        }
        var headTensors: [ReferenceTensor] = []
        if let head = outputs.head {
            if let logits = head.logits {
                headTensors.append(.logits)
                try compareValues(.logits, logits, shape: head.logitsShape)
                if head.kind == .maskedLM, names.contains(ReferenceTensor.logits.name), var comparison = comparisons.popLast() {
                    let expected = try floats(.logits, shape: head.logitsShape)
                    let mask = inputs.attentionMask
                    let stats = Compare.distributions(actual: logits, expected: expected, width: head.logitsShape[2]) { mask?[$0] ?? 1 != 0 }
                    comparison.top1Agreement = stats.agreement
                    comparison.distributionPositions = stats.positions
                    comparison.meanKLDivergence = stats.meanKL
                    comparisons.append(comparison)
                }
            }
            if let start = head.startLogits, let end = head.endLogits {
                headTensors += [.startLogits, .endLogits]
                try compareValues(.startLogits, start, shape: [batch, sequence])
                try compareValues(.endLogits, end, shape: [batch, sequence])
            }
        }
        for n in 0...config.layerCount where names.contains(ReferenceTensor.hiddenState(n).name) {
            try compareValues(.hiddenState(n), outputs.hiddenStates[n], shape: [batch, sequence, d])
        }
        if !names.contains(ReferenceTensor.hiddenState(0).name) { skipped.append("/outputs/hidden_states (not in reference)") }
        for (layer, trace) in outputs.memoryTraces.sorted(by: { $0.key < $1.key }) {
            let indices = ReferenceTensor.memoryIndices(layer: layer), scores = ReferenceTensor.memoryScores(layer: layer)
            var expectedWeights: [Float]?
            if names.contains(scores.name) {
                let expected = try floats(scores, shape: trace.shape)
                expectedWeights = expected
                comparisons.append(Compare.values(name: scores.path, actual: trace.weights, expected: expected, shape: trace.shape, tolerance: tolerance))
            } else {
                skipped.append("\(scores.displayPath) (not in reference)")
            }
            if names.contains(indices.name) {
                let tensor = try reference.tensor(named: indices.name)
                guard tensor.shape == trace.shape else {
                    throw PipelineError.invalidReference(path: reference.url.path, reason: "\(indices.displayPath) has shape \(tensor.shape), expected \(trace.shape)")
                }
                comparisons.append(Compare.indices(name: indices.path, actual: trace.indices, expected: tensor.int64Values(),
                                                   expectedWeights: expectedWeights, shape: trace.shape,
                                                   heads: trace.memory.config.headCount, tolerance: tolerance,
                                                   score: trace.score(token:head:slot:)))
            } else {
                skipped.append("\(indices.displayPath) (not in reference)")
            }
        }
        // Every output the reference holds is compared, or named: memory outputs for layers without a memory and hidden
        // states past the model's depth are a mismatch of models; anything else under /outputs is listed as skipped.
        var known = Set(([ReferenceTensor.lastHiddenState, .poolerOutput] + headTensors).map(\.name))
        for n in 0...config.layerCount { known.insert(ReferenceTensor.hiddenState(n).name) }
        for layer in outputs.memoryTraces.keys {
            known.insert(ReferenceTensor.memoryIndices(layer: layer).name)
            known.insert(ReferenceTensor.memoryScores(layer: layer).name)
        }
        for info in reference.tensorInfos where info.name.hasPrefix("outputs.") && !known.contains(info.name) {
            let shown = "/" + info.name.replacingOccurrences(of: ".", with: "/")
            if let layer = ReferenceLayout.memoryLayer(ofName: info.name), outputs.memoryTraces[layer] == nil {
                throw PipelineError.invalidReference(path: reference.url.path, reason: "reference has memory outputs for layer \(layer) but the checkpoint has no memory there")
            }
            let parts = info.name.split(separator: ".")
            if parts.count == 3, parts[1] == "hidden_states" {
                throw PipelineError.invalidReference(path: reference.url.path, reason: "reference has \(shown) but the model has hidden states 0…\(config.layerCount) (embeddings and \(config.layerCount) layers): it was made by another model")
            }
            skipped.append("\(shown) (not an output this model produces)")
            notProduced.append(shown)
        }
        return VerifyReport(checkpoint: checkpointName, reference: reference.url.path, tolerance: tolerance, toleranceSource: source,
                            batchSize: batch, sequenceLength: sequence, outputs: comparisons, skipped: skipped,
                            notProduced: notProduced, strict: strict,
                            passed: !comparisons.isEmpty && comparisons.allSatisfy(\.passed) && !(strict && !notProduced.isEmpty),
                            seconds: Date().timeIntervalSince(start))
    }
}

extension LoadedCheckpoint {
    /// `verify`: runs the reference's inputs through this checkpoint's model and compares every output the reference
    /// holds (`schemas/pkm-checkpoints.md` §5). A checkpoint storing float16/bfloat16 weights that fails at the requested tolerances is compared
    /// again (the same outputs, not a second forward pass) at tolerances matching its precision, and the report says
    /// what that means.
    /// - Parameter loadProgress: called while the weights are read, with (bytes read, total).
    /// - Throws: ``FormatError`` / ``PipelineError`` for unreadable files or config problems; a numeric disagreement is
    ///   not an error but a report with `passed == false`.
    public func verify(against reference: LoadedCheckpoint, options: VerifyOptions = VerifyOptions(),
                       loadProgress: ((Int, Int) -> Void)? = nil) throws -> VerifyReport {
        let model = try model(byteProgress: loadProgress)
        let start = Date()
        let (inputs, outputs) = try Verifier.forward(model: model, checkpointName: url.path, reference: reference.reader)
        let (tolerance, source) = try Verifier.tolerance(options: options, reference: reference.reader)
        var report = try Verifier.compare(outputs, inputs: inputs, config: model.config, checkpointName: url.path, reference: reference.reader,
                                          tolerance: tolerance, toleranceSource: source, strict: options.strict, start: start)
        let floats = try resolved().report.mapped.map(\.dtype).filter(\.isFloatingPoint)
        guard let narrowest = floats.min(by: { $0.byteSize < $1.byteSize || ($0.byteSize == $1.byteSize && $0 == .bfloat16) }),
              narrowest.byteSize < DType.float32.byteSize else { return report }
        report.storagePrecision = narrowest.displayName
        let suggested = Verifier.suggestedTolerance(for: narrowest)
        guard !report.passed else {
            report.precisionNote = "the checkpoint stores \(narrowest.displayName) weights (widened exactly to float32 to compute)"
            return report
        }
        var note = "the checkpoint stores \(narrowest.displayName) weights: against a reference computed from float32 weights, outputs differ by \(narrowest.displayName) rounding (about \(narrowest == .bfloat16 ? "3" : "4") significant digits)"
        if suggested.absolute > report.tolerance.absolute || suggested.relative > report.tolerance.relative {
            let looser = Tolerance(absolute: max(suggested.absolute, report.tolerance.absolute), relative: max(suggested.relative, report.tolerance.relative))
            let again = try Verifier.compare(outputs, inputs: inputs, config: model.config, checkpointName: url.path, reference: reference.reader,
                                             tolerance: looser, toleranceSource: source, strict: options.strict, start: start)
            report.suggestedTolerance = again.tolerance
            report.withSuggestedTolerance = VerifyReport.SuggestedOutcome(passed: again.passed, beyondTolerance: again.outputs.reduce(0) { $0 + $1.beyondTolerance },
                                                                          failing: again.outputs.filter { !$0.passed }.map(\.name))
            if again.outputs.contains(where: { $0.kind == "indices" && !$0.passed }) {
                note += "; memory slot ids differ too: rounded weights change which slots win, which no tolerance hides"
            }
        }
        report.precisionNote = note
        return report
    }
}
