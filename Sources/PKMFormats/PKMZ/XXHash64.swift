import Foundation

/// XXH64, the 64-bit xxHash by Yann Collet: the checksum of every pkmz frame and of the pkmz
/// prologue and header (`schemas/pkmz.md` §5).
///
/// A fast non-cryptographic hash that detects accidental damage (bit rot, truncated copies),
/// not tampering. Results equal the reference implementation's (`XXH64()` in libxxhash, Python's
/// `xxhash.xxh64(...).intdigest()`) for every input and seed; the empty input with seed 0 hashes
/// to `0xEF46DB3751D8E999`.
///
/// Use ``hash(_:seed:)-(UnsafeRawBufferPointer,_)`` for one buffer, or create a value and feed it
/// with ``update(_:)-(UnsafeRawBufferPointer)`` when the bytes come in pieces.
public struct XXHash64: Sendable {
    static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    private let seed: UInt64
    private var lanes: (UInt64, UInt64, UInt64, UInt64)
    /// Up to 31 bytes not yet folded into the lanes.
    private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var pendingCount = 0
    private var totalLength: UInt64 = 0

    /// A hasher with no input yet.
    public init(seed: UInt64 = 0) {
        self.seed = seed
        lanes = XXHash64.initialLanes(seed: seed)
    }

    /// Feeds bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var source = bytes.baseAddress, bytes.count > 0 else { return }
        var count = bytes.count
        totalLength &+= UInt64(count)
        if pendingCount > 0 || count < 32 {
            let take = min(32 - pendingCount, count)
            let filled = pendingCount
            withUnsafeMutableBytes(of: &pending) { buffer in
                buffer.baseAddress!.advanced(by: filled).copyMemory(from: source, byteCount: take)
            }
            pendingCount += take
            source += take
            count -= take
            guard pendingCount == 32 else { return }
            withUnsafeBytes(of: pending) { buffer in
                _ = XXHash64.consumeStripes(buffer.baseAddress!, count: 32, lanes: &lanes)
            }
            pendingCount = 0
        }
        let consumed = XXHash64.consumeStripes(source, count: count, lanes: &lanes)
        let left = count - consumed
        if left > 0 {
            withUnsafeMutableBytes(of: &pending) { buffer in
                buffer.baseAddress!.copyMemory(from: source + consumed, byteCount: left)
            }
            pendingCount = left
        }
    }

    /// Feeds bytes.
    public mutating func update(_ bytes: some ContiguousBytes) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The hash of everything fed so far (the hasher may keep being fed afterwards).
    public func finalize() -> UInt64 {
        var hash: UInt64
        if totalLength >= 32 {
            hash = XXHash64.converge(lanes)
        } else {
            hash = seed &+ XXHash64.prime5
        }
        hash &+= totalLength
        let count = pendingCount
        return withUnsafeBytes(of: pending) { buffer in
            XXHash64.finish(hash, buffer.baseAddress!, count: count)
        }
    }

    /// The XXH64 of one buffer.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let count = bytes.count
        guard let base = bytes.baseAddress, count > 0 else {
            return finish(seed &+ prime5, nil, count: 0)
        }
        var hash: UInt64
        var consumed = 0
        if count >= 32 {
            var lanes = initialLanes(seed: seed)
            consumed = consumeStripes(base, count: count, lanes: &lanes)
            hash = converge(lanes)
        } else {
            hash = seed &+ prime5
        }
        hash &+= UInt64(count)
        return finish(hash, base + consumed, count: count - consumed)
    }

    /// The XXH64 of `bytes` (a `Data`, `[UInt8]`, …).
    public static func hash(_ bytes: some ContiguousBytes, seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// `value` as the 16 lower-case hex digits the pkmz header stores.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    // MARK: - The algorithm

    @inline(__always)
    private static func rotateLeft(_ value: UInt64, _ bits: UInt64) -> UInt64 {
        (value << bits) | (value >> (64 - bits))
    }

    @inline(__always)
    private static func round(_ accumulator: UInt64, _ input: UInt64) -> UInt64 {
        rotateLeft(accumulator &+ input &* prime2, 31) &* prime1
    }

    @inline(__always)
    private static func mergeRound(_ accumulator: UInt64, _ lane: UInt64) -> UInt64 {
        (accumulator ^ round(0, lane)) &* prime1 &+ prime4
    }

    @inline(__always)
    private static func read64(_ pointer: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    private static func initialLanes(seed: UInt64) -> (UInt64, UInt64, UInt64, UInt64) {
        (seed &+ prime1 &+ prime2, seed &+ prime2, seed, seed &- prime1)
    }

    /// Folds every whole 32-byte stripe of `count` bytes into the lanes; returns the bytes consumed.
    @inline(__always)
    private static func consumeStripes(_ base: UnsafeRawPointer, count: Int,
                                       lanes: inout (UInt64, UInt64, UInt64, UInt64)) -> Int {
        var (lane1, lane2, lane3, lane4) = lanes
        let stripes = count / 32
        var pointer = base
        for _ in 0..<stripes {
            lane1 = round(lane1, read64(pointer, 0))
            lane2 = round(lane2, read64(pointer, 8))
            lane3 = round(lane3, read64(pointer, 16))
            lane4 = round(lane4, read64(pointer, 24))
            pointer += 32
        }
        lanes = (lane1, lane2, lane3, lane4)
        return stripes * 32
    }

    private static func converge(_ lanes: (UInt64, UInt64, UInt64, UInt64)) -> UInt64 {
        var hash = rotateLeft(lanes.0, 1) &+ rotateLeft(lanes.1, 7) &+ rotateLeft(lanes.2, 12) &+ rotateLeft(lanes.3, 18)
        hash = mergeRound(hash, lanes.0)
        hash = mergeRound(hash, lanes.1)
        hash = mergeRound(hash, lanes.2)
        hash = mergeRound(hash, lanes.3)
        return hash
    }

    /// Mixes in the last `count` (< 32) bytes and applies the final avalanche.
    private static func finish(_ start: UInt64, _ pointer: UnsafeRawPointer?, count: Int) -> UInt64 {
        var hash = start
        if let pointer {
            hash = mixTail(hash, pointer, count: count)
        }
        hash ^= hash >> 33
        hash &*= prime2
        hash ^= hash >> 29
        hash &*= prime3
        hash ^= hash >> 32
        return hash
    }

    /// Mixes in the last `count` (< 32) bytes.
    @inline(__always)
    private static func mixTail(_ start: UInt64, _ pointer: UnsafeRawPointer, count: Int) -> UInt64 {
        var hash = start
        var offset = 0
        while count - offset >= 8 {
            hash ^= round(0, read64(pointer, offset))
            hash = rotateLeft(hash, 27) &* prime1 &+ prime4
            offset += 8
        }
        if count - offset >= 4 {
            let word = UInt64(UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            hash ^= word &* prime1
            hash = rotateLeft(hash, 23) &* prime2 &+ prime3
            offset += 4
        }
        while offset < count {
            hash ^= UInt64(pointer.load(fromByteOffset: offset, as: UInt8.self)) &* prime5
            hash = rotateLeft(hash, 11) &* prime1
            offset += 1
        }
        return hash
    }
}
