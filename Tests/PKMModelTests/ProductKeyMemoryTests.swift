import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMModel

@Suite("Product-key memory")
struct ProductKeyMemoryTests {
    /// A memory with small-integer keys, queries and inputs: every score is an exact integer, so
    /// there are many exact ties and the product-key search must match the brute-force ranking
    /// over all N² slots bit for bit, ties broken by lower slot index.
    @Test("top-k over product keys equals brute force over all N² slots, ties by lower index",
          arguments: [(8, 4, 2), (8, 8, 1), (16, 5, 3), (6, 1, 2)])
    func exactTopK(keyCount: Int, knn: Int, heads: Int) throws {
        let d = 6, k = 4
        let config = MemoryConfig(layers: [0], modes: [.residual], keyCount: keyCount, headCount: heads, knn: knn, keyDimension: k,
                                  valueDimension: d, queryBatchNorm: false, queryBias: true)
        var generator = SyntheticModel.Generator(seed: UInt64(keyCount * 100 + knn))
        func ints(_ count: Int, _ range: Range<Int>) -> [Float] { (0..<count).map { _ in Float(generator.int(range)) } }
        let keys = ints(heads * 2 * keyCount * (k / 2), -2..<3)
        let values = (0..<(keyCount * keyCount * d)).map { _ in generator.symmetric() }
        let queryWeight = ints(heads * k * d, -1..<2)
        let queryBias = ints(heads * k, -1..<2)
        let tensors: [String: Tensor] = [
            "m.keys": try Tensor(float32: keys, shape: [heads, 2, keyCount, k / 2]),
            "m.values.weight": try Tensor(float32: values, shape: [keyCount * keyCount, d]),
            "m.query_proj.query_mlps.0.weight": try Tensor(float32: queryWeight, shape: [heads * k, d]),
            "m.query_proj.query_mlps.0.bias": try Tensor(float32: queryBias, shape: [heads * k]),
        ]
        let memory = try ProductKeyMemory(prefix: "m.", config: config, inputWidth: d, loader: WeightLoader { tensors[$0] })
        let rows = 7
        let x = ints(rows * d, -2..<3)
        var output = [Float](repeating: 0, count: rows * d)
        let (indices, weights) = Self.run(memory, x, rows: rows, into: &output)
        var expectedOutput = [Float](repeating: 0, count: rows * d)
        for row in 0..<rows {
            // Query, exact in float for small integers.
            var q = [Float](repeating: 0, count: heads * k)
            for o in 0..<(heads * k) {
                var sum = queryBias[o]
                for i in 0..<d { sum += queryWeight[o * d + i] * x[row * d + i] }
                q[o] = sum
            }
            for head in 0..<heads {
                var all: [(score: Float, slot: Int)] = []
                for a in 0..<keyCount {
                    for b in 0..<keyCount {
                        var s1: Float = 0, s2: Float = 0
                        for j in 0..<(k / 2) {
                            s1 += keys[((head * 2) * keyCount + a) * (k / 2) + j] * q[head * k + j]
                            s2 += keys[((head * 2 + 1) * keyCount + b) * (k / 2) + j] * q[head * k + k / 2 + j]
                        }
                        all.append((s1 + s2, a * keyCount + b))
                    }
                }
                all.sort { $0.score > $1.score || ($0.score == $1.score && $0.slot < $1.slot) }
                let top = Array(all.prefix(knn))
                let maximum = top[0].score
                let exps = top.map { Double(exp($0.score - maximum)) }
                let total = exps.reduce(0, +)
                for j in 0..<knn {
                    let at = (row * heads + head) * knn + j
                    #expect(Int(indices[at]) == top[j].slot, "row \(row) head \(head) rank \(j)")
                    #expect(abs(Double(weights[at]) - exps[j] / total) < 1e-6)
                    for i in 0..<d { expectedOutput[row * d + i] += Float(exps[j] / total) * values[top[j].slot * d + i] }
                }
            }
        }
        for i in 0..<(rows * d) { #expect(abs(output[i] - expectedOutput[i]) < 1e-5) }
    }

    /// Runs `memory` on `rows` tokens, adding into `output`; returns the traced slot ids and weights.
    static func run(_ memory: ProductKeyMemory, _ x: [Float], rows: Int, into output: inout [Float]) -> (indices: [Int64], weights: [Float]) {
        let count = rows * memory.config.headCount * memory.config.knn
        var indices = [Int64](repeating: -1, count: count)
        var weights = [Float](repeating: 0, count: count)
        var queries = [Float](repeating: 0, count: rows * memory.config.headCount * memory.config.keyDimension)
        x.withUnsafeBufferPointer { xb in
            output.withUnsafeMutableBufferPointer { o in
                indices.withUnsafeMutableBufferPointer { i in
                    weights.withUnsafeMutableBufferPointer { w in
                        queries.withUnsafeMutableBufferPointer { q in
                            memory.forward(xb.baseAddress!, rows: rows, addingInto: o.baseAddress!,
                                           trace: ProductKeyMemory.Trace(indices: i.baseAddress!, weights: w.baseAddress!, queries: q.baseAddress!))
                        }
                    }
                }
            }
        }
        return (indices, weights)
    }

    @Test("TopK keeps the best scores in order and breaks ties by lower index")
    func topKOrdering() {
        var top = TopK(capacity: 3)
        for (score, index) in [(1.0, 5), (3.0, 9), (3.0, 2), (2.0, 1), (3.0, 7), (0.5, 0)] as [(Float, Int)] {
            top.offer(score: score, index: index)
        }
        #expect(Array(top.indices.prefix(top.count)) == [2, 7, 9])
        #expect(Array(top.scores.prefix(top.count)) == [3, 3, 3])
    }

    @Test("TopK ranks NaN above every number, as PyTorch's topk does, NaNs by index")
    func topKNaN() {
        var top = TopK(capacity: 3)
        for (score, index) in [(1.0, 5), (Float.nan, 9), (3.0, 2), (Float.nan, 4), (-Float.infinity, 1)] as [(Float, Int)] {
            top.offer(score: score, index: index)
        }
        #expect(Array(top.indices.prefix(top.count)) == [4, 9, 2])
        #expect(top.scores[0].isNaN && top.scores[1].isNaN && top.scores[2] == 3)
    }

    /// N = 46,341 is the first sub-key count whose N² slots exceed `Int32.max`. The value table
    /// (N² × 1 float32 = 8.6 GB) is a sparse file mapped read-only: only the rows written exist.
    @Test("slot ids are 64-bit: n_keys 46,341 selects slot N²−1 = 2,147,488,280 and reads its value row")
    func slotsBeyondInt32() throws {
        let n = 46_341, slots = n * n
        #expect(slots > Int(Int32.max))
        let config = MemoryConfig(layers: [0], modes: [.residual], keyCount: n, headCount: 1, knn: 2, keyDimension: 2,
                                  valueDimension: 1, queryBatchNorm: false, queryBias: false)
        // keys[0, side, i] = i / N: for a positive query the best sub-key of each half is the last one.
        var keys = [Float](repeating: 0, count: 2 * n)
        for side in 0..<2 { for i in 0..<n { keys[side * n + i] = Float(i) / Float(n) } }
        let folder = try TemporaryFolder(prefix: "pkm-sparse-values")
        let url = folder.file("values.bin")
        let byteCount = slots * 4
        let descriptor = open(url.path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        try #require(ftruncate(descriptor, off_t(byteCount)) == 0)
        // The two best slots: (N−1, N−1) = N²−1, then (N−2, N−1) = N²−N−1, which ties with (N−1, N−2)
        // at score (2N−3)/N and wins by its lower slot id.
        for (slot, value) in [(slots - 1, Float(7)), (slots - n - 1, Float(-3))] {
            var bits = value.bitPattern.littleEndian
            try #require(pwrite(descriptor, &bits, 4, off_t(slot * 4)) == 4)
        }
        let mapped = try Data(contentsOf: url, options: .alwaysMapped)
        let tensors: [String: Tensor] = [
            "m.keys": try Tensor(float32: keys, shape: [1, 2, n, 1]),
            "m.values.weight": try Tensor(dtype: .float32, shape: [slots, 1], storage: mapped),
            "m.query_proj.query_mlps.0.weight": try Tensor(float32: [1, 1], shape: [2, 1]),
        ]
        let memory = try ProductKeyMemory(prefix: "m.", config: config, inputWidth: 1, loader: WeightLoader { tensors[$0] })
        var output: [Float] = [0]
        let (indices, weights) = Self.run(memory, [1], rows: 1, into: &output)
        #expect(indices == [Int64(slots - 1), Int64(slots - n - 1)])
        let expected = weights[0] * 7 + weights[1] * -3
        #expect(abs(output[0] - expected) < 1e-6, "\(output[0]) vs \(expected)")
        // The slot score used by verification agrees on those slots, and refuses slots beyond N².
        let score = [Float(1), 1].withUnsafeBufferPointer { memory.slotScore(query: $0.baseAddress!, head: 0, slot: Int64(slots - 1)) }
        #expect(score == 2 * Float(n - 1) / Float(n))
        #expect([Float(1), 1].withUnsafeBufferPointer { memory.slotScore(query: $0.baseAddress!, head: 0, slot: Int64(slots)) } == nil)
    }
}
