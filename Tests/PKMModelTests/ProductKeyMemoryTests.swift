import Foundation
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
        var indices = [Int32](repeating: -1, count: rows * heads * knn)
        var weights = [Float](repeating: 0, count: rows * heads * knn)
        x.withUnsafeBufferPointer { xb in
            output.withUnsafeMutableBufferPointer { o in
                indices.withUnsafeMutableBufferPointer { i in
                    weights.withUnsafeMutableBufferPointer { w in
                        memory.forward(xb.baseAddress!, rows: rows, addingInto: o.baseAddress!, traceIndices: i.baseAddress, traceWeights: w.baseAddress)
                    }
                }
            }
        }
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

    @Test("TopK keeps the best scores in order and breaks ties by lower index")
    func topKOrdering() {
        var top = TopK(capacity: 3)
        for (score, index) in [(1.0, 5), (3.0, 9), (3.0, 2), (2.0, 1), (3.0, 7), (0.5, 0)] as [(Float, Int32)] {
            top.offer(score: score, index: index)
        }
        #expect(Array(top.indices.prefix(top.count)) == [2, 7, 9])
        #expect(Array(top.scores.prefix(top.count)) == [3, 3, 3])
    }
}
