import Foundation
import Testing
@testable import PKMTensor

@Suite("Half-precision conversions")
struct HalfConversionTests {
    @Test("bfloat16 narrowing rounds to nearest even")
    func bfloat16RoundsToNearestEven() {
        #expect(HalfConversion.bfloat16(from: 1.0) == 0x3F80)
        // Exactly halfway between 0x3F80 and 0x3F81: ties to the even 0x3F80.
        #expect(HalfConversion.bfloat16(from: Float(bitPattern: 0x3F80_8000)) == 0x3F80)
        // Halfway between 0x3F81 and 0x3F82: ties to the even 0x3F82.
        #expect(HalfConversion.bfloat16(from: Float(bitPattern: 0x3F81_8000)) == 0x3F82)
        // Just above halfway rounds up.
        #expect(HalfConversion.bfloat16(from: Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(HalfConversion.bfloat16(from: .infinity) == 0x7F80)
        #expect(HalfConversion.bfloat16(from: -.infinity) == 0xFF80)
        #expect(HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(from: .nan)).isNaN)
        // The largest finite float rounds up to infinity, as PyTorch does.
        #expect(HalfConversion.bfloat16(from: .greatestFiniteMagnitude) == 0x7F80)
    }

    @Test("every non-NaN bfloat16 survives widening and narrowing")
    func bfloat16ExhaustiveRoundTrip() {
        for bits in UInt16.min...UInt16.max {
            let value = HalfConversion.float(fromBFloat16: bits)
            if value.isNaN { continue }
            #expect(HalfConversion.bfloat16(from: value) == bits, "bits \(bits)")
        }
    }

    @Test("every non-NaN float16 survives widening and narrowing")
    func float16ExhaustiveRoundTrip() {
        var failures = 0
        for bits in UInt16.min...UInt16.max {
            let value = HalfConversion.float(fromFloat16: bits)
            if value.isNaN { continue }
            if HalfConversion.float16(from: value) != bits { failures += 1 }
        }
        #expect(failures == 0)
    }

    @Test("float16 narrowing rounds to nearest even and overflows to infinity")
    func float16Rounding() {
        #expect(HalfConversion.float16(from: 1.0) == 0x3C00)
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        #expect(HalfConversion.float16(from: 1 + 0x1p-11) == 0x3C00)
        #expect(HalfConversion.float16(from: 1 + 3 * 0x1p-11) == 0x3C02)
        #expect(HalfConversion.float16(from: 65520) == 0x7C00)
        #expect(HalfConversion.float16(from: 65519) == 0x7BFF)
    }

    @Test("tensor conversion between float types", arguments: [DType.float16, .bfloat16, .float64])
    func tensorConversion(target: DType) throws {
        let values: [Float] = [0, -0.0, 1, -2.5, 0.1, 1e-3, 3.14159, -65504]
        let tensor = try Tensor(float32: values, shape: [2, 4])
        let converted = try tensor.converted(to: target)
        #expect(converted.dtype == target)
        #expect(converted.shape == [2, 4])
        #expect(converted.byteCount == 8 * target.byteSize)
        let back = try converted.converted(to: .float32).floatValues()
        for (original, roundTripped) in zip(values, back) {
            #expect(abs(original - roundTripped) <= abs(original) * 0.008 + 1e-7)
        }
        #expect(back[1].sign == .minus)
    }

    @Test("integer tensors refuse float conversion")
    func integerConversionRefused() throws {
        let tensor = try Tensor(int64: [1, 2, 3], shape: [3])
        #expect(throws: TensorError.unsupportedConversion(from: .int64, to: .float16)) { try tensor.converted(to: .float16) }
        #expect(try tensor.converted(to: .int64).isBitwiseEqual(to: tensor))
    }

    /// 1 + 2^-8 + 2^-40 is just above bfloat16's halfway point 1 + 2^-8 between 1 and 1 + 2^-7:
    /// one rounding gives 1 + 2^-7, but float32 first rounds it to exactly 1 + 2^-8, a tie that
    /// then goes to even (1.0). The same trap exists for float16 at 1 + 2^-11 + 2^-40.
    @Test("float64 narrows to bfloat16 and float16 with one rounding, not two")
    func float64RoundsOnce() throws {
        let bfloatTrap = 1 + 0x1p-8 + 0x1p-40
        #expect(HalfConversion.bfloat16(from: Float(bfloatTrap)) == 0x3F80)          // double rounding: wrong
        #expect(HalfConversion.bfloat16(fromDouble: bfloatTrap) == 0x3F81)           // once: right
        #expect(HalfConversion.bfloat16(fromDouble: 1 + 0x1p-8) == 0x3F80)           // an exact tie stays even
        #expect(HalfConversion.bfloat16(fromDouble: -(1 + 0x1p-8 + 0x1p-40)) == 0xBF81)
        #expect(HalfConversion.bfloat16(fromDouble: 1e300) == 0x7F80)
        #expect(HalfConversion.bfloat16(fromDouble: -1e300) == 0xFF80)
        #expect(HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(fromDouble: .nan)).isNaN)
        let halfTrap = 1 + 0x1p-11 + 0x1p-40
        #expect(HalfConversion.float16(fromDouble: halfTrap) == 0x3C01)
        let tensor = try Tensor(dtype: .float64, shape: [2], storage: [bfloatTrap, halfTrap].withUnsafeBytes { Data($0) })
        #expect(try tensor.converted(to: .bfloat16).storage == Data([0x81, 0x3F, 0x80, 0x3F]))
        #expect(try tensor.converted(to: .float16).storage == Data([0x04, 0x3C, 0x01, 0x3C]))
    }
}
