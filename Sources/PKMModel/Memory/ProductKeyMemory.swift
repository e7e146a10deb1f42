import CBLAS
import Foundation
import PKMTensor

/// A product-key memory layer (Lample et al. 2019; `schemas/pkm-checkpoints.md` §3, "Memory M(x)").
///
/// Queries `[tokens, H·K]` come from a query network (one linear, or XLM's MLP with ReLU; plus
/// optional eval-mode batchnorm), optionally after an input LayerNorm and followed by a per-half
/// LayerNorm or L2 normalisation. Each head scores its two query halves against `N` sub-keys each,
/// keeps the top k of each half, and searches the k×k grid of sums for the exact top k over all
/// N² product keys; it never touches all N² slots. An activation (softmax, ReLU or identity, after
/// an optional temperature) turns the k scores into weights of the value rows the slots map to;
/// the read-out may then be projected (linear or Memory+ SwiGLU), gated and layer-normed. Which
/// of these steps run is data: the ``MemoryConfig`` fields, whose defaults are XLM's math.
///
/// Ties are broken by the lower index (sub-key index within a half, slot index in the grid), so
/// results are deterministic; PyTorch's top-k leaves tie order unspecified.
public struct ProductKeyMemory: Sendable {
    /// One linear of the query network, with the eval-mode batchnorm folded into scale and shift.
    struct QueryLayer: Sendable {
        let weight: [Float]        // [out, in]
        let bias: [Float]?         // [out]
        let inFeatures: Int
        let outFeatures: Int
        let batchNormScale: [Float]?  // γ / sqrt(var + eps)
        let batchNormMean: [Float]?
        let batchNormShift: [Float]?  // β
    }

    /// Hyper-parameters.
    public let config: MemoryConfig
    let inputWidth: Int
    let keys: [Float]          // [H, 2, N, K/2]
    let values: FloatStorage   // [rows, V], used in place when the checkpoint's bytes allow it
    let queryLayers: [QueryLayer]
    let queryNormWeight: [Float]?   // [K/2]
    let queryNormBias: [Float]?
    let inputNormWeight: [Float]?   // [d]
    let inputNormBias: [Float]?
    let outputNormWeight: [Float]?  // [d]
    let outputNormBias: [Float]?
    let valueProjectionWeight: [Float]?  // [d, V]
    let valueProjectionBias: [Float]?
    let swigluWeight: [Float]?      // [V, d]
    let swigluBias: [Float]?
    let gateWeight: [Float]?        // [d]
    let gateBias: Float
    let headPermutations: [Int64]?  // [H, N²]

    /// The tensors one memory owns, each declared once (name, shape, flags): ``parameterSpecs(prefix:config:inputWidth:ownsValues:)``
    /// lists them, and loading reads exactly these specs.
    struct Parameters: Sendable, Equatable {
        /// One linear of the query network and, under ``QueryNorm/batchnorm``, the BatchNorm1d after it.
        struct QueryLinear: Sendable, Equatable {
            /// `[out, in]`.
            let weight: ParameterSpec
            /// `[out]`, when ``MemoryConfig/queryBias``.
            let bias: ParameterSpec?
            /// The eval-mode batchnorm after the linear, `[out]` each.
            let batchNorm: QueryBatchNorm?

            var inFeatures: Int { weight.shape[1] }
            var outFeatures: Int { weight.shape[0] }

            var specs: [ParameterSpec] { [weight] + (bias.map { [$0] } ?? []) + (batchNorm?.specs ?? []) }
        }

        /// `query_proj.query_mlps.{j+1}`: a BatchNorm1d's affine and running statistics.
        struct QueryBatchNorm: Sendable, Equatable {
            let weight: ParameterSpec
            let bias: ParameterSpec
            let runningMean: ParameterSpec
            let runningVariance: ParameterSpec
            /// A counter PyTorch saves and eval mode never reads: optional and unused.
            let batchesTracked: ParameterSpec

            init(_ module: String, width: Int) {
                typealias M = ParameterNames.Memory
                weight = .leaf(module, ParameterNames.weight, shape: [width])
                bias = .leaf(module, ParameterNames.bias, shape: [width])
                runningMean = .leaf(module, M.runningMean, shape: [width])
                runningVariance = .leaf(module, M.runningVariance, shape: [width])
                batchesTracked = .leaf(module, M.batchesTracked, shape: [], isOptional: true, isUsed: false)
            }

            var specs: [ParameterSpec] { [weight, bias, runningMean, runningVariance, batchesTracked] }
        }

        /// `[H, 2, N, K/2]`.
        let keys: ParameterSpec
        /// This memory's own value table `[rows, V]`; stored only when ``ownsValues``.
        let values: ParameterSpec
        /// False for a memory that reads another layer's value table (``MemoryConfig/sharedValues``).
        let ownsValues: Bool
        /// `[d, hidden…, H·K]`, input first.
        let queryLinears: [QueryLinear]
        /// Per-half LayerNorm `[K/2]` (``QueryNorm/layernorm``).
        let queryNorm: AffineParameters?
        /// Input LayerNorm `[d]`.
        let inputNorm: AffineParameters?
        /// Memory+ gate projection `[V, d]`, `[V]` (``ValueProjection/swiglu``).
        let swiglu: AffineParameters?
        /// Output projection `[d, V]`, `[d]`.
        let valueProjection: AffineParameters?
        /// Sigmoid gate `[1, d]`, `[1]`.
        let gating: AffineParameters?
        /// Output LayerNorm `[d]`.
        let outputNorm: AffineParameters?
        /// Int64 `[H, N²]` (``SlotMap/headPermutations``).
        let headPermutations: ParameterSpec?

        init(prefix: String, config: MemoryConfig, inputWidth: Int, ownsValues: Bool = true) {
            typealias M = ParameterNames.Memory
            let h = config.headCount, n = config.keyCount, k = config.keyDimension, d = inputWidth, v = config.valueDimension
            keys = ParameterSpec(name: prefix + M.keys, shape: [h, 2, n, k / 2])
            values = ParameterSpec(name: prefix + M.values, shape: [config.valueRowCount, v])
            self.ownsValues = ownsValues
            let widths = config.queryWidths(inputWidth: inputWidth)
            queryLinears = (0..<(widths.count - 1)).map { j in
                let index = config.queryLinearIndex(j), linear = prefix + M.queryModule(index), out = widths[j + 1]
                return QueryLinear(
                    weight: .leaf(linear, ParameterNames.weight, shape: [out, widths[j]]),
                    bias: config.queryBias ? .leaf(linear, ParameterNames.bias, shape: [out]) : nil,
                    batchNorm: config.queryNorm == .batchnorm ? QueryBatchNorm(prefix + M.queryModule(index + 1), width: out) : nil)
            }
            queryNorm = config.queryNorm == .layernorm ? .norm(prefix + M.queryNorm, width: k / 2) : nil
            inputNorm = config.inputNorm ? .norm(prefix + M.inputNorm, width: d) : nil
            swiglu = config.valueProjection == .swiglu ? AffineParameters(prefix + M.swigluProjection, weight: [v, d], bias: [v]) : nil
            valueProjection = config.valueProjection != .none ? AffineParameters(prefix + M.valueProjection, weight: [d, v], bias: [d]) : nil
            gating = config.outputGate == .sigmoid ? AffineParameters(prefix + M.gating, weight: [1, d], bias: [1]) : nil
            outputNorm = config.outputNorm ? .norm(prefix + M.outputNorm, width: d) : nil
            headPermutations = config.slotMap == .headPermutations
                ? ParameterSpec(name: prefix + M.headPermutations, shape: [h, n * n], isInteger: true) : nil
        }

        /// In canonical order.
        var specs: [ParameterSpec] {
            var specs = [keys]
            if ownsValues { specs.append(values) }
            for linear in queryLinears { specs += linear.specs }
            for module in [queryNorm, inputNorm, swiglu, valueProjection, gating, outputNorm] { specs += module?.specs ?? [] }
            if let headPermutations { specs.append(headPermutations) }
            return specs
        }
    }

    /// The tensors a memory at `prefix` (`encoder.layer.{i}.memory.`) owns. `ownsValues` is false
    /// for a memory that reads another layer's value table (``MemoryConfig/sharedValues``).
    public static func parameterSpecs(prefix: String, config: MemoryConfig, inputWidth: Int, ownsValues: Bool = true) -> [ParameterSpec] {
        Parameters(prefix: prefix, config: config, inputWidth: inputWidth, ownsValues: ownsValues).specs
    }

    /// Loads the memory at `prefix`; its value table comes from `valuesPrefix` (another layer's
    /// memory under shared values).
    init(prefix: String, valuesPrefix: String? = nil, config: MemoryConfig, inputWidth: Int, loader: WeightLoader) throws {
        let owner = valuesPrefix ?? prefix
        let parameters = Parameters(prefix: prefix, config: config, inputWidth: inputWidth, ownsValues: owner == prefix)
        let values = owner == prefix ? parameters.values : Parameters(prefix: owner, config: config, inputWidth: inputWidth).values
        try self.init(parameters: parameters, values: values, config: config, inputWidth: inputWidth, loader: loader)
    }

    /// Loads the memory `parameters` declares, reading its value table from `values` (its own, or
    /// the owner's under ``MemoryConfig/sharedValues``).
    init(parameters: Parameters, values valuesSpec: ParameterSpec, config: MemoryConfig, inputWidth: Int, loader: WeightLoader) throws {
        self.config = config
        self.inputWidth = inputWidth
        keys = try loader.floats(parameters.keys)
        values = try loader.floatStorage(valuesSpec)
        queryLayers = try parameters.queryLinears.map { linear in
            let weight = try loader.floats(linear.weight)
            let bias = try linear.bias.map { try loader.floats($0) }
            var scale: [Float]?, mean: [Float]?, shift: [Float]?
            if let norm = linear.batchNorm {
                let gamma = try loader.floats(norm.weight)
                let variance = try loader.floats(norm.runningVariance)
                let epsilon = Float(config.batchNormEpsilon)
                scale = zip(gamma, variance).map { $0 / ($1 + epsilon).squareRoot() }
                mean = try loader.floats(norm.runningMean)
                shift = try loader.floats(norm.bias)
            }
            return QueryLayer(weight: weight, bias: bias, inFeatures: linear.inFeatures, outFeatures: linear.outFeatures,
                              batchNormScale: scale, batchNormMean: mean, batchNormShift: shift)
        }
        (queryNormWeight, queryNormBias) = try loader.affine(parameters.queryNorm)
        (inputNormWeight, inputNormBias) = try loader.affine(parameters.inputNorm)
        (outputNormWeight, outputNormBias) = try loader.affine(parameters.outputNorm)
        (swigluWeight, swigluBias) = try loader.affine(parameters.swiglu)
        (valueProjectionWeight, valueProjectionBias) = try loader.affine(parameters.valueProjection)
        let gate = try loader.affine(parameters.gating)
        gateWeight = gate.weight
        gateBias = gate.bias?[0] ?? 0
        if let spec = parameters.headPermutations {
            let permutations = try loader.int64s(spec)
            let rows = Int64(config.valueRowCount)
            if let bad = permutations.first(where: { $0 < 0 || $0 >= rows }) {
                throw ModelError.invalidTensor(name: spec.name, reason: "holds slot \(bad), outside the value table's 0..<\(rows) rows")
            }
            headPermutations = permutations
        } else {
            headPermutations = nil
        }
    }

    /// The value row that product-key `slot` of `head` reads (``MemoryConfig/slotMap``).
    @inline(__always)
    func valueRow(head: Int, slot: Int) -> Int {
        switch config.slotMap {
        case .none: return slot
        case .headPermutations: return Int(headPermutations![head * config.slotCount + slot])
        case .modulo: return slot % (config.moduloSize ?? 1)
        }
    }

    /// The raw product-key score (before temperature and activation) of the value row `slot` for
    /// one head's query (`query` points at the token's `[H·K]` query after every normalisation):
    /// `keys[h,0,p / N] · q1 + keys[h,1,p mod N] · q2`, summed in order (so it may differ from the
    /// forward pass's sgemm in the last bits), for the product slot p that reads row `slot`. Under
    /// a slot map several product slots may read one row (`modulo`); the best of their scores is
    /// returned, which is the score that ranked the row when the forward pass picked it.
    /// Verification uses it to decide whether a row the reference kept and this run did not is a
    /// genuine tie at the top-k boundary.
    /// - Returns: nil for a row outside the value table or a head outside `0..<H`.
    public func slotScore(query: UnsafePointer<Float>, head: Int, slot: Int64) -> Float? {
        let h = config.headCount, n = config.keyCount, k = config.keyDimension, half = k / 2
        let slots = Int64(config.slotCount)
        guard (0..<h).contains(head), slot >= 0, slot < Int64(config.valueRowCount) else { return nil }
        func productScore(_ product: Int64) -> Float {
            let first = Int(product / Int64(n)), second = Int(product % Int64(n))
            var score: Float = 0
            for j in 0..<half { score += keys[((head * 2) * n + first) * half + j] * query[head * k + j] }
            for j in 0..<half { score += keys[((head * 2 + 1) * n + second) * half + j] * query[head * k + half + j] }
            return score
        }
        switch config.slotMap {
        case .none:
            return productScore(slot)
        case .headPermutations:
            guard let permutations = headPermutations else { return nil }
            let base = head * config.slotCount
            for product in 0..<config.slotCount where permutations[base + product] == slot { return productScore(Int64(product)) }
            return nil
        case .modulo:
            let step = Int64(config.moduloSize ?? 1)
            var best: Float?
            for product in stride(from: slot, to: slots, by: Int(step)) {
                let score = productScore(product)
                if best.map({ TopK.precedes(score, 0, $0, 1) }) ?? true { best = score }
            }
            return best
        }
    }

    /// Pointers a forward pass fills for verification, each per token and head, score-descending.
    struct Trace {
        /// `[rows, H, k]` value rows read (after the slot map; 64-bit: N² exceeds `Int32` from N = 46,341).
        var indices: UnsafeMutablePointer<Int64>
        /// `[rows, H, k]` weights (after temperature and activation).
        var weights: UnsafeMutablePointer<Float>
        /// `[rows, H·K]` queries after every normalisation (to score any slot afterwards).
        var queries: UnsafeMutablePointer<Float>
    }

    /// Whether the read-out needs steps after the weighted sum (projection, gate, output norm).
    var hasPostProcessing: Bool { config.valueProjection != .none || config.outputGate != .none || config.outputNorm }

    /// Applies the memory to `rows` tokens of width d, adding `M(x)` into `output` (`[rows, d]`).
    /// When `trace` is given, stores per token and head the value rows read and their weights
    /// (`[rows, H, k]`, score-descending), and the queries.
    func forward(_ x: UnsafePointer<Float>, rows: Int, blockRows: Int? = nil, addingInto output: UnsafeMutablePointer<Float>,
                 trace: Trace?, workspace: ForwardWorkspace = ForwardWorkspace()) {
        let h = config.headCount, k = config.keyDimension, half = k / 2
        let v = config.valueDimension, d = inputWidth, width = h * k
        let query = workspace.buffer(.memoryQuery, count: rows * width)
        // Query network input: x, or LayerNorm(x) (lucidrains pre_layernorm feeds the queries only).
        var normed: [Float] = []
        if let weight = inputNormWeight, let bias = inputNormBias {
            normed = Array(UnsafeBufferPointer(start: x, count: rows * d))
            normed.withUnsafeMutableBufferPointer {
                Compute.layerNorm($0.baseAddress!, rows: rows, width: d, weight: weight, bias: bias, epsilon: Float(config.layerNormEpsilon))
            }
        }
        normed.withUnsafeBufferPointer { normedBuffer in
            let input = inputNormWeight == nil ? x : normedBuffer.baseAddress!
            runQueryNetwork(input, rows: rows, into: query, blockRows: blockRows)
        }
        if let weight = queryNormWeight, let bias = queryNormBias {
            // Canonical (head, half, dim) order: every half-query is a contiguous row of K/2.
            Compute.layerNorm(query, rows: rows * h * 2, width: half, weight: weight, bias: bias, epsilon: Float(config.layerNormEpsilon))
        }
        if config.queryNormalize == .l2 {
            for part in 0..<(rows * h * 2) {
                let r = query + part * half
                var squares: Float = 0
                for i in 0..<half { squares += r[i] * r[i] }
                let norm = squares.squareRoot()
                for i in 0..<half { r[i] /= norm }
            }
        }
        if let trace { trace.queries.update(from: query, count: rows * width) }
        if !hasPostProcessing {
            select(query: query, rows: rows, blockRows: blockRows, readOut: output, trace: trace, workspace: workspace)
            return
        }
        // Read-out [rows, V], then projection, gate and norm, then added into `output`.
        var readOut = [Float](repeating: 0, count: rows * v)
        var result = [Float](repeating: 0, count: rows * d)
        readOut.withUnsafeMutableBufferPointer { m in
            select(query: query, rows: rows, blockRows: blockRows, readOut: m.baseAddress!, trace: trace, workspace: workspace)
            if let weight = swigluWeight {
                var gate = [Float](repeating: 0, count: rows * v)
                gate.withUnsafeMutableBufferPointer { g in
                    Compute.linear(x, rows: rows, inFeatures: d, weight: weight, bias: swigluBias, outFeatures: v, into: g.baseAddress!, blockRows: blockRows)
                    for i in 0..<(rows * v) { let z = g[i]; m[i] *= z / (1 + expf(-z)) }
                }
            }
            result.withUnsafeMutableBufferPointer { r in
                if let weight = valueProjectionWeight {
                    Compute.linear(m.baseAddress!, rows: rows, inFeatures: v, weight: weight, bias: valueProjectionBias, outFeatures: d,
                                   into: r.baseAddress!, blockRows: blockRows)
                } else {
                    r.baseAddress!.update(from: m.baseAddress!, count: rows * d)
                }
            }
        }
        result.withUnsafeMutableBufferPointer { r in
            if let weight = gateWeight {
                for row in 0..<rows {
                    var z = gateBias
                    for i in 0..<d { z += weight[i] * x[row * d + i] }
                    let gate = 1 / (1 + expf(-z))
                    for i in 0..<d { r[row * d + i] *= gate }
                }
            }
            if let weight = outputNormWeight, let bias = outputNormBias {
                Compute.layerNorm(r.baseAddress!, rows: rows, width: d, weight: weight, bias: bias, epsilon: Float(config.layerNormEpsilon))
            }
            Compute.add(output, r.baseAddress!, count: rows * d)
        }
    }

    /// The query network: linears with eval batchnorm and ReLU between them, into `query` `[rows, H·K]`.
    private func runQueryNetwork(_ x: UnsafePointer<Float>, rows: Int, into query: UnsafeMutablePointer<Float>, blockRows: Int?) {
        var current: [Float] = []
        for (j, layer) in queryLayers.enumerated() {
            let last = j == queryLayers.count - 1
            var next = last ? [] : [Float](repeating: 0, count: rows * layer.outFeatures)
            current.withUnsafeBufferPointer { input in
                next.withUnsafeMutableBufferPointer { hidden in
                    let source = j == 0 ? x : input.baseAddress!
                    let target = last ? query : hidden.baseAddress!
                    Compute.linear(source, rows: rows, inFeatures: layer.inFeatures, weight: layer.weight, bias: layer.bias,
                                   outFeatures: layer.outFeatures, into: target, blockRows: blockRows)
                    if let scale = layer.batchNormScale, let mean = layer.batchNormMean, let shift = layer.batchNormShift {
                        Compute.batchNormRows(target, rows: rows, width: layer.outFeatures, mean: mean, scale: scale, shift: shift)
                    }
                    if !last { for i in 0..<(rows * layer.outFeatures) { target[i] = max(target[i], 0) } }
                }
            }
            current = next
        }
    }

    /// Scores, top-k and weighted read-out: adds `Σ_h Σ_j w[h,j] · values[row[h,j]]` into `readOut` `[rows, V]`.
    private func select(query: UnsafeMutablePointer<Float>, rows: Int, blockRows: Int?, readOut output: UnsafeMutablePointer<Float>,
                        trace: Trace?, workspace: ForwardWorkspace) {
        let h = config.headCount, n = config.keyCount, k = config.keyDimension, half = k / 2, knn = config.knn
        let v = config.valueDimension, width = h * k
        let activation = config.scoreActivation
        let temperature = Float(config.temperature)
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
                        // Scores (÷ temperature, as XLM divides) → weights, in float32.
                        for j in 0..<grid.count { weights[j] = temperature == 1 ? grid.scores[j] : grid.scores[j] / temperature }
                        switch activation {
                        case .softmax:
                            let maximum = weights[0]
                            var total: Float = 0
                            for j in 0..<grid.count { weights[j] = expf(weights[j] - maximum); total += weights[j] }
                            for j in 0..<grid.count { weights[j] /= total }
                        case .relu:
                            for j in 0..<grid.count { weights[j] = max(weights[j], 0) }
                        case .identity:
                            break
                        }
                        for j in 0..<grid.count {
                            let slot = valueRow(head: head, slot: grid.indices[j])
                            let w = weights[j]
                            let valueRow = valueBuffer.baseAddress! + slot * v
                            Compute.addScaledRow(out, valueRow, scale: w, count: v)
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
