import Foundation
import Testing
@testable import PKMModel

@Suite("Numeric kernels")
struct KernelTests {
    @Test("vectorised exp is within 2 ulp of expf and underflows to exactly zero")
    func exponential() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.0137 })
            let result = Compute.exp8(lanes)
            for lane in 0..<8 {
                let expected = expf(lanes[lane])
                worst = max(worst, abs(result[lane] - expected) / expected)
            }
            x += 0.173
        }
        #expect(worst < 2.5e-7, "worst relative error \(worst)")
        #expect(Compute.exp8(SIMD8(repeating: -Float.greatestFiniteMagnitude)) == SIMD8(repeating: 0))
        #expect(Compute.exp8(SIMD8(repeating: 0)) == SIMD8(repeating: 1))
    }

    @Test("GELU matches the erf definition within 3e-6 absolute on [-10, 10]")
    func geluAccuracy() {
        var values = (0..<20_001).map { Float($0 - 10_000) * 0.001 }
        values += [30, -30, 1e-8, -1e-8, 0]
        var computed = values
        computed.withUnsafeMutableBufferPointer { Compute.gelu($0.baseAddress!, count: $0.count) }
        var worst: Double = 0
        for (x, y) in zip(values, computed) {
            let exact = 0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))
            worst = max(worst, abs(Double(y) - exact))
        }
        #expect(worst < 3e-7 * 10, "worst absolute error \(worst)")
        #expect(computed[values.count - 5] == 30)
        #expect(computed[values.count - 4] == 0 || abs(computed[values.count - 4]) < 1e-30)
    }

    @Test("masked softmax gives masked keys exactly zero weight and sums to one")
    func softmax() {
        var row: [Float] = (0..<19).map { Float($0) * 0.37 - 2 }
        var mask = [Float](repeating: 0, count: 19)
        mask[3] = -Float.greatestFiniteMagnitude
        mask[17] = -Float.greatestFiniteMagnitude
        row.withUnsafeMutableBufferPointer { r in
            mask.withUnsafeBufferPointer { m in Compute.maskedSoftmax(r.baseAddress!, mask: m.baseAddress!, count: 19) }
        }
        #expect(row[3] == 0)
        #expect(row[17] == 0)
        #expect(abs(row.reduce(0, +) - 1) < 1e-6)
    }
}
