import Foundation
import PKMTestSupport
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

    @Test("vectorised exp is bit-identical to the lane-by-lane Cephes evaluation (round to nearest even, 2ⁿ by exponent bits)")
    func exponentialMatchesScalarCephes() {
        // The scalar form of the same algorithm, with the standard library's rounding and Int32
        // conversion: the shifter trick in exp8 must reproduce it bit for bit, ties included.
        func scalar(_ input: Float) -> Float {
            var x = min(max(input, -87.3), 88.3762626647949)
            let n = (x * 1.44269504088896341).rounded(.toNearestOrEven)
            x = x - n * 0.693359375
            x = x - n * -2.12194440e-4
            let z = x * x
            var y: Float = 1.9875691500e-4
            y = y * x + 1.3981999507e-3
            y = y * x + 8.3334519073e-3
            y = y * x + 4.1665795894e-2
            y = y * x + 1.6666665459e-1
            y = y * x + 5.0000001201e-1
            y = y * z + x + 1
            let result = y * Float(bitPattern: UInt32(bitPattern: (Int32(n) &+ 127) &<< 23))
            return input < -87.3 ? 0 : result
        }
        var inputs: [Float] = [0, -0.0, 1, -1, 88.3762626647949, -87.3, -87.29999, -87.30001, -200, -.infinity, 88.376]
        // Exact ties of x·log₂e (n + 0.5) and their neighbours, where the rounding mode shows.
        for n in -125...126 {
            let tie = (Float(n) + 0.5) / 1.44269504088896341
            inputs += [tie, tie.nextUp, tie.nextDown]
        }
        var random = SplitMix64(seed: 0xE8_9E1D)
        for _ in 0..<200_000 { inputs.append(Float.random(in: -90...88.3, using: &random)) }
        while inputs.count % 8 != 0 { inputs.append(0) }
        var mismatches: [String] = []
        for start in stride(from: 0, to: inputs.count, by: 8) {
            let lanes = SIMD8<Float>(inputs[start..<start + 8])
            let result = Compute.exp8(lanes)
            for lane in 0..<8 where result[lane].bitPattern != scalar(lanes[lane]).bitPattern {
                mismatches.append("exp(\(lanes[lane])) = \(result[lane]), scalar \(scalar(lanes[lane]))")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, e.g. \(mismatches.prefix(5))")
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
