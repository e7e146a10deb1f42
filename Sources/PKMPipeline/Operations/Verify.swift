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
    /// Where the tolerances came from (`--atol/--rtol`, `reference attributes`, `default`).
    public var toleranceSource: String
    public var batchSize: Int
    public var sequenceLength: Int
    public var outputs: [OutputComparison]
    /// Optional outputs the reference does not hold, or the model cannot produce.
    public var skipped: [String]
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

/// `verify`: runs the reference inputs through the Swift model and compares every output present (spec §5).
public enum Verifier {
    /// Default tolerance when neither the caller nor the reference file gives one.
    public static let defaultTolerance = 1e-4

    /// Verifies a checkpoint against a reference file.
    /// - Parameters:
    ///   - atol, rtol: override the reference's suggested tolerances.
    /// - Throws: ``FormatError`` / ``PipelineError`` for unreadable files or config problems (exit 2);
    ///   a numeric disagreement is not an error but a report with `passed == false` (exit 1).
    public static func run(checkpoint url: URL, reference referenceURL: URL, configURL: URL? = nil,
                           atol: Double? = nil, rtol: Double? = nil, limits: ReaderLimits = ReaderLimits(),
                           memory: MemoryImportOptions = MemoryImportOptions()) throws -> VerifyReport {
        try run(checkpoint: url, reference: referenceURL, configURL: configURL, atol: atol, rtol: rtol, limits: limits, memory: memory,
                loadProgress: nil)
    }

    /// Verifies a checkpoint against a reference file, reporting the weights read while the model loads.
    /// - Parameter loadProgress: called after each tensor with (bytes read, total).
    /// - Throws: as ``run(checkpoint:reference:configURL:atol:rtol:limits:)``.
    public static func run(checkpoint url: URL, reference referenceURL: URL, configURL: URL? = nil,
                           atol: Double? = nil, rtol: Double? = nil, limits: ReaderLimits = ReaderLimits(),
                           memory: MemoryImportOptions = MemoryImportOptions(),
                           loadProgress: ((Int, Int) -> Void)?) throws -> VerifyReport {
        let checkpoint = try ResolvedCheckpoint(url: url, configURL: configURL, limits: limits, memory: memory)
        let model = try checkpoint.makeModel(byteProgress: loadProgress)
        let reference = try Checkpoints.open(referenceURL, limits: limits)
        var report = try verify(model: model, checkpointName: url.path, reference: reference, atol: atol, rtol: rtol)
        let floats = checkpoint.report.mapped.map(\.dtype).filter(\.isFloatingPoint)
        guard let narrowest = floats.min(by: { $0.byteSize < $1.byteSize || ($0.byteSize == $1.byteSize && $0 == .bfloat16) }),
              narrowest.byteSize < DType.float32.byteSize else { return report }
        report.storagePrecision = narrowest.displayName
        let suggested = suggestedTolerance(for: narrowest)
        guard !report.passed else {
            report.precisionNote = "the checkpoint stores \(narrowest.displayName) weights (widened exactly to float32 to compute)"
            return report
        }
        var note = "the checkpoint stores \(narrowest.displayName) weights: against a reference computed from float32 weights, outputs differ by \(narrowest.displayName) rounding (about \(narrowest == .bfloat16 ? "3" : "4") significant digits)"
        if suggested.absolute > report.tolerance.absolute || suggested.relative > report.tolerance.relative {
            let again = try verify(model: model, checkpointName: url.path, reference: reference,
                                   atol: max(suggested.absolute, report.tolerance.absolute), rtol: max(suggested.relative, report.tolerance.relative))
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

    /// Verifies an already built model against an opened reference.
    /// - Throws: ``PipelineError`` or ``FormatError`` for malformed references.
    public static func verify(model: PKMBertModel, checkpointName: String, reference: any CheckpointReader,
                              atol: Double? = nil, rtol: Double? = nil) throws -> VerifyReport {
        let start = Date()
        let referenceAtol = reference.metadata["atol"].flatMap(Double.init)
        let referenceRtol = reference.metadata["rtol"].flatMap(Double.init)
        let tolerance = Tolerance(absolute: atol ?? referenceAtol ?? defaultTolerance, relative: rtol ?? referenceRtol ?? defaultTolerance)
        let source = atol != nil || rtol != nil ? "command line" : (referenceAtol != nil || referenceRtol != nil ? "reference file attributes" : "default")
        let inputs = try ReferenceLayout.readInputs(from: reference)
        let outputs: ModelOutputs
        do {
            outputs = try model.forward(inputs, collectHiddenStates: true, collectMemoryTraces: true)
        } catch let error as ModelError {
            throw PipelineError.model(checkpoint: checkpointName, underlying: error)
        }
        let names = Set(reference.tensorInfos.map(\.name))
        let config = model.config
        let (batch, sequence, d) = (inputs.batchSize, inputs.sequenceLength, config.hiddenSize)
        var comparisons: [OutputComparison] = []
        var skipped: [String] = []

        func floats(_ name: String, shape: [Int]) throws -> [Float] {
            let tensor = try reference.tensor(named: name)
            guard tensor.shape == shape else {
                throw PipelineError.invalidReference(path: reference.url.path, reason: "/\(slashed(name)) has shape \(tensor.shape), expected \(shape)")
            }
            return tensor.floatValues()
        }
        func compareValues(_ name: String, _ actual: [Float], shape: [Int]) throws {
            guard names.contains(name) else { skipped.append("/\(slashed(name)) (not in reference)"); return }
            comparisons.append(Compare.values(name: slashed(name), actual: actual, expected: try floats(name, shape: shape), shape: shape, tolerance: tolerance))
        }

        if names.contains(ReferenceLayout.lastHiddenState) {
            try compareValues(ReferenceLayout.lastHiddenState, outputs.lastHiddenState, shape: [batch, sequence, d])
        } else {
            skipped.append("/outputs/last_hidden_state (not in reference)")
        }
        if let pooled = outputs.poolerOutput {
            try compareValues(ReferenceLayout.poolerOutput, pooled, shape: [batch, d])
        } else if names.contains(ReferenceLayout.poolerOutput) {
            skipped.append("/outputs/pooler_output (the checkpoint has no pooler)")
        }
        for n in 0...config.layerCount {
            let name = ReferenceLayout.hiddenState(n)
            if names.contains(name) { try compareValues(name, outputs.hiddenStates[n], shape: [batch, sequence, d]) }
        }
        if !names.contains(ReferenceLayout.hiddenState(0)) { skipped.append("/outputs/hidden_states (not in reference)") }
        for (layer, trace) in outputs.memoryTraces.sorted(by: { $0.key < $1.key }) {
            let indicesName = ReferenceLayout.memoryIndices(layer), scoresName = ReferenceLayout.memoryScores(layer)
            var expectedWeights: [Float]?
            if names.contains(scoresName) {
                let expected = try floats(scoresName, shape: trace.shape)
                expectedWeights = expected
                comparisons.append(Compare.values(name: slashed(scoresName), actual: trace.weights, expected: expected, shape: trace.shape, tolerance: tolerance))
            } else {
                skipped.append("/\(slashed(scoresName)) (not in reference)")
            }
            if names.contains(indicesName) {
                let tensor = try reference.tensor(named: indicesName)
                guard tensor.shape == trace.shape else {
                    throw PipelineError.invalidReference(path: reference.url.path, reason: "/\(slashed(indicesName)) has shape \(tensor.shape), expected \(trace.shape)")
                }
                comparisons.append(Compare.indices(name: slashed(indicesName), actual: trace.indices, expected: tensor.int64Values(),
                                                   expectedWeights: expectedWeights, shape: trace.shape,
                                                   heads: trace.memory.config.headCount, tolerance: tolerance,
                                                   score: trace.score(token:head:slot:)))
            } else {
                skipped.append("/\(slashed(indicesName)) (not in reference)")
            }
        }
        // Reference memory outputs for layers the model has no memory at are a mismatch of models.
        for info in reference.tensorInfos where info.name.hasPrefix("outputs.memory.") {
            let parts = info.name.split(separator: ".")
            if parts.count >= 3, let layer = Int(parts[2]), outputs.memoryTraces[layer] == nil {
                throw PipelineError.invalidReference(path: reference.url.path, reason: "reference has memory outputs for layer \(layer) but the checkpoint has no memory there")
            }
        }
        return VerifyReport(checkpoint: checkpointName, reference: reference.url.path, tolerance: tolerance, toleranceSource: source,
                            batchSize: batch, sequenceLength: sequence, outputs: comparisons, skipped: skipped,
                            passed: !comparisons.isEmpty && comparisons.allSatisfy(\.passed), seconds: Date().timeIntervalSince(start))
    }

    static func slashed(_ name: String) -> String { name.replacingOccurrences(of: ".", with: "/") }
}
