import Foundation

/// The seeded generator behind grafting (spec §7): the same seed gives the same bytes.
///
/// Counter-based so that it is fast, parallel and still deterministic: every tensor is drawn in
/// blocks of ``blockSize`` values, and block `b` of tensor `name` draws from a xoshiro256**
/// stream seeded by SplitMix64 from `(seed, FNV-1a(name), b)`. The output therefore depends
/// only on the seed, the tensor name and the value's position, never on the thread count.
public struct GraftRandom: Sendable {
    /// Values per independently seeded block.
    public static let blockSize = 65_536
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    struct Xoshiro {
        var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

        init(seed: UInt64) {
            var state = seed
            func splitMix() -> UInt64 {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
        }

        @inline(__always)
        mutating func next() -> UInt64 {
            let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
            let t = s1 << 17
            s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t
            s3 = (s3 << 45) | (s3 >> 19)
            return result
        }

        /// Uniform in [0, 1) with 24 random bits.
        @inline(__always)
        mutating func unit() -> Float { Float(next() >> 40) * 0x1p-24 }

        /// Uniform in (0, 1], for logarithms.
        @inline(__always)
        mutating func openUnit() -> Double { (Double(next() >> 11) + 1) * 0x1p-53 }
    }

    static func nameHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    func stream(name: String, block: Int) -> Xoshiro {
        Xoshiro(seed: seed ^ GraftRandom.nameHash(name) ^ (UInt64(block) &* 0xD6E8_FEB8_6659_FD93))
    }

    /// `count` values uniform in [−bound, bound).
    public func uniform(name: String, count: Int, bound: Float) -> [Float] {
        uniformBytes(name: name, count: count, bound: bound).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// `count` values normal with mean 0 and standard deviation `std` (Box–Muller, in Double, rounded to float).
    public func normal(name: String, count: Int, std: Float) -> [Float] {
        normalBytes(name: name, count: count, std: std).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// Like ``uniform(name:count:bound:)``, as little-endian float32 bytes ready for a tensor (no extra copy).
    public func uniformBytes(name: String, count: Int, bound: Float) -> Data {
        fill(name: name, count: count) { generator, output, n in
            for i in 0..<n { output[i] = (generator.unit() * 2 - 1) * bound }
        }
    }

    /// Like ``normal(name:count:std:)``, as little-endian float32 bytes ready for a tensor (no extra copy).
    public func normalBytes(name: String, count: Int, std: Float) -> Data {
        fill(name: name, count: count) { generator, output, n in
            var i = 0
            while i < n {
                let radius = (-2 * log(generator.openUnit())).squareRoot()
                let angle = 2 * Double.pi * generator.openUnit()
                output[i] = Float(radius * cos(angle)) * std
                if i + 1 < n { output[i + 1] = Float(radius * sin(angle)) * std }
                i += 2
            }
        }
    }

    private func fill(name: String, count: Int, _ body: @escaping @Sendable (inout Xoshiro, UnsafeMutablePointer<Float>, Int) -> Void) -> Data {
        let blocks = (count + GraftRandom.blockSize - 1) / GraftRandom.blockSize
        var values = Data(count: count * MemoryLayout<Float>.size)
        values.withUnsafeMutableBytes { raw in
            let base = UncheckedPointer(raw.baseAddress?.assumingMemoryBound(to: Float.self))
            DispatchQueue.concurrentPerform(iterations: max(blocks, 1)) { block in
                guard block < blocks, let pointer = base.pointer else { return }
                var generator = stream(name: name, block: block)
                let start = block * GraftRandom.blockSize
                body(&generator, pointer + start, min(GraftRandom.blockSize, count - start))
            }
        }
        return values
    }
}

/// A buffer pointer handed to workers that write disjoint ranges before the call returns.
struct UncheckedPointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>?
    init(_ pointer: UnsafeMutablePointer<Float>?) { self.pointer = pointer }
}
