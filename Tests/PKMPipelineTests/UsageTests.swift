import Foundation
import PKMTensor
@testable import PKMModel
import PKMTestSupport
import Testing
@testable import PKMPipeline

@Suite("Usage metrics")
struct UsageTests {
    /// A trace of `tokens` tokens, one head, k = 2, over 4 slots.
    static func trace(indices: [Int64], weights: [Float], tokens: Int) throws -> MemoryTrace {
        let config = MemoryConfig(layers: [0], modes: [.residual], keyCount: 2, headCount: 1, knn: 2, keyDimension: 2,
                                  valueDimension: 1, queryBatchNorm: false, queryBias: false)
        let tensors: [String: Tensor] = [
            "m.keys": try .init(float32: [0, 0, 0, 0], shape: [1, 2, 2, 1]),
            "m.values.weight": try .init(float32: [0, 0, 0, 0], shape: [4, 1]),
            "m.query_proj.query_mlps.0.weight": try .init(float32: [0, 0], shape: [2, 1]),
        ]
        let memory = try ProductKeyMemory(prefix: "m.", config: config, inputWidth: 1, loader: WeightLoader { tensors[$0] })
        return MemoryTrace(layer: 0, indices: indices, weights: weights, shape: [1, tokens, 1, 2],
                           queries: [Float](repeating: 0, count: tokens * 2), memory: memory)
    }

    @Test("usage %, KL to uniform and the 50/90/99 % slot counts equal hand-computed values")
    func handComputed() throws {
        // Token 0 picks slots 0 (0.75) and 1 (0.25); token 1 picks 0 (0.5) and 2 (0.5); token 2 is padding.
        let trace = try Self.trace(indices: [0, 1, 0, 2, 3, 3], weights: [0.75, 0.25, 0.5, 0.5, 0.9, 0.1], tokens: 3)
        let usage = UsageAnalyzer.measure(trace: trace, mask: [1, 1, 0], slots: 4, mode: .residual)
        #expect(usage.tokens == 2)
        #expect(usage.usagePercent == 75)                    // slots 0, 1, 2 of 4
        // Summed weights 1.25, 0.25, 0.5, 0 → p = 0.625, 0.125, 0.25, 0.
        let pw = [0.625, 0.125, 0.25]
        let klWeights = log(4.0) + pw.map { $0 * log($0) }.reduce(0, +)
        #expect(abs(usage.klWeights - klWeights) < 1e-12)
        // Counts 2, 1, 1, 0 → p = 0.5, 0.25, 0.25.
        let klCounts = log(4.0) + 0.5 * log(0.5) + 2 * 0.25 * log(0.25)
        #expect(abs(usage.klCounts - klCounts) < 1e-12)
        // Sorted weights 1.25, 0.5, 0.25 of 2: 50 % needs 1 slot, 90 % needs 3 (1.75 < 1.8), 99 % needs 3.
        #expect(usage.slotsFor50Percent == 1 && usage.slotsFor90Percent == 3 && usage.slotsFor99Percent == 3)
        // Uniform use has KL 0; a single slot has KL log n.
        #expect(abs(UsageAccumulator.klToUniform([1, 1, 1, 1])) < 1e-15)
        #expect(abs(UsageAccumulator.klToUniform([0, 3, 0, 0]) - log(4.0)) < 1e-15)
        #expect(UsageAccumulator.klToUniform([0, 0]) == 0)
    }

    @Test("usage over a reference file is the same in batches of 1 as in one batch")
    func batchesAgree() throws {
        let folder = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_two_memories_f16")
        let checkpoint = folder.appendingPathComponent("model.h5"), inputs = folder.appendingPathComponent("reference.h5")
        let whole = try LoadedCheckpoint(checkpoint).usage(.file(inputs), options: UsageOptions(batchSize: 64))
        var calls: [Int] = []
        let single = try LoadedCheckpoint(checkpoint).usage(.file(inputs), options: UsageOptions(batchSize: 1)) { done, _ in calls.append(done) }
        #expect(calls == [1, 2, 3])
        #expect(whole.layers.count == 2)
        for (a, b) in zip(whole.layers, single.layers) {
            #expect(a.tokens == b.tokens && a.usagePercent == b.usagePercent && a.slotsFor90Percent == b.slotsFor90Percent)
            #expect(abs(a.klWeights - b.klWeights) < 1e-9 && a.klCounts == b.klCounts)
        }
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(checkpoint).usage(.file(inputs), options: UsageOptions(batchSize: 0)) }
    }

    @Test("float16 ⇄ bfloat16 conversions and narrowing are warned about")
    func conversionWarnings() {
        let diagnostics = DTypePolicy.conversionDiagnostics(from: [.float16, .bfloat16, .float64, .float32, .int64],
                                                            to: [.bfloat16, .float16, .bfloat16, .float32, .int64])
        let text = diagnostics.map(\.message).joined(separator: "\n")
        #expect(diagnostics.count == 3, "\(text)")
        #expect(text.contains("1 tensor narrowed to bfloat16"))
        #expect(text.contains("float16 tensor stored as bfloat16"))
        #expect(text.contains("bfloat16 tensor stored as float16"))
    }
}
