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
    let values: FloatStorage   // [N·N, V], used in place when the checkpoint's bytes allow it
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
        values = try loader.floatStorage(prefix + ParameterNames.Memory.values, [n * n, config.valueDimension])
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

    /// The score of `slot` for one head's query (`query` points at the token's `[H·K]` query):
    /// `keys[h,0,slot / N] · q1 + keys[h,1,slot mod N] · q2`, summed in order (so it may differ from
    /// the forward pass's sgemm in the last bits). Verification uses it to decide whether a slot
    /// the reference kept and this run did not is a genuine tie at the top-k boundary.
    /// - Returns: nil for a slot outside `0..<N²` or a head outside `0..<H`.
    public func slotScore(query: UnsafePointer<Float>, head: Int, slot: Int64) -> Float? {
        let h = config.headCount, n = config.keyCount, k = config.keyDimension, half = k / 2
        guard (0..<h).contains(head), slot >= 0, slot < Int64(n) * Int64(n) else { return nil }
        let first = Int(slot / Int64(n)), second = Int(slot % Int64(n))
        var score: Float = 0
        for j in 0..<half { score += keys[((head * 2) * n + first) * half + j] * query[head * k + j] }
        for j in 0..<half { score += keys[((head * 2 + 1) * n + second) * half + j] * query[head * k + half + j] }
        return score
    }

    /// Pointers a forward pass fills for verification, each per token and head, score-descending.
    struct Trace {
        /// `[rows, H, k]` slot ids (64-bit: N² exceeds `Int32` from N = 46,341).
        var indices: UnsafeMutablePointer<Int64>
        /// `[rows, H, k]` softmax weights.
        var weights: UnsafeMutablePointer<Float>
        /// `[rows, H·K]` queries after the optional batchnorm (to score any slot afterwards).
        var queries: UnsafeMutablePointer<Float>
    }

    /// Applies the memory to `rows` tokens of width d, adding `M(x)` into `output` (`[rows, V]`).
    /// When `trace` is given, stores per token and head the selected slot ids and softmax weights
    /// (`[rows, H, k]`, score-descending), and the queries.
    func forward(_ x: UnsafePointer<Float>, rows: Int, blockRows: Int? = nil, addingInto output: UnsafeMutablePointer<Float>,
                 trace: Trace?, workspace: ForwardWorkspace = ForwardWorkspace()) {
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
        if let trace { trace.queries.update(from: query, count: rows * width) }
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
            values.withFloats { valueBuffer in
                Compute.parallelChunks(rows, minimumChunk: 4) { start, end in
                    var first = TopK(capacity: knn), second = TopK(capacity: knn), grid = TopK(capacity: knn)
                    var weights = [Float](repeating: 0, count: knn)
                    for row in start..<end {
                        let out = output + row * v
                        for head in 0..<h {
                            first.reset(); second.reset(); grid.reset()
                            let s1 = s.baseAddress! + (head * 2) * rows * n + row * n
                            let s2 = s.baseAddress! + (head * 2 + 1) * rows * n + row * n
                            for i in 0..<n { first.offer(score: s1[i], index: i) }
                            for i in 0..<n { second.offer(score: s2[i], index: i) }
                            // Both lists are score-descending, so each inner scan stops at the first
                            // sum that cannot enter the grid's top k.
                            for a in 0..<first.count {
                                let scoreA = first.scores[a], slotBase = first.indices[a] * n
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
                                let slot = grid.indices[j]
                                let w = weights[j]
                                let valueRow = valueBuffer.baseAddress! + slot * v
                                for i in 0..<v { out[i] += w * valueRow[i] }
                                if let trace {
                                    trace.indices[(row * h + head) * knn + j] = Int64(slot)
                                    trace.weights[(row * h + head) * knn + j] = w
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
///
/// NaN ranks above every number, as in PyTorch's `topk` (which sorts NaN as the largest value);
/// NaNs among themselves by index. So a NaN query selects the same slots here as in PyTorch.
struct TopK {
    let capacity: Int
    var scores: [Float]
    var indices: [Int]
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        scores = [Float](repeating: 0, count: capacity)
        indices = [Int](repeating: 0, count: capacity)
    }

    mutating func reset() { count = 0 }

    var isFull: Bool { count == capacity }
    var minimumScore: Float { scores[count - 1] }

    @inline(__always)
    static func precedes(_ scoreA: Float, _ indexA: Int, _ scoreB: Float, _ indexB: Int) -> Bool {
        if scoreA > scoreB { return true }
        if scoreA == scoreB { return indexA < indexB }
        if scoreA.isNaN { return !scoreB.isNaN || indexA < indexB }
        return false
    }

    /// Inserts the pair if it ranks among the best `capacity`; returns whether it was kept.
    @discardableResult
    mutating func offer(score: Float, index: Int) -> Bool {
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
