import CBLAS
import Dispatch
import Foundation

/// Small numeric kernels over float32 buffers. Matrix products go through cblas.
enum Compute {
    /// `y[n, out] = x[n, in] · W[out, in]ᵀ + b` through `cblas_sgemm`.
    ///
    /// The product runs one block of `blockRows` rows (one sequence) at a time. BLAS kernels may
    /// pick a different blocking, and so a different summation order, for a different row count;
    /// fixed per-sequence blocks make every sequence's result independent of what else is in
    /// the batch.
    static func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: [Float], bias: [Float]?,
                       outFeatures: Int, into y: UnsafeMutablePointer<Float>, blockRows: Int? = nil) {
        if let bias {
            bias.withUnsafeBufferPointer { b in
                for row in 0..<rows { (y + row * outFeatures).update(from: b.baseAddress!, count: outFeatures) }
            }
        }
        let block = max(1, min(blockRows ?? rows, rows))
        weight.withUnsafeBufferPointer { w in
            var start = 0
            while start < rows {
                let count = min(block, rows - start)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(count), Int32(outFeatures), Int32(inFeatures),
                            1, x + start * inFeatures, Int32(inFeatures), w.baseAddress, Int32(inFeatures), bias == nil ? 0 : 1,
                            y + start * outFeatures, Int32(outFeatures))
                start += count
            }
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

    /// In-place exact GELU, `0.5 · x · (1 + erf(x / √2))`.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        parallelChunks(count, minimumChunk: 4096) { start, end in
            for i in start..<end {
                let v = x[i]
                x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752440))
            }
        }
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
