import CBLAS
import CPKMKernels
import Dispatch
import Foundation

/// Small numeric kernels over float32 buffers. Matrix products go through cblas.
enum Compute {
    /// Columns per GEMM job (a multiple of every BLAS micro-tile width).
    ///
    /// 768 (BERT-base's hidden width) measured best with OpenBLAS 0.3.21's SkylakeX kernels on 2 cores
    /// (tools/bench_sgemm.sh, BENCHMARKS.md §2): 247 GFLOP/s against 235 for 256-column jobs, fewer
    /// calls packing each sequence's rows fewer times; and a job then covers whole rows of every
    /// 768-wide output, so residual + LayerNorm run in the job's epilogue while the block is in cache.
    static let columnChunk = 768

    /// OpenBLAS runs single-threaded; pkm-convert parallelises over its own GEMM jobs instead.
    ///
    /// Two thread pools (OpenBLAS's spinning workers and Dispatch's) would fight over the cores
    /// between GEMMs and element-wise kernels; one pool also makes the job split, and so the
    /// results, independent of the thread count.
    static let singleThreadedBLAS: Void = { openblas_set_num_threads(1) }()

    /// What a GEMM job does to its output block right after computing it (while it is in cache).
    enum Epilogue {
        /// Nothing.
        case none
        /// `+ bias[column]`.
        case bias(UnsafePointer<Float>)
        /// `GELU(· + bias[column])`.
        case biasGELU(UnsafePointer<Float>)
        /// `LayerNorm(· + bias[column] + residual[row, column])` over whole rows (`residual` has the output's strides).
        case biasResidualLayerNorm(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>,
                                   gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, epsilon: Float)
    }

    /// `C[rows, n] (+)= A[rows, k] · B[n, k]ᵀ` with row-major strides, as independent jobs.
    ///
    /// Jobs are (block of `blockRows` rows) × (chunk of ``columnChunk`` columns), each one
    /// single-threaded `cblas_sgemm` call followed by `epilogue` on its block. A job's shape depends
    /// only on the sequence length and the layer, never on the batch or the thread count, and BLAS
    /// sums every element along k in the same order within a job shape; so each sequence's outputs
    /// are bit-identical whatever else is in the batch and however many threads run.
    /// ``Epilogue/biasResidualLayerNorm(bias:residual:gamma:beta:epsilon:)`` needs `columns ≤ columnChunk`.
    static func gemmJobs(rows: Int, columns: Int, depth: Int, a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                         blockRows: Int?, epilogue: Epilogue = .none) {
        _ = singleThreadedBLAS
        guard rows > 0, columns > 0 else { return }
        let block = max(1, min(blockRows ?? rows, rows))
        let rowBlocks = (rows + block - 1) / block
        let columnBlocks = (columns + columnChunk - 1) / columnChunk
        let pointers = UncheckedSendable((a, b, c, epilogue))
        DispatchQueue.concurrentPerform(iterations: rowBlocks * columnBlocks) { job in
            let (a, b, c, epilogue) = pointers.value
            let row = (job / columnBlocks) * block, column = (job % columnBlocks) * columnChunk
            let m = min(block, rows - row), n = min(columnChunk, columns - column)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(depth), 1,
                        a + row * lda, Int32(lda), b + column * ldb, Int32(ldb), beta, c + row * ldc + column, Int32(ldc))
            for r in row..<(row + m) {
                let out = c + r * ldc + column
                switch epilogue {
                case .none: break
                case .bias(let bias): addRow(out, bias + column, count: n)
                case .biasGELU(let bias): biasGELURow(out, bias + column, count: n)
                case .biasResidualLayerNorm(let bias, let residual, let gamma, let beta, let epsilon):
                    addRows(out, bias, residual + r * ldc, count: n)
                    layerNormRow(out, width: n, gamma: gamma, beta: beta, epsilon: epsilon)
                }
            }
        }
    }

    /// `y[n, out] = x[n, in] · W[out, in]ᵀ + b`, through ``gemmJobs(rows:columns:depth:a:lda:b:ldb:beta:c:ldc:blockRows:epilogue:)``
    /// with one row block per sequence (`blockRows`); `gelu` applies GELU after the bias, in the job.
    static func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: [Float], bias: [Float]?,
                       outFeatures: Int, into y: UnsafeMutablePointer<Float>, blockRows: Int? = nil, gelu: Bool = false) {
        weight.withUnsafeBufferPointer { w in
            (bias ?? []).withUnsafeBufferPointer { b in
                let epilogue: Epilogue = bias == nil ? .none : (gelu ? .biasGELU(b.baseAddress!) : .bias(b.baseAddress!))
                gemmJobs(rows: rows, columns: outFeatures, depth: inFeatures, a: x, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures,
                         beta: 0, c: y, ldc: outFeatures, blockRows: blockRows, epilogue: epilogue)
            }
        }
        if gelu && bias == nil { Compute.gelu(y, count: rows * outFeatures) }
    }

    /// `y = LayerNorm(x · Wᵀ + b + residual)` `[rows, out]`: the bias, residual and LayerNorm run in each
    /// GEMM job when a job spans whole rows (`out ≤ columnChunk`), else as passes after the GEMM.
    static func linearResidualLayerNorm(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: [Float], bias: [Float],
                                        outFeatures: Int, residual: UnsafePointer<Float>, normWeight: [Float], normBias: [Float],
                                        epsilon: Float, into y: UnsafeMutablePointer<Float>, blockRows: Int?) {
        guard outFeatures <= columnChunk else {
            linear(x, rows: rows, inFeatures: inFeatures, weight: weight, bias: bias, outFeatures: outFeatures, into: y, blockRows: blockRows)
            add(y, residual, count: rows * outFeatures)
            layerNorm(y, rows: rows, width: outFeatures, weight: normWeight, bias: normBias, epsilon: epsilon)
            return
        }
        weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                normWeight.withUnsafeBufferPointer { gamma in
                    normBias.withUnsafeBufferPointer { beta in
                        gemmJobs(rows: rows, columns: outFeatures, depth: inFeatures, a: x, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures,
                                 beta: 0, c: y, ldc: outFeatures, blockRows: blockRows,
                                 epilogue: .biasResidualLayerNorm(bias: b.baseAddress!, residual: residual, gamma: gamma.baseAddress!,
                                                                  beta: beta.baseAddress!, epsilon: epsilon))
                    }
                }
            }
        }
    }

    /// `x[i] += y[i]`, sixteen lanes at a time.
    @inline(__always)
    static func addRow(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            let raw = UnsafeMutableRawPointer(x + i)
            raw.storeBytes(of: raw.loadUnaligned(as: SIMD16<Float>.self) + UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self),
                           as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { x[i] += y[i]; i += 1 }
    }

    /// `x[i] = (x[i] + y[i]) + z[i]`, sixteen lanes at a time.
    @inline(__always)
    static func addRows(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ z: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            let raw = UnsafeMutableRawPointer(x + i)
            let sum = (raw.loadUnaligned(as: SIMD16<Float>.self) + UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self))
                + UnsafeRawPointer(z + i).loadUnaligned(as: SIMD16<Float>.self)
            raw.storeBytes(of: sum, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { x[i] = (x[i] + y[i]) + z[i]; i += 1 }
    }

    /// `x[i] += scale · y[i]`, sixteen lanes at a time (the memory's weighted value read-out).
    @inline(__always)
    static func addScaledRow(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, scale: Float, count: Int) {
        var i = 0
        while i + 16 <= count {
            let raw = UnsafeMutableRawPointer(x + i)
            raw.storeBytes(of: raw.loadUnaligned(as: SIMD16<Float>.self) + scale * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self),
                           as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { x[i] += scale * y[i]; i += 1 }
    }

    /// Eval batchnorm in place on `[rows, width]`: `(x − mean) · scale + shift` per column, sixteen lanes at a time.
    static func batchNormRows(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, mean: [Float], scale: [Float], shift: [Float]) {
        mean.withUnsafeBufferPointer { mean in
            scale.withUnsafeBufferPointer { scale in
                shift.withUnsafeBufferPointer { shift in
                    let m = mean.baseAddress!, s = scale.baseAddress!, t = shift.baseAddress!
                    let pointers = UncheckedSendable((m, s, t))
                    parallelChunks(rows, minimumChunk: 64) { start, end in
                        let (m, s, t) = pointers.value
                        for row in start..<end {
                            let r = x + row * width
                            var i = 0
                            while i + 16 <= width {
                                let raw = UnsafeMutableRawPointer(r + i)
                                let v = raw.loadUnaligned(as: SIMD16<Float>.self)
                                let result = (v - UnsafeRawPointer(m + i).loadUnaligned(as: SIMD16<Float>.self))
                                    * UnsafeRawPointer(s + i).loadUnaligned(as: SIMD16<Float>.self)
                                    + UnsafeRawPointer(t + i).loadUnaligned(as: SIMD16<Float>.self)
                                raw.storeBytes(of: result, as: SIMD16<Float>.self)
                                i += 16
                            }
                            while i < width { r[i] = (r[i] - m[i]) * s[i] + t[i]; i += 1 }
                        }
                    }
                }
            }
        }
    }

    /// `x[i] = GELU(x[i] + bias[i])`, eight lanes at a time.
    @inline(__always)
    static func biasGELURow(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, count: Int) {
        // AVX-512 (16 lanes, FMA) when the CPU has it: the same formulas, a quarter of the instructions of
        // the baseline-x86-64 SIMD8 path below (GELU was ~7 % of a BERT-base forward there).
        if pkm_bias_gelu_avx512(x, bias, count) != 0 { return }
        var i = 0
        while i + 8 <= count {
            let raw = UnsafeMutableRawPointer(x + i)
            let v = raw.loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(bias + i).loadUnaligned(as: SIMD8<Float>.self)
            raw.storeBytes(of: gelu8(v), as: SIMD8<Float>.self)
            i += 8
        }
        if i < count {
            var tail = SIMD8<Float>(repeating: 0)
            for j in i..<count { tail[j - i] = x[j] + bias[j] }
            let result = gelu8(tail)
            for j in i..<count { x[j] = result[j - i] }
        }
    }

    /// In-place LayerNorm of one row (biased variance), sums sixteen lanes at a time.
    @inline(__always)
    static func layerNormRow(_ v: UnsafeMutablePointer<Float>, width: Int, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                             epsilon: Float) {
        let vectorEnd = width & ~15
        var lanes = SIMD16<Float>(repeating: 0)
        var i = 0
        while i < vectorEnd { lanes += UnsafeRawPointer(v + i).loadUnaligned(as: SIMD16<Float>.self); i += 16 }
        var sum = lanes.sum()
        while i < width { sum += v[i]; i += 1 }
        let mean = sum / Float(width)
        var squareLanes = SIMD16<Float>(repeating: 0)
        i = 0
        while i < vectorEnd {
            let d = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD16<Float>.self) - mean
            squareLanes += d * d
            i += 16
        }
        var squares = squareLanes.sum()
        while i < width { let d = v[i] - mean; squares += d * d; i += 1 }
        let inverse = 1 / (squares / Float(width) + epsilon).squareRoot()
        i = 0
        while i < vectorEnd {
            let raw = UnsafeMutableRawPointer(v + i)
            let x = raw.loadUnaligned(as: SIMD16<Float>.self)
            let g = UnsafeRawPointer(gamma + i).loadUnaligned(as: SIMD16<Float>.self)
            let b = UnsafeRawPointer(beta + i).loadUnaligned(as: SIMD16<Float>.self)
            raw.storeBytes(of: (x - mean) * inverse * g + b, as: SIMD16<Float>.self)
            i += 16
        }
        while i < width { v[i] = (v[i] - mean) * inverse * gamma[i] + beta[i]; i += 1 }
    }

    /// Runs `body(start, end)` over `count` items split into contiguous chunks across cores.
    static func parallelChunks(_ count: Int, minimumChunk: Int = 1, _ body: (Int, Int) -> Void) {
        guard count > 0 else { return }
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, count / max(minimumChunk, 1)))
        if workers == 1 { body(0, count); return }
        let chunk = (count + workers - 1) / workers
        withoutActuallyEscaping(body) { escapable in
            let work = UncheckedSendable(escapable)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let start = worker * chunk
                let end = min(count, start + chunk)
                if start < end { work.value(start, end) }
            }
        }
    }

    /// In-place LayerNorm over rows of width `width`: `(x − mean) / sqrt(var + eps) · γ + β` (biased variance).
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, weight: [Float], bias: [Float], epsilon: Float) {
        weight.withUnsafeBufferPointer { gamma in
            bias.withUnsafeBufferPointer { beta in
                let pointers = UncheckedSendable((gamma.baseAddress!, beta.baseAddress!))
                parallelChunks(rows, minimumChunk: 16) { start, end in
                    let (gamma, beta) = pointers.value
                    for row in start..<end { layerNormRow(x + row * width, width: width, gamma: gamma, beta: beta, epsilon: epsilon) }
                }
            }
        }
    }

    /// In-place GELU with the error function, `0.5 · x · (1 + erf(x / √2))` (not the tanh approximation).
    ///
    /// erf uses Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), the same approximation as
    /// PyTorch's vectorised CPU `erf`, evaluated eight lanes at a time with ``exp8(_:)``.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        parallelChunks(count, minimumChunk: 16_384) { start, end in
            var i = start
            while i + 8 <= end {
                let raw = UnsafeMutableRawPointer(x + i)
                let v = raw.loadUnaligned(as: SIMD8<Float>.self)
                raw.storeBytes(of: gelu8(v), as: SIMD8<Float>.self)
                i += 8
            }
            if i < end {
                var tail = SIMD8<Float>(repeating: 0)
                for j in i..<end { tail[j - i] = x[j] }
                let result = gelu8(tail)
                for j in i..<end { x[j] = result[j - i] }
            }
        }
    }

    @inline(__always)
    static func gelu8(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let z = v * 0.70710678118654752440
        let a = z.replacing(with: -z, where: z .< 0)
        let t = 1 / (1 + 0.3275911 * a)
        var polynomial = SIMD8<Float>(repeating: 1.061405429)
        polynomial = polynomial * t - 1.453152027
        polynomial = polynomial * t + 1.421413741
        polynomial = polynomial * t - 0.284496736
        polynomial = polynomial * t + 0.254829592
        polynomial = polynomial * t
        var erf = 1 - polynomial * exp8(-(a * a))
        erf.replace(with: -erf, where: z .< 0)
        return 0.5 * v * (1 + erf)
    }

    /// e^x for eight lanes (Cephes `expf` polynomial, about 1 ulp; inputs clamped to ±88.376).
    ///
    /// Everything stays in vector registers: the standard library's generic SIMD `rounded(_:)` and
    /// float → integer conversions run lane by lane (they once took a quarter of a BERT forward), so
    /// n = round(x·log₂e) uses the 1.5·2²³ shifter instead: adding it leaves n, rounded to nearest
    /// even like `rounded(.toNearestOrEven)`, in the low mantissa bits, from which 2ⁿ is built with
    /// integer lane operations.
    @inline(__always)
    static func exp8(_ input: SIMD8<Float>) -> SIMD8<Float> {
        let low = SIMD8<Float>(repeating: -87.3), high = SIMD8<Float>(repeating: 88.3762626647949)
        var x = input.replacing(with: low, where: input .< low).replacing(with: high, where: input .> high)
        let shifter = SIMD8<Float>(repeating: 12_582_912)   // 1.5 · 2²³
        let shifted = x * 1.44269504088896341 + shifter
        let n = shifted - shifter
        x = x - n * 0.693359375
        x = x - n * -2.12194440e-4
        let z = x * x
        var y = SIMD8<Float>(repeating: 1.9875691500e-4)
        y = y * x + 1.3981999507e-3
        y = y * x + 8.3334519073e-3
        y = y * x + 4.1665795894e-2
        y = y * x + 1.6666665459e-1
        y = y * x + 5.0000001201e-1
        y = y * z + x + 1
        // shifted's bits are 0x4B40_0000 + n (two's complement n, |n| ≤ 128): 2ⁿ has exponent field n + 127.
        let exponent = (unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        // Below the clamp e^x underflows: return exactly 0 (masked attention keys must weigh nothing).
        return (y * unsafeBitCast(exponent, to: SIMD8<Float>.self)).replacing(with: 0, where: input .< low)
    }

    /// In-place softmax of one row after adding `mask`, exponentials eight lanes at a time.
    static func maskedSoftmax(_ row: UnsafeMutablePointer<Float>, mask: UnsafePointer<Float>, count: Int) {
        var maximum = -Float.infinity
        for j in 0..<count {
            row[j] += mask[j]
            maximum = max(maximum, row[j])
        }
        var total: Float = 0
        var j = 0
        while j + 8 <= count {
            let raw = UnsafeMutableRawPointer(row + j)
            let e = exp8(raw.loadUnaligned(as: SIMD8<Float>.self) - maximum)
            raw.storeBytes(of: e, as: SIMD8<Float>.self)
            total += e.sum()
            j += 8
        }
        while j < count {
            row[j] = expf(row[j] - maximum)
            total += row[j]
            j += 1
        }
        let inverse = 1 / total
        for j in 0..<count { row[j] *= inverse }
    }

    /// In-place `x += y`.
    static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
        addRow(x, y, count: count)
    }
}

/// Carries a value the compiler cannot prove Sendable across `concurrentPerform`.
///
/// Used only to hand a non-escaping work closure to worker threads that finish before the call
/// returns; each worker touches disjoint rows of the buffers the closure captures.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Scratch buffers reused by every layer of one forward pass.
///
/// Fresh multi-megabyte arrays per layer come from `mmap` and are page-faulted and zeroed on
/// every use (about a tenth of a BERT-base forward); one workspace per forward allocates each
/// buffer once, at its largest size. Contents are not initialised: every user overwrites what
/// it reads, or clears it (``zeroed(_:count:)``).
final class ForwardWorkspace {
    enum Slot: Int, CaseIterable {
        case qkv, context, attention, intermediate, memoryOutput, memoryQuery, memoryScores
    }

    private var buffers: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: Slot.allCases.count)
    private var capacities: [Int] = Array(repeating: 0, count: Slot.allCases.count)

    /// A buffer of at least `count` floats for `slot`, with unspecified contents.
    func buffer(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        let i = slot.rawValue
        if let existing = buffers[i], capacities[i] >= count { return existing }
        buffers[i]?.deallocate()
        let fresh = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        buffers[i] = fresh
        capacities[i] = count
        return fresh
    }

    /// A buffer of `count` zeros for `slot`.
    func zeroed(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        let pointer = buffer(slot, count: count)
        pointer.update(repeating: 0, count: count)
        return pointer
    }

    deinit { for buffer in buffers { buffer?.deallocate() } }
}
