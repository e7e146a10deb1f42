import Foundation

/// Float16 / bfloat16 ⇄ float32 conversions, round-to-nearest-even when narrowing.
public enum HalfConversion {
    /// Widens a bfloat16 bit pattern: the bfloat16 bits are the upper half of a float32.
    @inlinable
    public static func float(fromBFloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Narrows to bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN, ±inf stays ±inf.
    @inlinable
    public static func bfloat16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    /// Widens an IEEE binary16 bit pattern.
    @inlinable
    public static func float(fromFloat16 bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// Narrows to IEEE binary16 with round-to-nearest-even (overflow becomes ±inf).
    @inlinable
    public static func float16(from value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// Narrows a float64 to IEEE binary16, rounding once (not through float32, whose own rounding
    /// could move a value onto a binary16 halfway point and round it the wrong way).
    @inlinable
    public static func float16(fromDouble value: Double) -> UInt16 {
        Float16(value).bitPattern
    }

    /// Narrows a float64 to bfloat16, rounding once: the float64 is first cut to float32 toward zero
    /// with a sticky last bit for any discarded bits (round-to-odd), which bfloat16's
    /// round-to-nearest-even then rounds exactly as a direct rounding would.
    @inlinable
    public static func bfloat16(fromDouble value: Double) -> UInt16 {
        guard value.isFinite else { return bfloat16(from: Float(value)) }
        var single = Float(value)
        if single.isInfinite || abs(Double(single)) > abs(value) {
            // Rounded away from zero (or overflowed): step back toward zero.
            single = value > 0 ? single.nextDown : single.nextUp
            if single.isInfinite { single = value > 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude }
        }
        if Double(single) != value { single = Float(bitPattern: single.bitPattern | 1) }
        return bfloat16(from: single)
    }
}

extension Tensor {
    /// The values widened (or narrowed, for float64) to float32, in row-major order.
    ///
    /// Integer and bool tensors convert exactly where float32 can represent the value.
    public func floatValues() -> [Float] {
        let count = elementCount
        return [Float](unsafeUninitializedCapacity: count) { output, initialized in
            storage.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                switch dtype {
                case .float32:
                    _ = raw.copyBytes(to: UnsafeMutableRawBufferPointer(output))
                case .float16:
                    for i in 0..<count {
                        output[i] = HalfConversion.float(fromFloat16: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    }
                case .bfloat16:
                    for i in 0..<count {
                        output[i] = HalfConversion.float(fromBFloat16: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    }
                case .float64:
                    for i in 0..<count { output[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
                case .int64:
                    for i in 0..<count { output[i] = Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
                case .int32:
                    for i in 0..<count { output[i] = Float(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
                case .int16:
                    for i in 0..<count { output[i] = Float(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
                case .int8:
                    for i in 0..<count { output[i] = Float(raw.load(fromByteOffset: i, as: Int8.self)) }
                case .uint8, .bool:
                    for i in 0..<count { output[i] = Float(raw[i]) }
                }
            }
            initialized = count
        }
    }

    /// The values as Int64 (integer and bool tensors; floats are truncated toward zero).
    public func int64Values() -> [Int64] {
        let count = elementCount
        return storage.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [Int64] in
            switch dtype {
            case .int64: return (0..<count).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }
            case .int32: return (0..<count).map { Int64(raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
            case .int16: return (0..<count).map { Int64(raw.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self)) }
            case .int8: return (0..<count).map { Int64(raw.load(fromByteOffset: $0, as: Int8.self)) }
            case .uint8, .bool: return (0..<count).map { Int64(raw[$0]) }
            default:
                return floatValues().map { $0.isFinite ? Int64(exactly: $0.rounded(.towardZero)) ?? 0 : 0 }
            }
        }
    }

    /// This tensor stored as `target`. Floating-point types convert among themselves
    /// (narrowing rounds to nearest even); converting to the same dtype returns `self` unchanged.
    /// - Throws: ``TensorError/unsupportedConversion(from:to:)`` for integer or bool tensors.
    public func converted(to target: DType) throws(TensorError) -> Tensor {
        if target == dtype { return self }
        guard dtype.isFloatingPoint, target.isFloatingPoint else {
            throw .unsupportedConversion(from: dtype, to: target)
        }
        let count = elementCount
        var data = Data(count: count * target.byteSize)
        data.withUnsafeMutableBytes { (out: UnsafeMutableRawBufferPointer) in
            storage.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                if dtype == .float64, target != .float64 {
                    // Straight from float64: one rounding to the target.
                    for i in 0..<count {
                        let wide = raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
                        switch target {
                        case .float16: out.storeBytes(of: HalfConversion.float16(fromDouble: wide), toByteOffset: 2 * i, as: UInt16.self)
                        case .bfloat16: out.storeBytes(of: HalfConversion.bfloat16(fromDouble: wide), toByteOffset: 2 * i, as: UInt16.self)
                        default: out.storeBytes(of: Float(wide), toByteOffset: 4 * i, as: Float.self)
                        }
                    }
                    return
                }
                // Everything else goes through float32, which holds f16 and bf16 exactly.
                let floats = dtype == .float32 ? nil : floatValues()
                func value(_ i: Int) -> Float {
                    floats?[i] ?? raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
                }
                switch target {
                case .float32:
                    for i in 0..<count { out.storeBytes(of: value(i), toByteOffset: 4 * i, as: Float.self) }
                case .float16:
                    for i in 0..<count { out.storeBytes(of: HalfConversion.float16(from: value(i)), toByteOffset: 2 * i, as: UInt16.self) }
                case .bfloat16:
                    for i in 0..<count { out.storeBytes(of: HalfConversion.bfloat16(from: value(i)), toByteOffset: 2 * i, as: UInt16.self) }
                case .float64:
                    for i in 0..<count {
                        let wide: Double = dtype == .float64 ? raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self) : Double(value(i))
                        out.storeBytes(of: wide, toByteOffset: 8 * i, as: Double.self)
                    }
                default: break
                }
            }
        }
        return try Tensor(dtype: target, shape: shape, storage: data)
    }
}
