import Foundation

/// SplitMix64: small, fast, and the same sequence on every machine for one seed. Every test that
/// needs seeded randomness (synthetic models, format round trips, fuzzing, fault injection) uses it.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }
    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound` (0 when `bound` ≤ 0).
    public mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(next() % UInt64(bound)) }
    /// True with probability `percent`/100.
    public mutating func percent(_ percent: Int) -> Bool { below(100) < percent }
    public mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }
    /// `count` bytes, the low byte of each draw.
    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
    /// Uniform in [-1, 1).
    public mutating func symmetric() -> Float { Float(next() >> 40) * 0x1p-23 - 1 }
    public mutating func int(_ range: Range<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
}

/// The fuzz tests' knobs from the environment (RELIABILITY.md).
public enum FuzzEnvironment {
    /// Inputs per format: PKM_FUZZ_ITERATIONS, else `fallback`.
    public static func iterations(default fallback: Int) -> Int {
        ProcessInfo.processInfo.environment["PKM_FUZZ_ITERATIONS"].flatMap { Int($0) }.map { max(1, $0) } ?? fallback
    }

    /// The run's seed: PKM_FUZZ_SEED (decimal or 0x-hex), else 0x504B4D.
    public static var seed: UInt64 {
        guard let text = ProcessInfo.processInfo.environment["PKM_FUZZ_SEED"] else { return 0x504B4D }
        if text.hasPrefix("0x") { return UInt64(text.dropFirst(2), radix: 16) ?? 0x504B4D }
        return UInt64(text) ?? 0x504B4D
    }
}
