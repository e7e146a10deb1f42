import Foundation
import PKMCheckpoints
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats

// MARK: - Fixtures

private struct PKMZTestFailure: Error, CustomStringConvertible {
    var description: String
}

private enum PKMZFixture {
    /// Little-endian bit patterns every float round trip must keep: NaNs with payloads (quiet,
    /// signalling, negative), -0, the smallest and largest subnormals, infinity.
    static func specials(_ dtype: DType) -> [UInt64] {
        switch dtype {
        case .float32: return [0x7FC0_0001, 0x7F80_0001, 0xFFFF_FFFF, 0x8000_0000, 0x0000_0001, 0x807F_FFFF, 0x7F80_0000]
        case .float16: return [0x7E01, 0x7C01, 0xFFFF, 0x8000, 0x0001, 0x83FF, 0x7C00]
        case .bfloat16: return [0x7FC1, 0x7F81, 0xFFFF, 0x8000, 0x0001, 0x807F, 0x7F80]
        case .float64:
            return [0x7FF8_0000_0000_0001, 0x7FF0_0000_0000_0001, 0xFFFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000,
                    0x1, 0x800F_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000]
        case .int64: return [0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF]
        case .int32: return [0x8000_0000, 0x7FFF_FFFF]
        case .int16: return [0x8000, 0x7FFF]
        case .int8, .uint8, .bool: return [0x00, 0xFF, 0x01]
        }
    }

    /// Random bytes of `shape`, with ``specials(_:)`` in the first elements.
    static func randomTensor(_ dtype: DType, _ shape: [Int], seed: UInt64) throws -> Tensor {
        guard let byteCount = ShapeMath.byteCount(shape, dtype: dtype) else { throw PKMZTestFailure(description: "bad shape") }
        var generator = PKMZTestGenerator(seed: seed)
        var bytes = [UInt8](repeating: 0, count: byteCount)
        var index = 0
        while index < byteCount {
            var word = generator.next()
            for _ in 0..<8 where index < byteCount {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        let size = dtype.byteSize
        for (element, special) in specials(dtype).enumerated() where (element + 1) * size <= byteCount {
            for byte in 0..<size { bytes[element * size + byte] = UInt8(truncatingIfNeeded: special >> (8 * byte)) }
        }
        return try Tensor(dtype: dtype, shape: shape, storage: Data(bytes))
    }

    /// Float32 values shaped like trained weights (roughly normal, σ ≈ 0.02).
    static func weightLike(_ count: Int, seed: UInt64) throws -> Tensor {
        var generator = PKMZTestGenerator(seed: seed)
        let values = (0..<count).map { _ -> Float in
            var sum: Float = 0
            for _ in 0..<4 { sum += Float(generator.next() >> 40) / Float(1 << 24) - 0.5 }
            return sum * 0.035
        }
        return try Tensor(float32: values, shape: [count])
    }

    /// Writer options; `version` defaults to 1 because most damage tests below edit version-1
    /// header text (version 2 has its own tests, "version 2 …").
    static func options(frameBytes: Int = 4096, byteGrouping: Bool = true, level: Int32 = 3, threads: Int = 2,
                        provenance: Provenance? = nil, version: Int = 1) -> WriteOptions {
        var options = WriteOptions()
        options.pkmzVersion = version
        options.frameBytes = frameBytes
        options.byteGrouping = byteGrouping
        options.compressionLevel = level
        options.threads = threads
        options.provenance = provenance
        return options
    }

    static func write(_ tensors: [(String, Tensor)], to url: URL, metadata: [String: String] = [:],
                      options: WriteOptions = options()) throws {
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        try PKMZWriter.write(to: url, tensorInfos: infos, metadata: metadata, options: options, progress: nil) { info in
            guard let match = tensors.first(where: { $0.0 == info.name }) else {
                throw PKMZTestFailure(description: "no tensor \(info.name)")
            }
            return match.1
        }
    }

    /// Three tensors spanning several frames (with a partial last one), a byte tensor, a small float16 one.
    static func standardTensors() throws -> [(String, Tensor)] {
        [("a", try randomTensor(.float32, [40, 100], seed: 1)),
         ("b", try randomTensor(.int8, [300], seed: 2)),
         ("c", try randomTensor(.float16, [7], seed: 3))]
    }

    /// Small but complete, for tests that damage every byte: a byte-grouped tensor of 2 frames,
    /// an int tensor, an empty one.
    static func smallTensors() throws -> [(String, Tensor)] {
        [("w", try Tensor(float32: (0..<1100).map { Float($0) * 0.001 - 0.5 }, shape: [1100])),
         ("i", try randomTensor(.int32, [40], seed: 10)),
         ("e", try randomTensor(.float16, [0], seed: 11))]
    }

    /// Opens `url` and reads every tensor.
    static func openAndReadAll(_ url: URL, limits: ReaderLimits = ReaderLimits()) throws {
        let reader = try PKMZReader(url: url, limits: limits)
        _ = try reader.readAll()
    }

    /// Bytes → file, rewritten in place (callers release every reader of the file first, so no
    /// mapping of it is alive).
    static func store(_ bytes: [UInt8], at url: URL) throws {
        try Data(bytes).write(to: url)
    }
}

/// A pkmz file split into its parts, for building damaged files whose checksums still match.
private struct PKMZFileParts {
    var prologue: [UInt8]
    var data: [UInt8]
    var header: [UInt8]
    var trailerVersion: UInt32 = 1

    /// The version in the prologue.
    var version: Int { Int(prologue[8]) }

    init(_ bytes: [UInt8]) throws {
        let size = bytes.count
        func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        let headerOffset = u64(size - 32), headerLength = u64(size - 24)
        guard headerOffset + headerLength + 32 == size else { throw PKMZTestFailure(description: "not a pkmz file") }
        prologue = Array(bytes[0..<16])
        data = Array(bytes[16..<headerOffset])
        header = Array(bytes[headerOffset..<(headerOffset + headerLength)])
        trailerVersion = UInt32(bytes[size - 8])
    }

    init(url: URL) throws {
        try self.init([UInt8](try Data(contentsOf: url)))
    }

    /// The file with a trailer matching the parts (offset, length, XXH64 of prologue ‖ header).
    func assembled() -> [UInt8] {
        var trailer: [UInt8] = []
        PKMZWriter.appendLittleEndian(UInt64(16 + data.count), to: &trailer)
        PKMZWriter.appendLittleEndian(UInt64(header.count), to: &trailer)
        var hasher = XXHash64()
        hasher.update(prologue)
        hasher.update(header)
        PKMZWriter.appendLittleEndian(hasher.finalize(), to: &trailer)
        PKMZWriter.appendLittleEndian(trailerVersion, to: &trailer)
        trailer += Array("PKMZ".utf8)
        return prologue + data + header + trailer
    }

    func decodedHeader() throws -> PKMZHeader {
        var limits = ReaderLimits()
        limits.maxTotalBytes = Int.max
        return try PKMZHeader.decode(header, path: "test", limits: limits, version: version, dataStart: 16, dataEnd: 16 + data.count)
    }

    var headerText: String {
        get { String(decoding: header, as: UTF8.self) }
        set { header = Array(newValue.utf8) }
    }

    /// Replaces the first occurrence of `target` in the header text.
    mutating func replaceInHeader(_ target: String, with replacement: String) throws {
        guard let range = headerText.range(of: target) else { throw PKMZTestFailure(description: "'\(target)' not in header") }
        headerText = headerText.replacingCharacters(in: range, with: replacement)
    }

    /// Applies `change` to one frame's compressed bytes and updates the frame table to match (XXH64, size, later offsets).
    mutating func alterFrame(tensor: Int, frame: Int, _ change: (inout [UInt8]) throws -> Void) throws {
        var decoded = try decodedHeader()
        let entry = decoded.tensors[tensor].frames[frame]
        let start = entry.offset - 16
        var bytes = Array(data[start..<(start + entry.compressedBytes)])
        try change(&bytes)
        data.replaceSubrange(start..<(start + entry.compressedBytes), with: bytes)
        decoded.tensors[tensor].frames[frame].checksum = XXHash64.hash(bytes)
        // A frame that changed length moves every later frame.
        let delta = bytes.count - entry.compressedBytes
        decoded.tensors[tensor].frames[frame].compressedBytes = bytes.count
        for tensorIndex in decoded.tensors.indices {
            for frameIndex in decoded.tensors[tensorIndex].frames.indices where (tensorIndex, frameIndex) > (tensor, frame) {
                decoded.tensors[tensorIndex].frames[frameIndex].offset += delta
            }
        }
        header = decoded.encoded()
    }
}

/// Where the fields of a zstd frame header are (RFC 8878 §3.1.1.1).
private struct ZstdFrameHeaderLayout {
    var contentSizeOffset: Int
    var contentSizeBytes: Int
    var headerBytes: Int

    init(_ frame: [UInt8]) throws {
        guard frame.count > 6, frame[0..<4] == [0x28, 0xB5, 0x2F, 0xFD] else { throw PKMZTestFailure(description: "not a zstd frame") }
        let descriptor = frame[4]
        let singleSegment = (descriptor >> 5) & 1 == 1
        var offset = 5 + (singleSegment ? 0 : 1)
        offset += [0, 1, 2, 4][Int(descriptor & 3)]
        contentSizeOffset = offset
        let flag = Int(descriptor >> 6)
        contentSizeBytes = flag == 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][flag]
        headerBytes = offset + contentSizeBytes
    }
}

/// One way of damaging a header while keeping every checksum valid, and the error it must cause.
struct PKMZHeaderDamage: Sendable, CustomTestStringConvertible {
    var name: String
    fileprivate var apply: @Sendable (inout PKMZFileParts) throws -> Void
    var accepts: @Sendable (FormatError) -> Bool
    var testDescription: String { name }

    fileprivate init(_ name: String, _ apply: @escaping @Sendable (inout PKMZFileParts) throws -> Void,
                     accepts: @escaping @Sendable (FormatError) -> Bool) {
        self.name = name
        self.apply = apply
        self.accepts = accepts
    }

    static func invalidHeader(_ error: FormatError) -> Bool { if case .invalidHeader = error { return true }; return false }
    static func invalidTensor(_ error: FormatError) -> Bool { if case .invalidTensor = error { return true }; return false }
    static func invalidOffsets(_ error: FormatError) -> Bool { if case .invalidOffsets = error { return true }; return false }

    static let all: [PKMZHeaderDamage] = [
        .init("not JSON", { $0.headerText = "not json" }, accepts: invalidHeader),
        .init("JSON array", { $0.headerText = "[1,2]" }, accepts: invalidHeader),
        .init("unknown key", { try $0.replaceInHeader("{\"format\"", with: "{\"extra\":1,\"format\"") }, accepts: invalidHeader),
        .init("duplicate key", { try $0.replaceInHeader("{\"format\":\"pkmz\"", with: "{\"format\":\"pkmz\",\"format\":\"pkmz\"") },
              accepts: invalidHeader),
        .init("other format", { try $0.replaceInHeader("\"pkmz\"", with: "\"pkmx\"") }, accepts: invalidHeader),
        .init("header version 2", { try $0.replaceInHeader("\"version\":1", with: "\"version\":2") }, accepts: invalidHeader),
        .init("other codec", { try $0.replaceInHeader("\"zstd\"", with: "\"lz4\"") }, accepts: invalidHeader),
        .init("fractional frame_bytes", { try $0.replaceInHeader("\"frame_bytes\":4096", with: "\"frame_bytes\":4096.0") },
              accepts: invalidHeader),
        .init("frame_bytes below 4 KiB", { try $0.replaceInHeader("\"frame_bytes\":4096", with: "\"frame_bytes\":1024") },
              accepts: invalidHeader),
        .init("config a string", { try $0.replaceInHeader("\"config\":null", with: "\"config\":\"{}\"") }, accepts: invalidHeader),
        .init("config nested 200 deep", {
            try $0.replaceInHeader("\"config\":null", with: "\"config\":" + String(repeating: "[", count: 200) + String(repeating: "]", count: 200))
        }, accepts: invalidHeader),
        .init("metadata value a number", { try $0.replaceInHeader("\"note\":\"x\"", with: "\"note\":1") }, accepts: invalidHeader),
        .init("provenance without tool", { try $0.replaceInHeader("\"provenance\":null", with: "\"provenance\":{\"created\":\"now\"}") },
              accepts: invalidHeader),
        .init("unknown dtype", { try $0.replaceInHeader("\"dtype\":\"F32\"", with: "\"dtype\":\"F8\"") }, accepts: { error in
            if case .unsupportedDType(_, let tensor, let dtype) = error { return tensor == "a" && dtype == "F8" }
            return false
        }),
        .init("negative dimension", { try $0.replaceInHeader("\"shape\":[40,100]", with: "\"shape\":[-40,-100]") }, accepts: invalidTensor),
        .init("unknown tensor key", { try $0.replaceInHeader("\"byte_grouping\"", with: "\"level\":1,\"byte_grouping\"") }, accepts: invalidTensor),
        .init("upper-case checksum", { parts in
            var text = parts.headerText
            guard let range = text.range(of: "[0-9a-f]{16}", options: .regularExpression) else { return }
            text.replaceSubrange(range, with: text[range].uppercased())
            parts.headerText = text
        }, accepts: invalidTensor),
        .init("byte grouping on int8", { try $0.replaceInHeader("\"I8\",\"shape\":[300],\"byte_grouping\":false",
                                                                 with: "\"I8\",\"shape\":[300],\"byte_grouping\":true") }, accepts: invalidTensor),
        .init("duplicate tensor name", { parts in
            var header = try parts.decodedHeader()
            header.tensors[1].info.name = "a"
            parts.header = header.encoded()
        }, accepts: { error in if case .duplicateTensor(_, let tensor) = error { return tensor == "a" }; return false }),
        .init("gap between frames", { parts in
            var header = try parts.decodedHeader()
            header.tensors[0].frames[1].offset += 1
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("frames out of order", { parts in
            var header = try parts.decodedHeader()
            header.tensors[0].frames.swapAt(0, 1)
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("raw size not whole elements", { parts in
            var header = try parts.decodedHeader()
            header.tensors[0].frames[3].rawBytes -= 1
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("raw size above frame_bytes", { parts in
            var header = try parts.decodedHeader()
            header.tensors[0].frames[0].rawBytes += 4096
            header.tensors[0].frames[3].rawBytes -= 4096
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("shape larger than the frames", { parts in
            var header = try parts.decodedHeader()
            header.tensors[0].info.shape = [41, 100]
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("frame claims an impossible expansion", { parts in
            var header = try parts.decodedHeader()
            header.frameBytes = 64 << 20
            header.tensors[2].frames[0].rawBytes = 60 << 20
            header.tensors[2].info.shape = [30 << 20]
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("frames stop before the header", { parts in
            var header = try parts.decodedHeader()
            header.tensors[2].frames = []
            header.tensors[2].info.shape = [0]
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
        .init("frame runs into the header", { parts in
            var header = try parts.decodedHeader()
            let last = header.tensors[2].frames.count - 1
            header.tensors[2].frames[last].compressedBytes += 1
            parts.header = header.encoded()
        }, accepts: invalidOffsets),
    ]
}

// MARK: - Tests

@Suite("PKMZ")
struct PKMZTests {
    // MARK: Round trips

    @Test("every dtype round-trips bit for bit, versions 1 and 2", arguments: DType.allCases, [(true, 1), (false, 1), (true, 2), (false, 2)])
    func roundTripEveryDType(dtype: DType, variant: (byteGrouping: Bool, version: Int)) throws {
        let byteGrouping = variant.byteGrouping
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        // 5003 elements: several 4 KiB frames and a partial last one for every element size,
        // and an element count that is not a multiple of 8 (the transposes' block size).
        let tensors = [("x", try PKMZFixture.randomTensor(dtype, [5003], seed: 11)),
                       ("y", try PKMZFixture.randomTensor(dtype, [3, 5, 7], seed: 12))]
        try PKMZFixture.write(tensors, to: url, options: PKMZFixture.options(byteGrouping: byteGrouping, version: variant.version))
        let reader = try PKMZReader(url: url)
        #expect(reader.formatVersion == variant.version)
        try reader.verifyData()
        #expect(reader.tensorInfos.map(\.name) == ["x", "y"])
        for (name, expected) in tensors {
            let actual = try reader.tensor(named: name)
            #expect(actual.isBitwiseEqual(to: expected), "\(name) \(dtype)")
            let storage = try #require(reader.storage(of: name))
            #expect(storage.byteGrouping == (byteGrouping && dtype.isFloatingPoint && dtype.byteSize > 1))
        }
        let frames = try #require(reader.storage(of: "x")).frameCount
        let chunk = 4096 / dtype.byteSize * dtype.byteSize
        #expect(frames == (5003 * dtype.byteSize + chunk - 1) / chunk)
    }

    @Test("rank 0 and zero-size tensors")
    func degenerateShapes() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensors = [("scalar", try PKMZFixture.randomTensor(.float32, [], seed: 1)),
                       ("empty", try PKMZFixture.randomTensor(.float32, [0], seed: 2)),
                       ("empty3", try PKMZFixture.randomTensor(.int64, [3, 0, 2], seed: 3)),
                       ("scalar64", try PKMZFixture.randomTensor(.float64, [], seed: 4))]
        try PKMZFixture.write(tensors, to: url)
        let reader = try PKMZReader(url: url)
        for (name, expected) in tensors {
            let actual = try reader.tensor(named: name)
            #expect(actual.isBitwiseEqual(to: expected), "\(name)")
        }
        #expect(try #require(reader.storage(of: "empty")).frameCount == 0)
        #expect(try #require(reader.storage(of: "scalar")).frameCount == 1)
        #expect(reader.tensorInfos.map(\.shape) == [[], [0], [3, 0, 2], []])
    }

    @Test("a file of no tensors")
    func noTensors() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("empty.pkmz")
        try PKMZFixture.write([], to: url, metadata: ["note": "nothing"])
        let reader = try PKMZReader(url: url)
        #expect(reader.tensorInfos.isEmpty)
        #expect(reader.metadata == ["note": "nothing"])
        try reader.verifyChecksums()
    }

    @Test("many frames with a partial last one tile the data section")
    func manyFrames() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let big = try PKMZFixture.randomTensor(.float32, [25_000], seed: 5)  // 100,000 bytes: 24 frames + 1,696 bytes
        let small = try PKMZFixture.randomTensor(.bfloat16, [2049], seed: 6)  // 4,098 bytes: 2 frames
        try PKMZFixture.write([("big", big), ("small", small)], to: url, options: PKMZFixture.options(threads: 3))
        let reader = try PKMZReader(url: url, threads: 3)
        let bigStorage = try #require(reader.storage(of: "big"))
        let smallStorage = try #require(reader.storage(of: "small"))
        #expect(bigStorage.frameCount == 25)
        #expect(smallStorage.frameCount == 2)
        #expect(bigStorage.dataOffset == PKMZLayout.prologueSize)
        #expect(smallStorage.dataOffset == bigStorage.dataOffset + bigStorage.compressedBytes)
        let header = try PKMZFileParts(url: url).decodedHeader()
        #expect(header.tensors[0].frames.map(\.rawBytes) == Array(repeating: 4096, count: 24) + [1696])
        #expect(try reader.tensor(named: "big").isBitwiseEqual(to: big))
        #expect(try reader.tensor(named: "small").isBitwiseEqual(to: small))
        // The same bytes whatever the number of decoding threads.
        let serial = try PKMZReader(url: url, threads: 1)
        #expect(try serial.tensor(named: "big").isBitwiseEqual(to: big))
    }

    @Test("maximally compressible data stays within the reader's expansion bound")
    func extremeCompression() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("zeros.pkmz")
        let zeros = try Tensor(zeros: .uint8, shape: [64 << 20])  // one 64 MiB frame of zeros: RLE blocks
        try PKMZFixture.write([("z", zeros)], to: url, options: PKMZFixture.options(frameBytes: 64 << 20, level: 19))
        let reader = try PKMZReader(url: url)
        let storage = try #require(reader.storage(of: "z"))
        #expect(storage.frameCount == 1)
        #expect(storage.compressedBytes * PKMZLayout.maximumExpansion >= storage.rawBytes)
        #expect(try reader.tensor(named: "z").isBitwiseEqual(to: zeros))
    }

    @Test("compression levels", arguments: [Int32(-5), 1, 3, 9, 19])
    func compressionLevels(level: Int32) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensor = try PKMZFixture.weightLike(6000, seed: 7)
        try PKMZFixture.write([("w", tensor)], to: url, options: PKMZFixture.options(level: level))
        let reader = try PKMZReader(url: url)
        #expect(reader.compressionLevel == Int(level))
        #expect(try reader.tensor(named: "w").isBitwiseEqual(to: tensor))
    }

    @Test("byte grouping makes weight-like floats smaller")
    func byteGroupingHelps() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let tensor = try PKMZFixture.weightLike(50_000, seed: 8)
        let grouped = folder.file("grouped.pkmz"), plain = folder.file("plain.pkmz")
        try PKMZFixture.write([("w", tensor)], to: grouped, options: PKMZFixture.options(frameBytes: 65536, byteGrouping: true))
        try PKMZFixture.write([("w", tensor)], to: plain, options: PKMZFixture.options(frameBytes: 65536, byteGrouping: false))
        let groupedBytes = try #require(try PKMZReader(url: grouped).storage(of: "w")).compressedBytes
        let plainBytes = try #require(try PKMZReader(url: plain).storage(of: "w")).compressedBytes
        #expect(groupedBytes < plainBytes * 97 / 100, "grouped \(groupedBytes) vs plain \(plainBytes)")
        #expect(try PKMZReader(url: grouped).tensor(named: "w").isBitwiseEqual(to: tensor))
    }

    @Test("byte-plane transposes invert each other and match the definition", arguments: [2, 3, 4, 8])
    func transposes(elementSize: Int) throws {
        for count in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 1000, 1027] {
            let bytes = count * elementSize
            let input = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 3) }
            var grouped = [UInt8](repeating: 0, count: bytes)
            var restored = [UInt8](repeating: 0, count: bytes)
            input.withUnsafeBytes { source in
                grouped.withUnsafeMutableBytes { target in
                    guard let from = source.baseAddress, let to = target.baseAddress else { return }
                    PKMZByteGrouping.group(from, into: to, byteCount: bytes, elementSize: elementSize)
                }
            }
            for element in 0..<count {
                for plane in 0..<elementSize where grouped[plane * count + element] != input[element * elementSize + plane] {
                    Issue.record("size \(elementSize) count \(count): element \(element) plane \(plane) misplaced")
                    return
                }
            }
            grouped.withUnsafeBytes { source in
                restored.withUnsafeMutableBytes { target in
                    guard let from = source.baseAddress, let to = target.baseAddress else { return }
                    PKMZByteGrouping.ungroup(from, into: to, byteCount: bytes, elementSize: elementSize)
                }
            }
            #expect(restored == input, "size \(elementSize) count \(count)")
        }
    }

    @Test("config, metadata and provenance round-trip")
    func headerRoundTrip() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let config = "{\"hidden_size\": 8,\n  \"nested\": {\"a\": [1, 2.5e-3, null, true]}, \"name\": \"b\\u00e9rt \\\"x\\\"\"}"
        let metadata = ["config": "\n" + config + "\n", "note": "ünïcode \"quoted\"\n\t\u{1}", "empty": "", "format": "pt"]
        var provenance = Provenance(sourceFile: "model.h5", sourceSHA256: String(repeating: "ab", count: 32),
                                    operation: "convert --to pkmz")
        provenance.created = "2024-01-02T03:04:05Z"
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url, metadata: metadata,
                              options: PKMZFixture.options(provenance: provenance))
        let reader = try PKMZReader(url: url)
        #expect(reader.metadata["config"] == config, "config text is kept verbatim, minus surrounding whitespace")
        var others = metadata
        others["config"] = nil
        #expect(reader.metadata.filter { $0.key != "config" } == others)
        #expect(reader.provenance == provenance)
        #expect(reader.formatVersion == 1)
        #expect(reader.frameBytes == 4096)

        // The header stores the config as an object and is valid JSON with the documented top-level keys.
        let header = try PKMZFileParts(url: url).header
        let object = try #require(try JSONSerialization.jsonObject(with: Data(header)) as? [String: Any])
        #expect(Set(object.keys) == ["format", "version", "compression", "frame_bytes", "tensors", "config", "metadata", "provenance"])
        #expect(object["config"] is [String: Any])
        #expect((object["metadata"] as? [String: String])?["config"] == nil)

        // A config that is not a JSON object stays an ordinary string.
        let other = folder.file("other.pkmz")
        try PKMZFixture.write([], to: other, metadata: ["config": "[1, 2]"])
        let otherReader = try PKMZReader(url: other)
        #expect(otherReader.metadata == ["config": "[1, 2]"])
        #expect(otherReader.provenance == nil)
        #expect(try PKMZFileParts(url: other).headerText.contains("\"config\":null"))
    }

    @Test("a source digest computed in the background fills the provenance of every writer; a failed one fails the write")
    func pendingSourceDigest() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let source = folder.file("source.bin")
        try Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: source)
        let expected = try SHA256.hex(ofFile: source)
        let pending = PendingSHA256(file: source)
        #expect(try pending.hex() == expected)
        #expect(try pending.hex() == expected, "a second call returns the same value at once")
        for format in CheckpointFormat.allCases where format.isWritable {
            var options = WriteOptions()
            options.provenance = Provenance(sourceFile: "source.bin", sourceSHA256: nil, operation: "test")
            options.pendingSourceDigest = PendingSHA256(file: source)
            let url = folder.file("out-\(format.rawValue).\(format.rawValue == "hdf5" ? "h5" : format.rawValue)")
            let tensors = try PKMZFixture.standardTensors()
            let infos = tensors.map { TensorInfo(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
            try Checkpoints.write(to: url, format: format, tensorInfos: infos, metadata: [:], options: options,
                                  progress: nil) { info in tensors.first { $0.0 == info.name }!.1 }
            #expect(try Checkpoints.open(url).provenance?.sourceSHA256 == expected, "\(format)")
        }
        // Released before it finishes: the hash is cancelled and its thread stopped before deinit returns.
        let large = folder.file("large.bin")
        _ = FileManager.default.createFile(atPath: large.path, contents: nil)
        let handle = try FileHandle(forWritingTo: large)
        try handle.truncate(atOffset: 256 << 20)   // sparse: 256 MiB of zeros
        try handle.close()
        let started = Date()
        do { _ = PendingSHA256(file: large) }
        #expect(Date().timeIntervalSince(started) < 30)
        var failing = WriteOptions()
        failing.provenance = Provenance(sourceFile: "gone.bin", sourceSHA256: nil)
        failing.pendingSourceDigest = PendingSHA256(file: folder.file("gone.bin"))
        let url = folder.file("never.pkmz")
        #expect(throws: FormatError.self) {
            try Checkpoints.write(to: url, format: .pkmz, tensorInfos: [], metadata: [:], options: failing, progress: nil) { info in
                throw FormatError.tensorNotFound(path: url.path, tensor: info.name)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: url.path))
    }

    @Test("detected by magic and opened through Checkpoints")
    func detection() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("weights.bin")
        let tensors = try PKMZFixture.standardTensors()
        try PKMZFixture.write(tensors, to: url)
        #expect(try Checkpoints.detectFormat(of: url) == .pkmz)
        let reader = try Checkpoints.open(url)
        #expect(reader.format == .pkmz)
        let all = try reader.readAll()
        for (name, tensor) in tensors { #expect(all[name]?.isBitwiseEqual(to: tensor) == true) }
        // And written through the generic entry point.
        let copy = folder.file("copy.pkmz")
        try Checkpoints.write(all, to: copy, format: .pkmz)
        #expect(try Checkpoints.open(copy).readAll()["a"]?.isBitwiseEqual(to: tensors[0].1) == true)
    }

    // MARK: Reading

    @Test("one tensor reads without the others")
    func independentTensors() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensors = try PKMZFixture.standardTensors()
        try PKMZFixture.write(tensors, to: url)
        var parts = try PKMZFileParts(url: url)
        parts.data[10] ^= 0x40  // inside tensor "a"'s first frame; its checksum now disagrees
        try PKMZFixture.store(parts.assembled(), at: url)
        let reader = try PKMZReader(url: url)  // the header is intact, so opening succeeds
        #expect(try reader.tensor(named: "b").isBitwiseEqual(to: tensors[1].1))
        #expect(try reader.tensor(named: "c").isBitwiseEqual(to: tensors[2].1))
        let error = #expect(throws: FormatError.self) { try reader.tensor(named: "a") }
        guard case .checksumMismatch(_, let what, let offset)? = error else {
            Issue.record("expected a checksum mismatch, got \(String(describing: error))")
            return
        }
        #expect(what.contains("'a'") && what.contains("frame 0"))
        #expect(offset == 16)
        let verifyError = #expect(throws: FormatError.self) { try reader.verifyChecksums() }
        #expect("\(verifyError.map { "\($0)" } ?? "")".contains("'a'"))
        #expect(throws: FormatError.self) { try reader.tensor(named: "missing") }
    }

    @Test("verifyChecksums passes on an intact file")
    func verifyIntact() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        try PKMZReader(url: url).verifyChecksums()
    }

    @Test("any single damaged byte is detected", arguments: [1, 2])
    func everyByteFlip(version: Int) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let original = folder.file("original.pkmz")
        let tensors = try PKMZFixture.smallTensors()
        var provenance = Provenance(sourceFile: "m.h5", sourceSHA256: nil)
        provenance.created = "2024-01-01T00:00:00Z"
        try PKMZFixture.write(tensors, to: original, metadata: ["config": "{\"a\":1}", "k": "v"],
                              options: PKMZFixture.options(provenance: provenance, version: version))
        let bytes = [UInt8](try Data(contentsOf: original))
        let damaged = folder.file("damaged.pkmz")
        var undetected: [String] = []
        for position in bytes.indices {
            // Every position with its lowest bit flipped, every third with all bits flipped.
            for mask: UInt8 in position % 3 == 0 ? [0x01, 0xFF] : [0x01] {
                var copy = bytes
                copy[position] ^= mask
                try PKMZFixture.store(copy, at: damaged)
                do {
                    try PKMZFixture.openAndReadAll(damaged)
                    undetected.append("byte \(position) ^ \(mask)")
                } catch is FormatError {
                    // Detected, as required.
                } catch {
                    undetected.append("byte \(position) ^ \(mask): non-format error \(error)")
                }
            }
        }
        let undetectedCount = undetected.count
        #expect(undetectedCount == 0, "first undetected: \(undetected.prefix(10)) (file of \(bytes.count) bytes)")
        #expect(bytes.count > 500)
    }

    @Test("truncated files are refused at every length", arguments: [1, 2])
    func truncation(version: Int) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let original = folder.file("original.pkmz")
        try PKMZFixture.write(try PKMZFixture.smallTensors(), to: original, metadata: ["config": "{\"a\":1}"],
                              options: PKMZFixture.options(version: version))
        let bytes = [UInt8](try Data(contentsOf: original))
        let cut = folder.file("cut.pkmz")
        for length in 0..<bytes.count {
            try PKMZFixture.store(Array(bytes.prefix(length)), at: cut)
            #expect(throws: FormatError.self, "length \(length)") { try PKMZFixture.openAndReadAll(cut) }
        }
        // Extra bytes after the trailer are refused too.
        try PKMZFixture.store(bytes + [0], at: cut)
        #expect(throws: FormatError.self) { try PKMZFixture.openAndReadAll(cut) }
    }

    @Test("empty file, wrong magic, missing file")
    func notPKMZ() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("bad.pkmz")
        try PKMZFixture.store([], at: url)
        let emptyError = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        guard case .truncated? = emptyError else { Issue.record("empty: \(String(describing: emptyError))"); return }

        try PKMZFixture.store(Array("GARBAGE!xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".utf8), at: url)
        let magicError = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        guard case .badMagic? = magicError else { Issue.record("magic: \(String(describing: magicError))"); return }

        let missing = #expect(throws: FormatError.self) { try PKMZReader(url: folder.file("nope.pkmz")) }
        guard case .fileNotFound? = missing else { Issue.record("missing: \(String(describing: missing))"); return }
    }

    @Test("a future version is refused with a clear message")
    func futureVersion() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        var parts = try PKMZFileParts(url: url)
        parts.prologue[8] = 3
        parts.trailerVersion = 3
        try PKMZFixture.store(parts.assembled(), at: url)
        let error = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        guard case .unsupportedVersion(_, let found, let supported)? = error else {
            Issue.record("expected unsupportedVersion, got \(String(describing: error))")
            return
        }
        #expect(found == 3 && supported == [1, 2])
        #expect("\(error.map { "\($0)" } ?? "")".contains("version 3 is not supported"))

        // Only one of the two version fields changed: damage, not a newer file.
        parts.trailerVersion = 1
        try PKMZFixture.store(parts.assembled(), at: url)
        let mixed = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        guard case .invalidHeader? = mixed else { Issue.record("mixed versions: \(String(describing: mixed))"); return }

        // Flags are reserved.
        parts.prologue[8] = 1
        parts.prologue[12] = 1
        try PKMZFixture.store(parts.assembled(), at: url)
        #expect(throws: FormatError.self) { try PKMZReader(url: url) }
    }

    @Test("trailer fields that disagree with the file are refused")
    func trailerFields() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        let bytes = [UInt8](try Data(contentsOf: url))
        let size = bytes.count
        func patched(_ field: Int, _ value: UInt64) -> [UInt8] {
            var copy = bytes
            for index in 0..<8 { copy[size - 32 + field + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
            return copy
        }
        let headerOffset = (0..<8).reduce(0) { $0 | Int(bytes[size - 32 + $1]) << (8 * $1) }
        let cases: [(String, [UInt8], (FormatError) -> Bool)] = [
            ("header length beyond the file", patched(8, UInt64(size)), { if case .truncated = $0 { return true }; return false }),
            ("header length 2^64-1", patched(8, UInt64.max), { if case .truncated = $0 { return true }; return false }),
            ("header offset beyond the file", patched(0, UInt64(size + 100)), { if case .invalidHeader = $0 { return true }; return false }),
            ("header offset 2^63", patched(0, 1 << 63), { if case .invalidHeader = $0 { return true }; return false }),
            ("header offset inside the prologue", patched(0, 3), { if case .invalidHeader = $0 { return true }; return false }),
            ("header offset one early", patched(0, UInt64(headerOffset - 1)), { if case .invalidHeader = $0 { return true }; return false }),
        ]
        for (name, damaged, accepts) in cases {
            try PKMZFixture.store(damaged, at: url)
            let error = #expect(throws: FormatError.self, "\(name)") { try PKMZReader(url: url) }
            #expect(error.map(accepts) == true, "\(name): \(String(describing: error))")
        }
    }

    @Test("damaged headers with valid checksums are refused", arguments: PKMZHeaderDamage.all)
    func damagedHeaders(damage: PKMZHeaderDamage) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url, metadata: ["note": "x"])
        var parts = try PKMZFileParts(url: url)
        try damage.apply(&parts)
        try PKMZFixture.store(parts.assembled(), at: url)
        let error = #expect(throws: FormatError.self) { try PKMZFixture.openAndReadAll(url) }
        #expect(error.map(damage.accepts) == true, "\(String(describing: error))")
    }

    @Test("limits are checked before allocating")
    func limits() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        func limitName(_ change: (inout ReaderLimits) -> Void) -> String? {
            var limits = ReaderLimits()
            change(&limits)
            do {
                _ = try PKMZReader(url: url, limits: limits)
                return nil
            } catch FormatError.limitExceeded(_, let limit, _, _) {
                return limit.rawValue
            } catch {
                return "other: \(error)"
            }
        }
        #expect(limitName { $0.maxHeaderBytes = 100 } == "header bytes")
        #expect(limitName { $0.maxTensorCount = 2 } == "tensor count")
        #expect(limitName { $0.maxRank = 1 } == "rank")
        #expect(limitName { $0.maxTotalBytes = 16_000 } == "total bytes")
        #expect(limitName { $0.maxTotalBytes = 16_000 + 300 + 14 } == nil)
    }

    @Test("a header declaring a petabyte tensor is refused before allocating")
    func petabyteTensor() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        var parts = try PKMZFileParts(url: url)
        var header = try parts.decodedHeader()
        header.tensors[0].info.shape = [1 << 48]  // 2^48 float32 = 1 PiB
        parts.header = header.encoded()
        try PKMZFixture.store(parts.assembled(), at: url)
        let error = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        guard case .limitExceeded(_, .totalBytes, _, _)? = error else {
            Issue.record("expected the total-bytes limit, got \(String(describing: error))")
            return
        }
        // Even with every limit lifted the frame table cannot supply a petabyte.
        var lifted = ReaderLimits()
        lifted.maxTotalBytes = Int.max
        let liftedError = #expect(throws: FormatError.self) { try PKMZReader(url: url, limits: lifted) }
        guard case .invalidOffsets(_, "a", _)? = liftedError else {
            Issue.record("expected invalid offsets, got \(String(describing: liftedError))")
            return
        }
        // A shape whose byte count overflows Int.
        header.tensors[0].info.shape = [1 << 40, 1 << 40]
        parts.header = header.encoded()
        try PKMZFixture.store(parts.assembled(), at: url)
        #expect(throws: FormatError.self) { try PKMZReader(url: url, limits: lifted) }
    }

    @Test("a corrupt zstd frame with a matching checksum fails to decode")
    func corruptFrameMatchingHash() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url)
        let pristine = try PKMZFileParts(url: url)

        // The first block's type set to 3, which RFC 8878 reserves.
        var reservedBlock = pristine
        try reservedBlock.alterFrame(tensor: 0, frame: 1) { frame in
            let layout = try ZstdFrameHeaderLayout(frame)
            frame[layout.headerBytes] |= 0b110
        }
        // The frame's magic number destroyed.
        var noMagic = pristine
        try noMagic.alterFrame(tensor: 0, frame: 1) { frame in frame[0] ^= 0xFF }
        // A frame followed by bytes that belong to no frame: the table entry is one byte longer.
        var trailing = pristine
        try trailing.alterFrame(tensor: 2, frame: 0) { frame in frame.append(0) }

        for (name, parts) in [("reserved block", reservedBlock), ("no magic", noMagic), ("trailing byte", trailing)] {
            try PKMZFixture.store(parts.assembled(), at: url)
            let reader = try PKMZReader(url: url)
            try reader.verifyChecksums()  // the checksums match: only decoding can tell
            let tensorName = name == "trailing byte" ? "c" : "a"
            let error = #expect(throws: FormatError.self, "\(name)") { try reader.tensor(named: tensorName) }
            guard case .decompressionFailed(_, let tensor, let offset, _)? = error else {
                Issue.record("\(name): expected decompressionFailed, got \(String(describing: error))")
                continue
            }
            #expect(tensor == tensorName)
            #expect(offset == (try parts.decodedHeader()).tensors[name == "trailing byte" ? 2 : 0].frames[name == "trailing byte" ? 0 : 1].offset)
        }
    }

    @Test("a frame declaring more content than the table is refused")
    func frameContentSizeTooLarge() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensors = try PKMZFixture.standardTensors()
        try PKMZFixture.write(tensors, to: url)
        var parts = try PKMZFileParts(url: url)
        try parts.alterFrame(tensor: 0, frame: 0) { frame in
            let layout = try ZstdFrameHeaderLayout(frame)
            try #require(layout.contentSizeBytes >= 2)
            // Declare 8192 bytes instead of 4096 (a two-byte field stores the size minus 256).
            let stored: UInt64 = layout.contentSizeBytes == 2 ? 8192 - 256 : 8192
            for index in 0..<layout.contentSizeBytes {
                frame[layout.contentSizeOffset + index] = UInt8(truncatingIfNeeded: stored >> (8 * index))
            }
        }
        try PKMZFixture.store(parts.assembled(), at: url)
        let reader = try PKMZReader(url: url)
        let error = #expect(throws: FormatError.self) { try reader.tensor(named: "a") }
        guard case .decompressionFailed(_, "a", 16, let reason)? = error else {
            Issue.record("expected decompressionFailed, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("8192"))
        #expect(try reader.tensor(named: "b").isBitwiseEqual(to: tensors[1].1))
    }

    // MARK: Writing

    @Test("the writer is atomic: a failure midway leaves nothing behind")
    func writerAtomicity() throws {
        struct Interrupted: Error {}
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensors = try PKMZFixture.standardTensors()
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        func failingWrite() throws {
            try PKMZWriter.write(to: url, tensorInfos: infos, metadata: [:], options: PKMZFixture.options(), progress: nil) { info in
                if info.name == "c" { throw Interrupted() }
                return tensors.first { $0.0 == info.name }?.1 ?? tensors[0].1
            }
        }
        #expect(throws: Interrupted.self) { try failingWrite() }
        #expect(folder.contents.isEmpty)

        let previous = Data("previous contents".utf8)
        try previous.write(to: url)
        #expect(throws: Interrupted.self) { try failingWrite() }
        #expect(try Data(contentsOf: url) == previous)
        #expect(folder.contents == ["model.pkmz"])
    }

    @Test("the writer checks each tensor against its declared info")
    func writerChecksTensors() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensor = try PKMZFixture.randomTensor(.float32, [4, 4], seed: 1)
        for declared in [TensorInfo(name: "w", dtype: .float16, shape: [4, 4]), TensorInfo(name: "w", dtype: .float32, shape: [16])] {
            let error = #expect(throws: FormatError.self) {
                try PKMZWriter.write(to: url, tensorInfos: [declared], metadata: [:], options: PKMZFixture.options(),
                                     progress: nil) { _ in tensor }
            }
            guard case .invalidTensor(_, "w", _)? = error else { Issue.record("\(String(describing: error))"); continue }
        }
        let duplicate = #expect(throws: FormatError.self) {
            try PKMZWriter.write(to: url, tensorInfos: [TensorInfo(name: "w", dtype: .float32, shape: [4, 4]),
                                                        TensorInfo(name: "w", dtype: .float32, shape: [4, 4])],
                                 metadata: [:], options: PKMZFixture.options(), progress: nil) { _ in tensor }
        }
        guard case .duplicateTensor? = duplicate else { Issue.record("\(String(describing: duplicate))"); return }
        #expect(!FileManager.default.fileExists(atPath: url.path))
    }

    @Test("the writer validates its options", arguments: [
        (1024, Int32(3), 0), ((64 << 20) + 1, Int32(3), 0), (4096, Int32(99), 0), (4096, Int32(3), -1),
    ])
    func writerOptions(frameBytes: Int, level: Int32, threads: Int) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        var options = PKMZFixture.options(frameBytes: frameBytes, level: level)
        options.threads = threads
        let error = #expect(throws: FormatError.self) { try PKMZFixture.write(try PKMZFixture.standardTensors(), to: url, options: options) }
        guard case .writeFailed? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(folder.contents.isEmpty)
    }

    @Test("the writer reports progress per tensor and accepts the frame-size bounds")
    func writerProgress() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-tests")
        let url = folder.file("model.pkmz")
        let tensors = try PKMZFixture.standardTensors()
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        for frameBytes in [4096, 4099, 64 << 20] {
            var calls: [[Int]] = []
            var options = PKMZFixture.options(frameBytes: frameBytes)
            options.threads = 0
            try PKMZWriter.write(to: url, tensorInfos: infos, metadata: [:], options: options,
                                 progress: { calls.append([$0, $1]) }) { info in
                tensors.first { $0.0 == info.name }?.1 ?? tensors[0].1
            }
            #expect(calls == [[1, 3], [2, 3], [3, 3]])
            let reader = try PKMZReader(url: url)
            #expect(reader.frameBytes == frameBytes)
            for (name, tensor) in tensors { #expect(try reader.tensor(named: name).isBitwiseEqual(to: tensor)) }
        }
    }
}
