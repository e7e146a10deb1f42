import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel

/// Memory usage of one layer over a set of inputs (`schemas/pkm-checkpoints.md` §8, after Lample et al. 2019).
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
    /// Per head: share of the N² slots that head picked at least once, in percent.
    public var headUsagePercent: [Double]
    /// The sorted slot-weight curve, for plots: slots sorted by summed weight (heaviest first);
    /// point i says the heaviest `slotShare` of all slots carry `weightShare` of the total weight.
    /// At most ~100 points, spaced evenly on a log scale of the slot share.
    public var weightCurve: [CurvePoint]

    /// One point of ``weightCurve``.
    public struct CurvePoint: Sendable, Codable, Equatable {
        /// Fraction of all slots (0–1], heaviest first.
        public var slotShare: Double
        /// Fraction of the total weight those slots carry (0–1].
        public var weightShare: Double
    }
}

/// Result of `usage`.
public struct UsageReport: Sendable, Codable {
    public var checkpoint: String
    public var inputs: String
    public var batchSize: Int
    public var sequenceLength: Int
    public var layers: [LayerUsage]
}

/// Per-slot statistics of one memory layer, accumulated batch by batch (memory bounded by the
/// slot table, not by the number of inputs).
public struct UsageAccumulator: Sendable {
    public let layer: Int
    public let mode: MemoryMode
    public let slots: Int
    /// Summed softmax weight per slot.
    public private(set) var weights: [Double]
    /// Pick count per slot.
    public private(set) var counts: [Double]
    /// Token positions seen (padding excluded).
    public private(set) var tokens = 0
    /// Per head, one bit per slot: picked by that head at least once.
    private var headPicked: [[UInt64]]

    public init(layer: Int, mode: MemoryMode, slots: Int, heads: Int = 1) {
        self.layer = layer
        self.mode = mode
        self.slots = slots
        weights = [Double](repeating: 0, count: slots)
        counts = [Double](repeating: 0, count: slots)
        headPicked = [[UInt64]](repeating: [UInt64](repeating: 0, count: (slots + 63) / 64), count: max(heads, 1))
    }

    /// Adds one batch's trace; `mask` (`[batch · sequence]`, 0 = padding) excludes positions.
    public mutating func add(_ trace: MemoryTrace, mask: [Int]?) {
        let heads = trace.shape[2], knn = trace.shape[3]
        let perToken = heads * knn
        let positions = trace.shape[0] * trace.shape[1]
        if headPicked.count < heads {
            headPicked += [[UInt64]](repeating: [UInt64](repeating: 0, count: (slots + 63) / 64), count: heads - headPicked.count)
        }
        for token in 0..<positions where (mask?[token] ?? 1) != 0 {
            tokens += 1
            for j in 0..<perToken {
                let slot = trace.indices[token * perToken + j]
                guard slot >= 0, slot < Int64(slots) else { continue }
                let index = Int(slot)
                weights[index] += Double(trace.weights[token * perToken + j])
                counts[index] += 1
                headPicked[j / knn][index >> 6] |= 1 << UInt64(index & 63)
            }
        }
    }

    /// The `schemas/pkm-checkpoints.md` §8 statistics of everything added so far.
    public var usage: LayerUsage {
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
        let headUsage = headPicked.map { bits in
            slots > 0 ? 100 * Double(bits.reduce(0) { $0 + $1.nonzeroBitCount }) / Double(slots) : 0
        }
        return LayerUsage(layer: layer, mode: mode, slots: slots, tokens: tokens,
                          usagePercent: slots > 0 ? 100 * Double(picked) / Double(slots) : 0,
                          klWeights: Self.klToUniform(weights), klCounts: Self.klToUniform(counts),
                          slotsFor50Percent: slotsHolding(0.5), slotsFor90Percent: slotsHolding(0.9), slotsFor99Percent: slotsHolding(0.99),
                          headUsagePercent: headUsage, weightCurve: Self.curve(sortedWeights: sorted, total: total))
    }

    /// ~100 points of the cumulative weight share of the heaviest slots, log-spaced in slot share.
    static func curve(sortedWeights: [Double], total: Double) -> [LayerUsage.CurvePoint] {
        let count = sortedWeights.count
        guard count > 0, total > 0 else { return [] }
        var positions: [Int] = []
        let steps = 100
        for step in 0...steps {
            // From one slot to all of them, evenly on a log scale.
            let position = Int((pow(Double(count), Double(step) / Double(steps))).rounded())
            if positions.last != position { positions.append(min(max(position, 1), count)) }
        }
        var points: [LayerUsage.CurvePoint] = []
        var running = 0.0, next = 0
        for (index, value) in sortedWeights.enumerated() {
            running += value
            while next < positions.count, positions[next] == index + 1 {
                points.append(.init(slotShare: Double(index + 1) / Double(count), weightShare: min(1, running / total)))
                next += 1
            }
        }
        return points
    }

    /// KL(p ‖ uniform) = log n + Σ p log p, for p = `values` normalised (0 when they sum to 0).
    public static func klToUniform(_ values: [Double]) -> Double {
        let total = values.reduce(0, +)
        guard total > 0, !values.isEmpty else { return 0 }
        var sum = log(Double(values.count))
        for value in values where value > 0 {
            let p = value / total
            sum += p * log(p)
        }
        return sum
    }
}

/// `usage`: accumulates per slot the summed weight and pick count over inputs.
public enum UsageAnalyzer {
    /// Sequences per forward pass by default.
    public static let defaultBatchSize = 32

    /// The `schemas/pkm-checkpoints.md` §8 statistics of one trace.
    public static func measure(trace: MemoryTrace, mask: [Int]?, slots: Int, mode: MemoryMode) -> LayerUsage {
        var accumulator = UsageAccumulator(layer: trace.layer, mode: mode, slots: slots, heads: trace.shape[2])
        accumulator.add(trace, mask: mask)
        return accumulator.usage
    }
}

/// Options of ``LoadedCheckpoint/usage(_:options:progress:loadProgress:)`` and ``LoadedCheckpoint/usage(textFile:options:progress:)``.
public struct UsageOptions: Sendable {
    /// Sequences per forward pass (token-id inputs) or lines per forward pass (text).
    public var batchSize = UsageAnalyzer.defaultBatchSize
    /// Text: truncate to this many tokens (default: the tokenizer's truncation, else the model's positions).
    public var maxLength: Int?
    public init(batchSize: Int = UsageAnalyzer.defaultBatchSize, maxLength: Int? = nil) {
        self.batchSize = batchSize
        self.maxLength = maxLength
    }
}

extension LoadedCheckpoint {
    /// `usage`: runs the inputs of `source` (a file's `/inputs`, given ids, or seeded random ids) through the model in
    /// batches of ``UsageOptions/batchSize`` sequences and measures every memory layer (`schemas/pkm-checkpoints.md` §8); padding positions
    /// (attention mask 0) are excluded.
    /// - Parameters:
    ///   - progress: called after each batch with (sequences done, total).
    ///   - loadProgress: called while the weights are read, with (bytes read, total).
    /// - Throws: ``PipelineError``, ``FormatError``.
    public func usage(_ source: InputSource, options: UsageOptions = UsageOptions(), progress: ((Int, Int) -> Void)? = nil,
                      loadProgress: ((Int, Int) -> Void)? = nil) throws -> UsageReport {
        let batchSize = options.batchSize
        guard batchSize > 0 else { throw PipelineError.invalidSetting(.batchSize, value: nil, reason: "must be at least 1, is \(batchSize)") }
        let model = try model(byteProgress: loadProgress)
        guard let memory = model.config.memory else {
            throw PipelineError.unusableInput(path: url.path, reason: "the checkpoint has no memory layers (its config has no pkm object)")
        }
        let inputs = try source.inputs(for: model.config, read: self.options.read)
        var accumulators = memory.layers.sorted().map {
            UsageAccumulator(layer: $0, mode: memory.mode(ofLayer: $0) ?? .residual, slots: memory.slotCount, heads: memory.headCount)
        }
        for start in stride(from: 0, to: inputs.batchSize, by: batchSize) {
            let batch = inputs.sequences(start..<min(inputs.batchSize, start + batchSize))
            let outputs: ModelOutputs
            do {
                outputs = try model.forward(batch, collectMemoryTraces: true)
            } catch let error as ModelError {
                throw PipelineError.model(checkpoint: url.path, underlying: error)
            }
            for index in accumulators.indices {
                if let trace = outputs.memoryTraces[accumulators[index].layer] { accumulators[index].add(trace, mask: batch.attentionMask) }
            }
            progress?(start + batch.batchSize, inputs.batchSize)
        }
        return UsageReport(checkpoint: url.path, inputs: source.label, batchSize: inputs.batchSize,
                           sequenceLength: inputs.sequenceLength, layers: accumulators.map(\.usage))
    }
}
