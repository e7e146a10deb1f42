import CBLAS
import Foundation
import PKMTensor

/// A product-key memory layer (Lample et al. 2019; spec §3, "Memory M(x)").
///
/// Queries `[tokens, H·K]` come from a linear map (plus optional eval-mode batchnorm). Each head
/// scores its two query halves against `N` sub-keys each, keeps the top k of each half, and
/// searches the k×k grid of sums for the exact top k over all N² product keys; it never touches
/// all N² slots. Softmax weights over the k scores mix the selected value rows.
///
/// Ties are broken by the lower index (sub-key index within a half, slot index in the grid), so
/// results are deterministic; PyTorch's top-k leaves tie order unspecified.
public struct ProductKeyMemory: Sendable {
    /// Hyper-parameters.
    public let config: MemoryConfig
    let inputWidth: Int
    let keys: [Float]          // [H, 2, N, K/2]
    let values: [Float]        // [N·N, V]
    let queryWeight: [Float]   // [H·K, d]
    let queryBias: [Float]?    // [H·K]
    let batchNormScale: [Float]?  // γ / sqrt(var + eps)
    let batchNormMean: [Float]?
    let batchNormShift: [Float]?  // β

    /// The tensors a memory at `prefix` (`encoder.layer.{i}.memory.`) owns.
    public static func parameterSpecs(prefix: String, config: MemoryConfig, inputWidth: Int) -> [ParameterSpec] {
        let h = config.headCount, n = config.keyCount, k = config.keyDimension
        var specs = [
            ParameterSpec(name: prefix + ParameterNames.Memory.keys, shape: [h, 2, n, k / 2]),
            ParameterSpec(name: prefix + ParameterNames.Memory.values, shape: [n * n, config.valueDimension]),
            ParameterSpec(name: prefix + ParameterNames.Memory.queryWeight, shape: [h * k, inputWidth]),
        ]
        if config.queryBias {
            specs.append(ParameterSpec(name: prefix + ParameterNames.Memory.queryBias, shape: [h * k]))
        }
        if config.queryBatchNorm {
            for name in [ParameterNames.Memory.batchNormWeight, ParameterNames.Memory.batchNormBias,
                         ParameterNames.Memory.batchNormMean, ParameterNames.Memory.batchNormVariance] {
                specs.append(ParameterSpec(name: prefix + name, shape: [h * k]))
            }
            specs.append(ParameterSpec(name: prefix + ParameterNames.Memory.batchNormBatchesTracked, shape: [],
                                       isOptional: true, isUsed: false))
        }
        return specs
    }

    init(prefix: String, config: MemoryConfig, inputWidth: Int, loader: WeightLoader) throws {
        self.config = config
        self.inputWidth = inputWidth
        let h = config.headCount, n = config.keyCount, k = config.keyDimension
        keys = try loader.floats(prefix + ParameterNames.Memory.keys, [h, 2, n, k / 2])
        values = try loader.floats(prefix + ParameterNames.Memory.values, [n * n, config.valueDimension])
        queryWeight = try loader.floats(prefix + ParameterNames.Memory.queryWeight, [h * k, inputWidth])
        queryBias = config.queryBias ? try loader.floats(prefix + ParameterNames.Memory.queryBias, [h * k]) : nil
        if config.queryBatchNorm {
            let gamma = try loader.floats(prefix + ParameterNames.Memory.batchNormWeight, [h * k])
            let beta = try loader.floats(prefix + ParameterNames.Memory.batchNormBias, [h * k])
            let mean = try loader.floats(prefix + ParameterNames.Memory.batchNormMean, [h * k])
            let variance = try loader.floats(prefix + ParameterNames.Memory.batchNormVariance, [h * k])
            let epsilon = Float(config.batchNormEpsilon)
            batchNormScale = zip(gamma, variance).map { $0 / ($1 + epsilon).squareRoot() }
            batchNormMean = mean
            batchNormShift = beta
        } else {
            batchNormScale = nil
            batchNormMean = nil
            batchNormShift = nil
        }
    }

    /// Applies the memory to `rows` tokens of width d, adding `M(x)` into `output` (`[rows, V]`).
    /// When `trace` is given, stores per token and head the selected slot ids and softmax weights
    /// (`[rows, H, k]`, score-descending).
    func forward(_ x: UnsafePointer<Float>, rows: Int, blockRows: Int? = nil, addingInto output: UnsafeMutablePointer<Float>,
                 traceIndices: UnsafeMutablePointer<Int32>?, traceWeights: UnsafeMutablePointer<Float>?,
                 workspace: ForwardWorkspace = ForwardWorkspace()) {
        let h = config.headCount, n = config.keyCount, k = config.keyDimension, half = k / 2, knn = config.knn
        let v = config.valueDimension, width = h * k
        // Both buffers are fully overwritten (linear, then sgemm with beta 0) before they are read.
        let query = workspace.buffer(.memoryQuery, count: rows * width)
        Compute.linear(x, rows: rows, inFeatures: inputWidth, weight: queryWeight, bias: queryBias, outFeatures: width, into: query, blockRows: blockRows)
        if let scale = batchNormScale, let mean = batchNormMean, let shift = batchNormShift {
            for row in 0..<rows {
                let r = query + row * width
                for i in 0..<width { r[i] = (r[i] - mean[i]) * scale[i] + shift[i] }
            }
        }
        // Sub-key scores for every token: [rows, N] per head and half, through sgemm.
        let scoreBuffer = workspace.buffer(.memoryScores, count: h * 2 * rows * n)
        keys.withUnsafeBufferPointer { keyBuffer in
            for head in 0..<h {
                for side in 0..<2 {
                    Compute.gemmJobs(rows: rows, columns: n, depth: half, a: query + head * k + side * half, lda: width,
                                     b: keyBuffer.baseAddress! + (head * 2 + side) * n * half, ldb: half, beta: 0,
                                     c: scoreBuffer + (head * 2 + side) * rows * n, ldc: n, blockRows: blockRows)
                }
            }
        }
        do {
            let s = UnsafeBufferPointer(start: UnsafePointer(scoreBuffer), count: h * 2 * rows * n)
            values.withUnsafeBufferPointer { valueBuffer in
                Compute.parallelChunks(rows, minimumChunk: 4) { start, end in
                    var first = TopK(capacity: knn), second = TopK(capacity: knn), grid = TopK(capacity: knn)
                    var weights = [Float](repeating: 0, count: knn)
                    for row in start..<end {
                        let out = output + row * v
                        for head in 0..<h {
                            first.reset(); second.reset(); grid.reset()
                            let s1 = s.baseAddress! + (head * 2) * rows * n + row * n
                            let s2 = s.baseAddress! + (head * 2 + 1) * rows * n + row * n
                            for i in 0..<n { first.offer(score: s1[i], index: Int32(i)) }
                            for i in 0..<n { second.offer(score: s2[i], index: Int32(i)) }
                            // Both lists are score-descending, so each inner scan stops at the first
                            // sum that cannot enter the grid's top k.
                            for a in 0..<first.count {
                                let scoreA = first.scores[a], slotBase = first.indices[a] * Int32(n)
                                if grid.isFull && scoreA + second.scores[0] < grid.minimumScore { break }
                                for b in 0..<second.count {
                                    let score = scoreA + second.scores[b]
                                    if !grid.offer(score: score, index: slotBase + second.indices[b]) && grid.isFull
                                        && score < grid.minimumScore { break }
                                }
                            }
                            // Softmax in float32 over the k scores.
                            let maximum = grid.scores[0]
                            var total: Float = 0
                            for j in 0..<grid.count { weights[j] = expf(grid.scores[j] - maximum); total += weights[j] }
                            for j in 0..<grid.count { weights[j] /= total }
                            for j in 0..<grid.count {
                                let slot = Int(grid.indices[j])
                                let w = weights[j]
                                let valueRow = valueBuffer.baseAddress! + slot * v
                                for i in 0..<v { out[i] += w * valueRow[i] }
                                if let traceIndices, let traceWeights {
                                    traceIndices[(row * h + head) * knn + j] = Int32(slot)
                                    traceWeights[(row * h + head) * knn + j] = w
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A bounded list of the best (score, index) pairs, kept sorted by score descending then index ascending.
struct TopK {
    let capacity: Int
    var scores: [Float]
    var indices: [Int32]
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        scores = [Float](repeating: 0, count: capacity)
        indices = [Int32](repeating: 0, count: capacity)
    }

    mutating func reset() { count = 0 }

    var isFull: Bool { count == capacity }
    var minimumScore: Float { scores[count - 1] }

    @inline(__always)
    static func precedes(_ scoreA: Float, _ indexA: Int32, _ scoreB: Float, _ indexB: Int32) -> Bool {
        scoreA > scoreB || (scoreA == scoreB && indexA < indexB)
    }

    /// Inserts the pair if it ranks among the best `capacity`; returns whether it was kept.
    @discardableResult
    mutating func offer(score: Float, index: Int32) -> Bool {
        if count == capacity {
            if !TopK.precedes(score, index, scores[count - 1], indices[count - 1]) { return false }
            count -= 1
        }
        var position = count
        while position > 0, TopK.precedes(score, index, scores[position - 1], indices[position - 1]) {
            scores[position] = scores[position - 1]
            indices[position] = indices[position - 1]
            position -= 1
        }
        scores[position] = score
        indices[position] = index
        count += 1
        return true
    }
}
