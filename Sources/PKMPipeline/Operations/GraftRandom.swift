import CPKMKernels
import Foundation

/// The seeded generator behind grafting (`schemas/pkm-checkpoints.md` §7): the same seed gives the same bytes.
///
/// Counter-based, so that any range of a tensor can be generated on its own, on any thread, in
/// any order, and still give the same bytes (the writers generate a tensor chunk by chunk on all
/// cores). The exact algorithm, implemented in C (`pkm_normal_fill`, `pkm_uniform_fill` in
/// CPKMKernels, vectorised with SSE2 or AVX2 picked at run time, all giving the same bytes):
///
/// - `splitmix(key, i)` is output `i` of SplitMix64 seeded with `key`: `z = key + (i + 1) ·
///   0x9E3779B97F4A7C15`, `z = (z ^ z>>30) · 0xBF58476D1CE4E5B9`, `z = (z ^ z>>27) ·
///   0x94D049BB133111EB`, `z ^ z>>31` (all modulo 2⁶⁴).
/// - A tensor's key is `splitmix(seed, FNV-1a-64(name))` (FNV-1a over the name's UTF-8 bytes).
/// - Uniform value `i` is `(2u − 1) · bound` with `u = (splitmix(key, i) >> 40) · 2⁻²⁴`.
/// - Normal values `2c` and `2c + 1` come from `w = splitmix(key, c)`: `u₁ = ((w >> 40) + 1) · 2⁻²⁴`
///   in (0, 1], `u₂ = ((w >> 8) & 0xFFFFFF) · 2⁻²⁴` in [0, 1); `r = √(−2 ln u₁)` and the angle
///   `2π u₂` give `(r cos θ · std, r sin θ · std)` (Box–Muller), computed in float32 with
///   musl's `logf` polynomial, a quadrant reduction and fixed Taylor polynomials for sine and
///   cosine, every operation correctly rounded and none fused, so no libm and no CPU feature can
///   change a bit.
public struct GraftRandom: Sendable {
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// FNV-1a (64-bit) of the name's UTF-8 bytes.
    static func nameHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// The stream key of tensor `name`: `splitmix(seed, FNV-1a(name))`.
    public func key(name: String) -> UInt64 { pkm_splitmix(seed, GraftRandom.nameHash(name)) }

    /// Values `start ..< start + buffer.count` of tensor `name`'s normal(0, `std`) stream, into `buffer`.
    public func fillNormal(name: String, std: Float, start: Int, into buffer: UnsafeMutableBufferPointer<Float>) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        pkm_normal_fill(key(name: name), UInt64(start), std, base, buffer.count)
    }

    /// Values `start ..< start + buffer.count` of tensor `name`'s uniform [−`bound`, `bound`) stream, into `buffer`.
    public func fillUniform(name: String, bound: Float, start: Int, into buffer: UnsafeMutableBufferPointer<Float>) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        pkm_uniform_fill(key(name: name), UInt64(start), bound, base, buffer.count)
    }

    /// `count` values uniform in [−bound, bound).
    public func uniform(name: String, count: Int, bound: Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialised in
            fillUniform(name: name, bound: bound, start: 0, into: buffer)
            initialised = count
        }
    }

    /// `count` values normal with mean 0 and standard deviation `std`.
    public func normal(name: String, count: Int, std: Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialised in
            fillNormal(name: name, std: std, start: 0, into: buffer)
            initialised = count
        }
    }

    /// A float32 tensor source whose bytes are generated on demand, chunk by chunk: a writer may ask
    /// for any whole-element range from any thread. `fill` gets (first element, destination).
    static func source(_ fill: @escaping @Sendable (Int, UnsafeMutableBufferPointer<Float>) -> Void) -> TensorSourceFill {
        { offset, raw in
            guard offset % 4 == 0, raw.count % 4 == 0 else {
                throw PipelineError.invalidGraft(reason: "a writer asked for bytes \(offset)..<\(offset + raw.count), not whole float32 elements")
            }
            fill(offset / 4, raw.bindMemory(to: Float.self))
        }
    }
}

/// The fill closure of a ``TensorSource``.
typealias TensorSourceFill = @Sendable (_ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void
