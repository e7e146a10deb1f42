import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
import PKMModel

/// Memory usage of one layer over a set of inputs (spec §8, after Lample et al. 2019).
public struct LayerUsage: Sendable, Codable {
    public var layer: Int
    public var mode: MemoryMode
    public var slots: Int
    /// Token positions the statistics cover (padding excluded).
    public var tokens: Int
    /// Share of slots picked at least once, in percent.
    public var usagePercent: Double
    /// KL(p‖uniform) = log N² + Σ p log p for p = summed weights normalised.
    public var klWeights: Double
    /// The same for p = pick counts normalised.
    public var klCounts: Double
    /// Fewest slots holding 50 / 90 / 99 % of the total weight.
    public var slotsFor50Percent: Int
    public var slotsFor90Percent: Int
    public var slotsFor99Percent: Int
}

/// Result of `usage`.
public struct UsageReport: Sendable, Codable {
    public var checkpoint: String
    public var inputs: String
    public var batchSize: Int
    public var sequenceLength: Int
    public var layers: [LayerUsage]
}

/// `usage`: accumulates per slot the summed weight and pick count over inputs.
public enum UsageAnalyzer {
    /// Runs the inputs (spec §5 `/inputs`) through the model and measures every memory layer.
    /// Padding positions (attention mask 0) are excluded from the statistics.
    /// - Throws: ``PipelineError``, ``FormatError``.
    public static func run(checkpoint url: URL, inputs inputsURL: URL, configURL: URL? = nil,
                           limits: ReaderLimits = ReaderLimits()) throws -> UsageReport {
        let checkpoint = try ResolvedCheckpoint(url: url, configURL: configURL, limits: limits)
        let model = try checkpoint.makeModel()
        guard let memory = model.config.memory else {
            throw PipelineError.invalidArgument(name: url.path, reason: "the checkpoint has no memory layers (its config has no pkm object)")
        }
        let reader = try Checkpoints.open(inputsURL, limits: limits)
        let inputs = try ReferenceLayout.readInputs(from: reader)
        let outputs: ModelOutputs
        do {
            outputs = try model.forward(inputs, collectMemoryTraces: true)
        } catch let error as ModelError {
            throw PipelineError.model(checkpoint: url.path, underlying: error)
        }
        var layers: [LayerUsage] = []
        for (layer, trace) in outputs.memoryTraces.sorted(by: { $0.key < $1.key }) {
            layers.append(measure(trace: trace, mask: inputs.attentionMask, slots: memory.slotCount, mode: memory.mode(ofLayer: layer) ?? .residual))
        }
        return UsageReport(checkpoint: url.path, inputs: inputsURL.path, batchSize: inputs.batchSize,
                           sequenceLength: inputs.sequenceLength, layers: layers)
    }

    /// The spec §8 statistics of one trace.
    public static func measure(trace: MemoryTrace, mask: [Int]?, slots: Int, mode: MemoryMode) -> LayerUsage {
        let perToken = trace.shape[2] * trace.shape[3]
        let tokens = trace.shape[0] * trace.shape[1]
        var weights = [Double](repeating: 0, count: slots)
        var counts = [Double](repeating: 0, count: slots)
        var used = 0
        for token in 0..<tokens where (mask?[token] ?? 1) != 0 {
            used += 1
            for j in 0..<perToken {
                let slot = Int(trace.indices[token * perToken + j])
                guard slot >= 0, slot < slots else { continue }
                weights[slot] += Double(trace.weights[token * perToken + j])
                counts[slot] += 1
            }
        }
        func kl(_ values: [Double]) -> Double {
            let total = values.reduce(0, +)
            guard total > 0 else { return 0 }
            var sum = log(Double(slots))
            for value in values where value > 0 {
                let p = value / total
                sum += p * log(p)
            }
            return sum
        }
        let sorted = weights.sorted(by: >)
        let total = sorted.reduce(0, +)
        func slotsHolding(_ share: Double) -> Int {
            guard total > 0 else { return 0 }
            var running = 0.0
            for (index, value) in sorted.enumerated() {
                running += value
                if running >= share * total * (1 - 1e-12) { return index + 1 }
            }
            return sorted.count
        }
        let picked = counts.filter { $0 > 0 }.count
        return LayerUsage(layer: trace.layer, mode: mode, slots: slots, tokens: used,
                          usagePercent: 100 * Double(picked) / Double(slots), klWeights: kl(weights), klCounts: kl(counts),
                          slotsFor50Percent: slotsHolding(0.5), slotsFor90Percent: slotsHolding(0.9), slotsFor99Percent: slotsHolding(0.99))
    }
}
