import Foundation
import Testing
@testable import PKMFormats

@Suite("XXHash64")
struct XXHash64Tests {
    /// `((i * 31 + 7) & 0xFF)` for i in 0..<count: the input behind the reference values below.
    static func pattern(_ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    }

    /// (length, XXH64 seed 0, XXH64 seed 0x0123456789ABCDEF), computed once with Python's
    /// `xxhash` 4.1.0 (`xxhash.xxh64(data, seed=…).intdigest()`); lengths straddle every
    /// branch of the algorithm (tails of 1, 4 and 8 bytes, one and several 32-byte stripes).
    static let reference: [(Int, UInt64, UInt64)] = [
        (0, 0xEF46DB3751D8E999, 0x51E24C0E9077A48C),
        (1, 0xA96C7F0CE858BBB7, 0x63F3595CC59F5425),
        (3, 0x56E6957632A487F9, 0x2DD3DE03D79B780F),
        (4, 0xC60D15B1E3FF8F04, 0x881A72A2895DED30),
        (5, 0x808815858624DD4E, 0xC0B67BF2C16E11BC),
        (7, 0xAFBEFC3D6C6F9A8E, 0xC8F1700A6FAFEB9E),
        (8, 0x3DA5C7AA269683E0, 0x1727919CB64B240F),
        (9, 0x4B17A9BA9E215C09, 0x06420ED585121C0E),
        (15, 0xAE2A37EB9357CAA7, 0x141C34B367416E1F),
        (16, 0xA19AD429B02BC413, 0x2C6DB85A21A7021B),
        (31, 0x4A74F3A1A39AD4A1, 0x7930C60020465077),
        (32, 0x8D57D6A4671CC43D, 0x815B5D25513B13B8),
        (33, 0x62C9FD21ED857664, 0x1CBD9F0A49F557E8),
        (47, 0x05E3AB06C6BB0A6B, 0xCC44F071987877AB),
        (63, 0x5C320A0D2707057F, 0xACE5C92C30275215),
        (64, 0x7BBABBC45729D17E, 0xD5E6B36D0A907EFF),
        (65, 0xF3980C34BAE65DC1, 0xC1E2246D4C012D94),
        (100, 0xEFA0AD2D3E70C151, 0x71B1B6EA709B5C4A),
        (1000, 0x99594F4828043D35, 0x20259413565CBD55),
        (4097, 0xD42496BBBECACB1D, 0xC54E5BC628E37A40),
    ]

    @Test("well-known vectors")
    func wellKnown() {
        #expect(XXHash64.hash([UInt8]()) == 0xEF46DB3751D8E999)
        #expect(XXHash64.hash(Array("abc".utf8)) == 0x44BC2CF5AD770999)
        #expect(XXHash64.hash(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x0B242D361FDA71BC)
    }

    @Test("matches the reference implementation", arguments: reference)
    func matchesReference(length: Int, seedZero: UInt64, seeded: UInt64) {
        let bytes = Self.pattern(length)
        #expect(XXHash64.hash(bytes) == seedZero)
        #expect(XXHash64.hash(bytes, seed: 0x0123_4567_89AB_CDEF) == seeded)
        #expect(XXHash64.hash(Data(bytes)) == seedZero)
    }

    @Test("unaligned input hashes the same")
    func unaligned() {
        let bytes = Self.pattern(1001)
        let expected = XXHash64.hash(Array(bytes[1...]))
        bytes.withUnsafeBytes { raw in
            #expect(XXHash64.hash(UnsafeRawBufferPointer(rebasing: raw[1...])) == expected)
        }
    }

    @Test("streaming in any split equals one shot", arguments: [0, 1, 31, 32, 33, 100, 1000, 4097])
    func streaming(length: Int) {
        let bytes = Self.pattern(length)
        let seed: UInt64 = 0x0123_4567_89AB_CDEF
        let expected = XXHash64.hash(bytes, seed: seed)
        var generator = PKMZTestGenerator(seed: UInt64(length))
        for _ in 0..<20 {
            var hasher = XXHash64(seed: seed)
            var position = 0
            while position < length {
                let step = min(length - position, Int(generator.next() % 70))
                hasher.update(Array(bytes[position..<(position + step)]))
                position += step
            }
            #expect(hasher.finalize() == expected)
        }
        // Byte by byte, finalising midway must not disturb the state.
        var hasher = XXHash64(seed: seed)
        for (index, byte) in bytes.enumerated() {
            hasher.update([byte])
            if index == length / 2 { _ = hasher.finalize() }
        }
        #expect(hasher.finalize() == expected)
    }

    @Test("hex is 16 lower-case digits")
    func hex() {
        #expect(XXHash64.hex(0) == "0000000000000000")
        #expect(XXHash64.hex(0xEF46DB3751D8E999) == "ef46db3751d8e999")
        #expect(XXHash64.hex(0x0B242D361FDA71BC) == "0b242d361fda71bc")
    }
}

/// A small deterministic generator for test data.
struct PKMZTestGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
