import CPKMKernels
import Foundation
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats

/// pkmz version 2 (schemas/pkmz.md §6): rotated byte planes, rANS / raw / zstd segments, and the
/// committed version-1 file that every reader must keep reading.
@Suite("pkmz version 2")
struct PKMZVersion2Tests {
    /// Normal-ish float32 weights (a sum of uniforms), deterministic.
    static func weights(_ count: Int, seed: UInt64) throws -> Tensor {
        var random = SplitMix64(seed: seed)
        let values = (0..<count).map { _ -> Float in
            var sum: Float = 0
            for _ in 0..<4 { sum += Float(random.next() >> 40) * 0x1p-24 - 0.5 }
            return sum * 0.05
        }
        return try Tensor(float32: values, shape: [count])
    }

    static func write(_ tensors: [(String, Tensor)], to url: URL, frameBytes: Int = 4096) throws {
        var options = WriteOptions()
        options.frameBytes = frameBytes
        options.threads = 2
        let infos = tensors.map { TensorInfo(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) }
        try PKMZWriter.write(to: url, tensorInfos: infos, metadata: [:], options: options, progress: nil) { info in
            tensors.first { $0.0 == info.name }!.1
        }
    }

    /// (prologue + data, header, data end) of a pkmz file.
    static func split(_ bytes: [UInt8]) -> (body: [UInt8], header: [UInt8]) {
        func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        let offset = u64(bytes.count - 32), length = u64(bytes.count - 24)
        return (Array(bytes[0..<offset]), Array(bytes[offset..<(offset + length)]))
    }

    /// The file rebuilt from a body and a header, with a matching trailer.
    static func assemble(body: [UInt8], header: [UInt8], version: UInt32 = 2) -> [UInt8] {
        var trailer: [UInt8] = []
        PKMZWriter.appendLittleEndian(UInt64(body.count), to: &trailer)
        PKMZWriter.appendLittleEndian(UInt64(header.count), to: &trailer)
        var hasher = XXHash64()
        hasher.update(Array(body[0..<16]))
        hasher.update(header)
        PKMZWriter.appendLittleEndian(hasher.finalize(), to: &trailer)
        PKMZWriter.appendLittleEndian(version, to: &trailer)
        return body + header + trailer + Array("PKMZ".utf8)
    }

    static func decodeHeader(_ header: [UInt8], bodyCount: Int) throws -> PKMZHeader {
        var limits = ReaderLimits()
        limits.maxTotalBytes = Int.max
        return try PKMZHeader.decode(header, path: "test", limits: limits, version: 2, dataStart: 16, dataEnd: bodyCount)
    }

    @Test("the committed version-1 file still reads, bit for bit equal to its safetensors source")
    func committedVersion1File() throws {
        let pkmz = try PKMZReader(url: TestPaths.repository("fixtures/pkmz/all_dtypes.v1.pkmz"))
        #expect(pkmz.formatVersion == 1)
        let source = try SafetensorsReader(url: TestPaths.repository("fixtures/safetensors/all_dtypes.safetensors"))
        #expect(pkmz.tensorInfos.map(\.name) == source.tensorInfos.map(\.name))
        for info in source.tensorInfos {
            #expect(try pkmz.tensor(named: info.name).isBitwiseEqual(to: try source.tensor(named: info.name)), "\(info.name)")
        }
        try pkmz.verifyData()
        try pkmz.verifyChecksums()
    }

    @Test("weights are stored as rotated planes: the exponent plane rANS-coded, noise planes raw, integers zstd")
    func segmentsChosenPerPlane() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-v2")
        let url = folder.file("m.pkmz")
        let weights = try Self.weights(20_000, seed: 3)
        let ints = try Tensor(int64: (0..<3000).map { Int64($0 % 7) }, shape: [3000])
        let zeros = try Tensor(zeros: .bfloat16, shape: [5000])
        try Self.write([("w", weights), ("i", ints), ("z", zeros)], to: url)
        let reader = try PKMZReader(url: url)
        #expect(reader.formatVersion == 2)
        #expect(try reader.tensor(named: "w").isBitwiseEqual(to: weights))
        #expect(try reader.tensor(named: "i").isBitwiseEqual(to: ints))
        #expect(try reader.tensor(named: "z").isBitwiseEqual(to: zeros))
        let (body, header) = Self.split([UInt8](try Data(contentsOf: url)))
        let decoded = try Self.decodeHeader(header, bodyCount: body.count)
        let w = decoded.tensors[0], i = decoded.tensors[1], z = decoded.tensors[2]
        #expect(w.encoding == .rotatedPlanes && i.encoding == .plain && z.encoding == .rotatedPlanes)
        for frame in w.frames {
            #expect(frame.segments.count == 4)
            #expect(frame.segments[3].codec == .rans, "the exponent plane compresses")
            #expect(frame.segments[0].codec == .raw, "the lowest mantissa byte is noise")
        }
        #expect(i.frames.allSatisfy { $0.segments.map(\.codec) == [.zstd] })
        #expect(z.frames.allSatisfy { $0.segments.allSatisfy { $0.codec == .rans && $0.storedBytes == 2 } })
        // Smaller than version 1 (unrotated planes, all zstd) on the same weights.
        let v1 = folder.file("v1.pkmz")
        var options = WriteOptions()
        options.frameBytes = 4096
        options.pkmzVersion = 1
        try PKMZWriter.write(to: v1, tensorInfos: [TensorInfo(name: "w", dtype: .float32, shape: [20_000])], metadata: [:],
                             options: options, progress: nil) { _ in weights }
        let v1Frames = try #require(PKMZReader(url: v1).storage(of: "w")).compressedBytes
        #expect(try #require(reader.storage(of: "w")).compressedBytes < v1Frames)
    }

    @Test("a damaged rANS segment whose frame checksum matches fails to decode, never crashes")
    func corruptRANSSegment() throws {
        let folder = try TemporaryFolder(prefix: "pkmz-v2")
        let url = folder.file("m.pkmz")
        try Self.write([("w", try Self.weights(4096, seed: 4))], to: url)
        let (body, header) = Self.split([UInt8](try Data(contentsOf: url)))
        var decoded = try Self.decodeHeader(header, bodyCount: body.count)
        let frame = decoded.tensors[0].frames[0]
        let exponentStart = frame.offset + frame.segments[0..<3].reduce(0) { $0 + $1.storedBytes }
        var refused = 0
        for position in stride(from: exponentStart, to: frame.offset + frame.compressedBytes, by: 3) {
            var damaged = body
            damaged[position] ^= 0x5A
            decoded.tensors[0].frames[0].checksum = XXHash64.hash(Array(damaged[frame.offset..<(frame.offset + frame.compressedBytes)]))
            try Data(Self.assemble(body: damaged, header: decoded.encoded())).write(to: url)
            let reader = try PKMZReader(url: url)
            do {
                _ = try reader.tensor(named: "w")
            } catch FormatError.decompressionFailed(_, let tensor, _, let reason) {
                #expect(tensor == "w" && reason.contains("segment 3"))
                refused += 1
            }
        }
        #expect(refused > 0)
    }

    @Test("segment tables that disagree with the frame are refused when opening", arguments: [
        "raw size", "sizes sum", "codec", "count",
    ])
    func damagedSegmentTables(damage: String) throws {
        let folder = try TemporaryFolder(prefix: "pkmz-v2")
        let url = folder.file("m.pkmz")
        try Self.write([("w", try Self.weights(4096, seed: 5))], to: url)
        let (body, header) = Self.split([UInt8](try Data(contentsOf: url)))
        var text = String(decoding: header, as: UTF8.self)
        let decoded = try Self.decodeHeader(header, bodyCount: body.count)
        let frame = decoded.tensors[0].frames[0]
        let codes = String(frame.segments.map(\.codec.rawValue))
        let sizes = frame.segments.map { String($0.storedBytes) }.joined(separator: ",")
        let original = "\"\(codes)\",[\(sizes)]"
        #expect(text.contains(original))
        let replacement: String
        switch damage {
        case "raw size": replacement = "\"\(codes)\",[\(frame.segments[0].storedBytes - 1),\(frame.segments[1...].map { String($0.storedBytes) }.joined(separator: ",")),1]"
        case "sizes sum": replacement = "\"\(codes)\",[\(frame.segments.dropLast().map { String($0.storedBytes) }.joined(separator: ",")),\(frame.segments[3].storedBytes + 1)]"
        case "codec": replacement = "\"\(codes.dropLast())q\",[\(sizes)]"
        default: replacement = "\"\(codes.dropLast())\",[\(sizes)]"
        }
        text = text.replacingOccurrences(of: original, with: replacement)
        try Data(Self.assemble(body: body, header: Array(text.utf8))).write(to: url)
        let error = #expect(throws: FormatError.self) { try PKMZReader(url: url) }
        switch error {
        case .invalidOffsets?, .invalidTensor?: break
        default: Issue.record("\(damage): \(String(describing: error))")
        }
    }

    @Test("rANS round-trips every kind of plane and refuses what it cannot shrink", arguments: [0, 1, 2, 3, 4, 5])
    func ransKernel(kind: Int) throws {
        var random = SplitMix64(seed: UInt64(100 + kind))
        for count in [1, 7, 8, 9, 100, 4095, 65_536] {
            let plane: [UInt8] = (0..<count).map { index in
                switch kind {
                case 0: return 42                                             // one symbol
                case 1: return index % 2 == 0 ? 0 : 255                       // two symbols
                case 2: return UInt8(truncatingIfNeeded: random.next())       // noise: refused below 98 %
                case 3: return random.next() % 1000 == 0 ? UInt8(index % 256) : 0x7F  // rare symbols (frequency 1)
                case 4: return UInt8(index % 256)                             // all 256 equally
                default: return UInt8(min(255, Int((random.next() % 64).trailingZeroBitCount) + 120))  // skewed
                }
            }
            let bound = pkm_rans_bound(count)
            var coded = [UInt8](repeating: 0, count: bound), scratch = [UInt8](repeating: 0, count: bound)
            let size = pkm_rans_encode(plane, count, &coded, bound, &scratch)
            if kind == 2 && count >= 4095 {
                #expect(pkm_rans_encode(plane, count, &coded, count - count / 50, &scratch) == 0)
            }
            guard size > 0 else { continue }
            var decoded = [UInt8](repeating: 0, count: count)
            #expect(pkm_rans_decode(coded, size, &decoded, count) == 0, "kind \(kind) count \(count)")
            #expect(decoded == plane, "kind \(kind) count \(count)")
            // Truncated or extended segments are refused, without reading outside the buffer.
            if size > 2 {
                #expect(pkm_rans_decode(coded, size - 1, &decoded, count) != 0)
                var longer = Array(coded[0..<size]) + [0, 0]
                #expect(pkm_rans_decode(&longer, size + 2, &decoded, count) != 0)
            }
        }
    }

    @Test("rotated plane split and join invert each other and match the definition", arguments: [2, 4, 8])
    func rotatedPlanes(elementSize: Int) throws {
        var random = SplitMix64(seed: UInt64(elementSize))
        for count in [1, 15, 16, 17, 100] {
            let bytes = (0..<(count * elementSize)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            var planes = [UInt8](repeating: 0, count: bytes.count)
            pkm_planes_split(bytes, &planes, count, Int32(elementSize), 1)
            for element in 0..<count {
                var value: UInt64 = 0
                for byte in 0..<elementSize { value |= UInt64(bytes[element * elementSize + byte]) << (8 * byte) }
                let bits = UInt64(8 * elementSize)
                let mask: UInt64 = bits == 64 ? ~0 : (1 << bits) - 1
                let rotated = ((value << 1) | (value >> (bits - 1))) & mask
                for plane in 0..<elementSize {
                    #expect(planes[plane * count + element] == UInt8(truncatingIfNeeded: rotated >> (8 * UInt64(plane))))
                }
            }
            var back = [UInt8](repeating: 0, count: bytes.count)
            planes.withUnsafeBufferPointer { buffer in
                let pointers: [UnsafePointer<UInt8>?] = (0..<elementSize).map { buffer.baseAddress! + $0 * count }
                pkm_planes_join(pointers, &back, count, Int32(elementSize), 1)
            }
            #expect(back == bytes)
        }
    }
}
