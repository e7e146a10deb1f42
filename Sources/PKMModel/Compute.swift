import CBLAS
import Dispatch
import Foundation

/// Small numeric kernels over float32 buffers. Matrix products go through cblas.
enum Compute {
    /// Columns per GEMM job (a multiple of every BLAS micro-tile width).
    static let columnChunk = 256

    /// OpenBLAS runs single-threaded; pkm-convert parallelises over its own GEMM jobs instead.
    ///
    /// Two thread pools (OpenBLAS's spinning workers and Dispatch's) would fight over the cores
    /// between GEMMs and element-wise kernels; one pool also makes the job split, and so the
    /// results, independent of the thread count.
    static let singleThreadedBLAS: Void = { openblas_set_num_threads(1) }()

    /// `C[rows, n] (+)= A[rows, k] · B[n, k]ᵀ` with row-major strides, as independent jobs.
    ///
    /// Jobs are (block of `blockRows` rows) × (chunk of ``columnChunk`` columns), each one
    /// single-threaded `cblas_sgemm` call. A job's shape depends only on the sequence length and
    /// the layer, never on the batch or the thread count, and BLAS sums every element along k in
    /// the same order within a job shape; so each sequence's outputs are bit-identical whatever
    /// else is in the batch and however many threads run.
    static func gemmJobs(rows: Int, columns: Int, depth: Int, a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                         blockRows: Int?) {
        _ = singleThreadedBLAS
        guard rows > 0, columns > 0 else { return }
        let block = max(1, min(blockRows ?? rows, rows))
        let rowBlocks = (rows + block - 1) / block
        let columnBlocks = (columns + columnChunk - 1) / columnChunk
        let pointers = UncheckedSendable((a, b, c))
        DispatchQueue.concurrentPerform(iterations: rowBlocks * columnBlocks) { job in
            let (a, b, c) = pointers.value
            let row = (job / columnBlocks) * block, column = (job % columnBlocks) * columnChunk
            let m = min(block, rows - row), n = min(columnChunk, columns - column)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(depth), 1,
                        a + row * lda, Int32(lda), b + column * ldb, Int32(ldb), beta, c + row * ldc + column, Int32(ldc))
        }
    }

    /// `y[n, out] = x[n, in] · W[out, in]ᵀ + b`, through ``gemmJobs(rows:columns:depth:a:lda:b:ldb:beta:c:ldc:blockRows:)``
    /// with one row block per sequence (`blockRows`).
    static func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: [Float], bias: [Float]?,
                       outFeatures: Int, into y: UnsafeMutablePointer<Float>, blockRows: Int? = nil) {
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for row in 0..<rows { (y + row * outFeatures).update(from: b.baseAddress!, count: outFeatures) }
            }
        }
        weight.withUnsafeBufferPointer { w in
            gemmJobs(rows: rows, columns: outFeatures, depth: inFeatures, a: x, lda: inFeatures, b: w.baseAddress!, ldb: inFeatures,
                     beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures, blockRows: blockRows)
        }
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
                parallelChunks(rows, minimumChunk: 16) { start, end in
                    for row in start..<end {
                        let v = x + row * width
                        var sum: Float = 0
                        for i in 0..<width { sum += v[i] }
                        let mean = sum / Float(width)
                        var squares: Float = 0
                        for i in 0..<width { let d = v[i] - mean; squares += d * d }
                        let inverse = 1 / (squares / Float(width) + epsilon).squareRoot()
                        for i in 0..<width { v[i] = (v[i] - mean) * inverse * gamma[i] + beta[i] }
                    }
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
        for i in 0..<count { x[i] += y[i] }
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
