import Foundation
import PKMCheckpoints
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats

/// Fixture locations, byte builders and small helpers for the safetensors tests.
enum SafetensorsFixtures {
    /// The folder holding `Package.swift`.
    static var repositoryRoot: URL { TestPaths.repositoryRoot }

    static let folder = repositoryRoot.appendingPathComponent("fixtures/safetensors")

    static func url(_ name: String) -> URL { folder.appendingPathComponent(name) }

    /// `fixtures/safetensors/expected.json`, written by `tools/gen_safetensors_fixtures.py`.
    static func expected(_ fixture: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url("expected.json"))
        let all = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try #require(all[fixture] as? [String: Any])
    }

    /// A fresh empty folder; remove it with `FileManager.default.removeItem(at:)`.
    static func temporaryFolder() throws -> URL {
        try TestPaths.newFolder(prefix: "pkm-safetensors-tests")
    }

    static func hex(_ data: Data) -> String { data.map { String(format: "%02x", $0) }.joined() }

    /// A safetensors file: the 8-byte length (`declaredLength`, or the header's real length),
    /// the header text as given (no padding added), then `data`.
    static func file(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        file(headerBytes: Array(header.utf8), data: data, declaredLength: declaredLength)
    }

    static func file(headerBytes: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        var bytes = Data()
        let length = declaredLength ?? UInt64(headerBytes.count)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: length >> UInt64(shift))) }
        bytes.append(contentsOf: headerBytes)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// One tensor entry of a header.
    static func entry(_ name: String, _ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(begin),\(end)]}"
    }

    /// SplitMix64: the same seed gives the same bytes on every machine.
    typealias Generator = SplitMix64

    /// A tensor of seeded random bytes (0/1 for bool).
    static func randomTensor(_ dtype: DType, _ shape: [Int], generator: inout Generator) throws -> Tensor {
        let count = try #require(ShapeMath.byteCount(shape, dtype: dtype))
        var bytes = generator.bytes(count)
        if dtype == .bool { bytes = bytes.map { $0 & 1 } }
        return try Tensor(dtype: dtype, shape: shape, storage: Data(bytes))
    }

    static let provenance = Provenance(sourceFile: "model.h5", sourceSHA256: String(repeating: "ab", count: 32),
                                       created: Date(timeIntervalSince1970: 1_717_243_200), operation: "convert --dtype bf16")

    /// The enum case of an error, for assertions.
    static func caseName(_ error: FormatError) -> String {
        switch error {
        case .fileNotFound: return "fileNotFound"
        case .io: return "io"
        case .truncated: return "truncated"
        case .invalidHeader: return "invalidHeader"
        case .invalidTensor: return "invalidTensor"
        case .unsupportedDType: return "unsupportedDType"
        case .invalidOffsets: return "invalidOffsets"
        case .limitExceeded: return "limitExceeded"
        case .missingShard: return "missingShard"
        case .shardPathEscapes: return "shardPathEscapes"
        case .shardLinkEscapes: return "shardLinkEscapes"
        case .notRegularFile: return "notRegularFile"
        case .duplicateTensor: return "duplicateTensor"
        case .tensorNotFound: return "tensorNotFound"
        case .writeFailed: return "writeFailed"
        case .tensor: return "tensor"
        default: return "other: \(error)"
        }
    }

    /// The tensor an error names, if its case carries one.
    static func tensorName(_ error: FormatError) -> String? {
        switch error {
        case .invalidTensor(_, let tensor, _), .unsupportedDType(_, let tensor, _), .invalidOffsets(_, let tensor, _),
             .duplicateTensor(_, let tensor), .tensorNotFound(_, let tensor), .tensor(_, let tensor, _):
            return tensor
        default:
            return nil
        }
    }

    /// The path an error names.
    static func path(_ error: FormatError) -> String? {
        switch error {
        case .fileNotFound(let path), .io(let path, _, _), .truncated(let path, _, _, _, _), .invalidHeader(let path, _),
             .invalidTensor(let path, _, _), .unsupportedDType(let path, _, _), .invalidOffsets(let path, _, _),
             .limitExceeded(let path, _, _, _), .missingShard(let path, _), .shardPathEscapes(let path, _),
             .duplicateTensor(let path, _), .tensorNotFound(let path, _), .writeFailed(let path, _), .tensor(let path, _, _):
            return path
        default:
            return nil
        }
    }

    /// The error thrown by `body`, or nil (recorded as an issue) when it does not throw a ``FormatError``.
    static func formatError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> FormatError? {
        do {
            try body()
            Issue.record("expected a FormatError, nothing was thrown", sourceLocation: sourceLocation)
        } catch let error as FormatError {
            return error
        } catch {
            Issue.record("expected a FormatError, got \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// Writes `bytes` to a temporary file and returns the error opening it gives.
    static func openError(_ bytes: Data, limits: ReaderLimits = ReaderLimits(),
                          sourceLocation: SourceLocation = #_sourceLocation) throws -> FormatError? {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("bad.safetensors")
        try bytes.write(to: url)
        return formatError({ _ = try SafetensorsReader(url: url, limits: limits) }, sourceLocation: sourceLocation)
    }

    /// Writes `bytes` to a temporary file and opens it.
    static func open(_ bytes: Data, limits: ReaderLimits = ReaderLimits()) throws -> (reader: SafetensorsReader, folder: URL) {
        let folder = try temporaryFolder()
        let url = folder.appendingPathComponent("good.safetensors")
        try bytes.write(to: url)
        return (try SafetensorsReader(url: url, limits: limits), folder)
    }

    /// Writes a state dict with ``SafetensorsWriter``.
    static func write(_ dict: StateDict, to url: URL, provenance: Provenance? = nil) throws {
        var options = WriteOptions()
        options.provenance = provenance
        let infos = dict.entries.map { TensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }
        try SafetensorsWriter.write(to: url, tensorInfos: infos, metadata: dict.metadata, options: options, progress: nil) { info in
            try #require(dict[info.name])
        }
    }

    /// Checks a reader's tensors, metadata and provenance against an `expected.json` entry.
    static func check(_ reader: any CheckpointReader, against expected: [String: Any]) throws {
        let tensors = try #require(expected["tensors"] as? [[String: Any]])
        #expect(reader.tensorInfos.map(\.name) == tensors.compactMap { $0["name"] as? String })
        for (info, entry) in zip(reader.tensorInfos, tensors) {
            #expect(info.dtype.rawValue == entry["dtype"] as? String, "\(info.name)")
            #expect(info.shape == (entry["shape"] as? [Int]), "\(info.name)")
            let tensor = try reader.tensor(named: info.name)
            #expect(hex(tensor.storage) == entry["hex"] as? String, "\(info.name)")
            #expect(tensor.dtype == info.dtype && tensor.shape == info.shape, "\(info.name)")
        }
        #expect(reader.metadata == (expected["metadata"] as? [String: String]))
        if let provenance = expected["provenance"] as? [String: Any] {
            let decoded = try #require(reader.provenance)
            #expect(decoded.sourceFile == provenance["source_file"] as? String)
            #expect(decoded.sourceSHA256 == provenance["source_sha256"] as? String)
            #expect(decoded.tool == provenance["tool"] as? String)
            #expect(decoded.created == provenance["created"] as? String)
            #expect(decoded.operation == provenance["operation"] as? String)
        } else {
            #expect(reader.provenance == nil)
        }
    }
}

/// A malformed single file and the error it must raise.
struct MalformedSafetensors: Sendable, CustomTestStringConvertible {
    let label: String
    let bytes: Data
    /// The expected ``FormatError`` case name.
    let expected: String
    /// The tensor the error must name, if any.
    var tensor: String? = nil
    /// For `.limitExceeded`, which limit.
    var limit: ReaderLimit? = nil
    var limits = ReaderLimits()

    var testDescription: String { label }
}

@Suite("Safetensors")
struct SafetensorsTests {
    typealias F = SafetensorsFixtures

    // MARK: - Round trips

    @Test("Every dtype round-trips bit-exactly, including rank 0 and zero-size tensors", arguments: DType.allCases)
    func roundTrip(dtype: DType) throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = F.Generator(state: 0x5AFE + UInt64(dtype.byteSize) * 31 + UInt64(dtype.rawValue.utf8.count))
        var dict = StateDict(metadata: ["config": "{\"model_type\": \"bert\"}", "dtype": dtype.rawValue])
        for (index, shape) in [[], [7], [2, 3], [0], [3, 0, 2], [2, 1, 3, 2]].enumerated() {
            try dict.insert(try F.randomTensor(dtype, shape, generator: &generator), named: "t\(index).\(dtype.rawValue)")
        }
        let url = folder.appendingPathComponent("round.safetensors")
        try F.write(dict, to: url, provenance: F.provenance)
        let reader = try SafetensorsReader(url: url, limits: ReaderLimits())
        #expect(reader.tensorInfos.map(\.name) == dict.names)
        for (name, tensor) in dict.entries {
            let read = try reader.tensor(named: name)
            #expect(read.isBitwiseEqual(to: tensor), "\(name)")
        }
        #expect(reader.metadata == dict.metadata)
        #expect(reader.provenance == F.provenance)
        #expect(reader.headerByteCount % 8 == 0)
        #expect(reader.format == .safetensors)
    }

    @Test("A mixed file keeps order, metadata needing escapes, and unusual names")
    func roundTripMixed() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = F.Generator(state: 42)
        var dict = StateDict(metadata: ["note": "µ \"quoted\" back\\slash\ttab\nnew\u{1}line ✓", "config": "{}", "": "empty key"])
        for (index, dtype) in DType.allCases.reversed().enumerated() {
            try dict.insert(try F.randomTensor(dtype, [index + 1, 2], generator: &generator), named: "layer.\(index).w \"q\"\\é\n")
        }
        try dict.insert(try F.randomTensor(.float32, [0], generator: &generator), named: "z.empty")
        try dict.insert(try F.randomTensor(.float32, [0], generator: &generator), named: "a.empty")
        let url = folder.appendingPathComponent("mixed.safetensors")
        var progress: [Int] = []
        let infos = dict.entries.map { TensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }
        try SafetensorsWriter.write(to: url, tensorInfos: infos, metadata: dict.metadata, options: WriteOptions(),
                                    progress: { done, total in
                                        #expect(total == infos.count)
                                        progress.append(done)
                                    }) { info in try #require(dict[info.name]) }
        #expect(progress == Array(1...infos.count))
        let reader = try SafetensorsReader(url: url, limits: ReaderLimits())
        // Zero-size tensors share one offset and keep the order they were written in.
        #expect(reader.tensorInfos == infos)
        #expect(try reader.readAll().entries.map(\.name) == dict.names)
        for (name, tensor) in dict.entries { #expect(try reader.tensor(named: name).isBitwiseEqual(to: tensor), "\(name)") }
        #expect(reader.metadata == dict.metadata)
        #expect(reader.provenance == nil)
    }

    @Test("Tensors are slices of the file mapping: no copy, at their byte range")
    func tensorsAreSlicesOfTheMapping() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = F.Generator(state: 7)
        var dict = StateDict()
        try dict.insert(try F.randomTensor(.float32, [64, 3], generator: &generator), named: "a")
        try dict.insert(try F.randomTensor(.int64, [5], generator: &generator), named: "b")
        let url = folder.appendingPathComponent("map.safetensors")
        try F.write(dict, to: url)
        let reader = try SafetensorsReader(url: url, limits: ReaderLimits())
        let first = try reader.tensor(named: "a"), again = try reader.tensor(named: "a"), second = try reader.tensor(named: "b")
        let address = { (tensor: Tensor) -> Int in tensor.storage.withUnsafeBytes { Int(bitPattern: $0.baseAddress) } }
        #expect(address(first) == address(again))
        let rangeA = try #require(reader.byteRange(ofTensor: "a")), rangeB = try #require(reader.byteRange(ofTensor: "b"))
        #expect(rangeA.lowerBound == 8 + reader.headerByteCount)
        #expect(rangeB.lowerBound == rangeA.upperBound)
        #expect(address(second) - address(first) == rangeB.lowerBound - rangeA.lowerBound)
        #expect(reader.byteRange(ofTensor: "missing") == nil)
        let missing = F.formatError { _ = try reader.tensor(named: "missing") }
        #expect(missing.map(F.caseName) == "tensorNotFound")
    }

    @Test("The writer's header: metadata first, 8-byte padding with spaces, provenance replaces pkm_provenance")
    func writerHeaderLayout() throws {
        let infos = [TensorInfo(name: "w", dtype: .float16, shape: [3]), TensorInfo(name: "s", dtype: .int8, shape: [])]
        let layout = try SafetensorsWriter.header(for: infos, metadata: ["format": "pt", "pkm_provenance": "stale"],
                                                  provenance: F.provenance, path: "x.safetensors")
        let length = layout.prefix.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(length == layout.prefix.count - 8)
        #expect(length % 8 == 0)
        let text = String(decoding: layout.prefix.dropFirst(8), as: UTF8.self)
        #expect(text.hasPrefix("{\"__metadata__\":{\"format\":\"pt\",\"pkm_provenance\":\"{"))
        #expect(!text.contains("stale"))
        #expect(text.contains("\"w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},\"s\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[6,7]}}"))
        #expect(text.reversed().prefix { $0 != "}" }.allSatisfy { $0 == " " })
        #expect(layout.byteCounts == [6, 1])
        #expect(layout.fileSize == layout.prefix.count + 7)

        let bare = try SafetensorsWriter.header(for: [], metadata: [:], provenance: nil, path: "x")
        #expect(Array(bare.prefix) == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
    }

    @Test("The writer gives the same bytes twice")
    func writerIsDeterministic() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = F.Generator(state: 99)
        var dict = StateDict(metadata: ["b": "2", "a": "1", "c": "3"])
        for name in ["x", "y", "z"] { try dict.insert(try F.randomTensor(.bfloat16, [3, 2], generator: &generator), named: name) }
        let one = folder.appendingPathComponent("1.safetensors"), two = folder.appendingPathComponent("2.safetensors")
        try F.write(dict, to: one, provenance: F.provenance)
        try F.write(dict, to: two, provenance: F.provenance)
        #expect(try Data(contentsOf: one) == Data(contentsOf: two))
    }

    // MARK: - Committed fixtures written by Python safetensors

    @Test("Reads every dtype written by Python safetensors, with metadata and provenance")
    func readsPythonFixture() throws {
        let reader = try SafetensorsReader(url: F.url("all_dtypes.safetensors"), limits: ReaderLimits())
        try F.check(reader, against: try F.expected("all_dtypes.safetensors"))
        #expect(Set(reader.tensorInfos.map(\.dtype)) == Set(DType.allCases))
        // Values checked here, independently of the generator's hex dump.
        #expect(try reader.tensor(named: "scalar").floatValues() == [3.5])
        #expect(try reader.tensor(named: "scalar").shape == [])
        let f32 = try reader.tensor(named: "f32").floatValues()
        #expect(f32.map(\.bitPattern) == [0x7FC0_0001, 0x7F80_0001, 0x8000_0000, 0x0000_0001, 0x7F80_0000, 0xFF80_0000, 0x3F80_0000, 0xC049_0FDB])
        #expect(try reader.tensor(named: "f64").storage.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 40, as: Double.self) } == Double.pi)
        #expect(try reader.tensor(named: "bf16").floatValues().prefix(2) == [1, -2])
        #expect(try reader.tensor(named: "f16").floatValues().prefix(2) == [1, -2.5])
        #expect(try reader.tensor(named: "i64").int64Values() == [Int64.min, Int64.max, -1, 0])
        #expect(try reader.tensor(named: "i32").int64Values() == [Int64(Int32.min), Int64(Int32.max), -7, 7])
        #expect(try reader.tensor(named: "i16").int64Values() == [-32768, 32767, -300])
        #expect(try reader.tensor(named: "i8").int64Values() == [-128, 127, -1])
        #expect(try reader.tensor(named: "u8").int64Values() == [0, 255, 128])
        #expect(try reader.tensor(named: "bool").int64Values() == [1, 0, 0, 1])
        #expect(try reader.tensor(named: "empty.f32").shape == [0, 4])
        #expect(try reader.tensor(named: "empty.i64").storage.isEmpty)
        #expect(reader.metadata["note"] == "µ ünïcode \"quoted\" back\\slash\ttab\nnewline")
        #expect(reader.metadata["pkm_provenance"] == nil)
        #expect(reader.provenance?.tool == "pkm-convert 0.1.0")
        let viaEntryPoint = try Checkpoints.open(F.url("all_dtypes.safetensors"))
        #expect(viaEntryPoint is SafetensorsReader)
    }

    @Test("Reads a file without __metadata__")
    func readsFileWithoutMetadata() throws {
        let reader = try SafetensorsReader(url: F.url("no_metadata.safetensors"), limits: ReaderLimits())
        try F.check(reader, against: try F.expected("no_metadata.safetensors"))
        #expect(reader.metadata.isEmpty)
    }

    @Test("The writer's bytes equal the committed sample that Python safetensors read back")
    func writerMatchesCheckedSample() throws {
        let source = try SafetensorsReader(url: F.url("all_dtypes.safetensors"), limits: ReaderLimits())
        var options = WriteOptions()
        options.provenance = source.provenance
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("swift_written.safetensors")
        try SafetensorsWriter.write(to: url, tensorInfos: source.tensorInfos, metadata: source.metadata, options: options,
                                    progress: nil) { info in try source.tensor(named: info.name) }
        if let out = ProcessInfo.processInfo.environment["PKM_SAFETENSORS_SAMPLE_OUT"] {
            // Regenerate: PKM_SAFETENSORS_SAMPLE_OUT=$PWD/fixtures/safetensors/swift_written.safetensors
            // swift test --filter Safetensors, then run tools/gen_safetensors_fixtures.py, which checks it.
            let target = URL(fileURLWithPath: out)
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: url, to: target)
        }
        #expect(try Data(contentsOf: url) == Data(contentsOf: F.url("swift_written.safetensors")))
        let reread = try SafetensorsReader(url: url, limits: ReaderLimits())
        try F.check(reread, against: try F.expected("all_dtypes.safetensors"))
    }

    // MARK: - Sharded

    @Test("Reads a two-shard folder through its index")
    func readsShardedFixture() throws {
        let index = F.url("sharded/model.safetensors.index.json")
        let reader = try ShardedCheckpointReader(indexURL: index, limits: ReaderLimits())
        #expect(reader.url == index)
        try F.check(reader, against: try F.expected("sharded"))
        #expect(reader.shardURLs.map(\.lastPathComponent) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        #expect(reader.shardURL(ofTensor: "bert.encoder.layer.0.memory.keys")?.lastPathComponent == "model-00002-of-00002.safetensors")
        #expect(reader.metadata["config"] != nil)
        #expect(reader.metadata["total_size"] == nil)
        let missing = F.formatError { _ = try reader.tensor(named: "nope") }
        #expect(missing.map(F.caseName) == "tensorNotFound")
        // The folder entry point finds the index.
        let opened = try Checkpoints.open(F.url("sharded"))
        #expect(opened is ShardedCheckpointReader)
        #expect(opened.tensorInfos == reader.tensorInfos)
    }

    /// A folder with shards `a.safetensors` (tensors a1, a2) and `b.safetensors` (b1) and an index.
    private func shardedFolder(weightMap: [String: String]? = nil, indexText: String? = nil, inside parent: URL? = nil) throws -> URL {
        let folder: URL
        if let parent {
            folder = parent.appendingPathComponent("model")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } else {
            folder = try F.temporaryFolder()
        }
        var generator = F.Generator(state: 5)
        let a = try StateDict([("a1", try F.randomTensor(.float32, [2], generator: &generator)),
                               ("a2", try F.randomTensor(.int8, [3], generator: &generator))], metadata: ["config": "{}", "from": "a"])
        let b = try StateDict([("b1", try F.randomTensor(.float16, [2, 2], generator: &generator))], metadata: ["from": "b", "extra": "b"])
        try F.write(a, to: folder.appendingPathComponent("a.safetensors"), provenance: F.provenance)
        try F.write(b, to: folder.appendingPathComponent("b.safetensors"))
        let map = weightMap ?? ["a1": "a.safetensors", "a2": "a.safetensors", "b1": "b.safetensors"]
        let text = try indexText ?? String(decoding: JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 18, "note": "index"], "weight_map": map],
                                                                         options: [.sortedKeys]), as: UTF8.self)
        try Data(text.utf8).write(to: folder.appendingPathComponent("model.safetensors.index.json"))
        return folder
    }

    @Test("Sharded metadata merges shards first-wins, then index strings; provenance from the first shard")
    func shardedMetadata() throws {
        let folder = try shardedFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let reader = try ShardedCheckpointReader(indexURL: folder.appendingPathComponent("model.safetensors.index.json"), limits: ReaderLimits())
        #expect(reader.tensorInfos.map(\.name) == ["a1", "a2", "b1"])
        #expect(reader.metadata == ["config": "{}", "from": "a", "extra": "b", "note": "index"])
        #expect(reader.provenance == F.provenance)
    }

    @Test("Shard paths leaving the folder are refused", arguments: ["../evil.safetensors", "/etc/passwd", "sub/../../evil.safetensors", "..", "./../evil.safetensors"])
    func shardPathEscapes(shard: String) throws {
        let parent = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: parent) }
        let folder = try shardedFolder(weightMap: ["a1": "a.safetensors", "a2": "a.safetensors", "b1": shard], inside: parent)
        // Make the escape target real, so only the path check can stop it.
        try FileManager.default.copyItem(at: folder.appendingPathComponent("b.safetensors"), to: parent.appendingPathComponent("evil.safetensors"))
        let error = F.formatError { _ = try ShardedCheckpointReader(indexURL: folder.appendingPathComponent("model.safetensors.index.json"), limits: ReaderLimits()) }
        guard case .shardPathEscapes(_, let named)? = error else {
            Issue.record("expected shardPathEscapes, got \(String(describing: error))")
            return
        }
        #expect(named == shard)
    }

    @Test("A symbolic link leading outside the folder is refused; one staying inside is followed")
    func shardSymlinks() throws {
        let outside = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: outside) }
        let folder = try shardedFolder(weightMap: ["a1": "a.safetensors", "a2": "a.safetensors", "b1": "link.safetensors"])
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.moveItem(at: folder.appendingPathComponent("b.safetensors"), to: outside.appendingPathComponent("b.safetensors"))
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("link.safetensors"), withDestinationURL: outside.appendingPathComponent("b.safetensors"))
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        let error = F.formatError { _ = try ShardedCheckpointReader(indexURL: index, limits: ReaderLimits()) }
        #expect(error.map(F.caseName) == "shardLinkEscapes")
        // The message names the link and its resolved target.
        #expect(error?.description.contains(folder.appendingPathComponent("link.safetensors").path + " -> ") == true, "\(String(describing: error))")
        #expect(error?.description.contains("/b.safetensors") == true, "\(String(describing: error))")

        // A linked sub-folder leading outside is refused too.
        try FileManager.default.removeItem(at: folder.appendingPathComponent("link.safetensors"))
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("sub"), withDestinationURL: outside)
        try Data(#"{"weight_map":{"a1":"a.safetensors","a2":"a.safetensors","b1":"sub/b.safetensors"}}"#.utf8).write(to: index)
        let viaFolder = F.formatError { _ = try ShardedCheckpointReader(indexURL: index, limits: ReaderLimits()) }
        #expect(viaFolder.map(F.caseName) == "shardLinkEscapes")

        // Inside the folder, links are fine.
        try FileManager.default.moveItem(at: outside.appendingPathComponent("b.safetensors"), to: folder.appendingPathComponent("real-b.safetensors"))
        try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("link.safetensors"), withDestinationURL: folder.appendingPathComponent("real-b.safetensors"))
        try Data(#"{"weight_map":{"a1":"a.safetensors","a2":"a.safetensors","b1":"link.safetensors"}}"#.utf8).write(to: index)
        let reader = try ShardedCheckpointReader(indexURL: index, limits: ReaderLimits())
        #expect(reader.tensorInfos.map(\.name) == ["a1", "a2", "b1"])
    }

    @Test("A huggingface_hub cache snapshot (every file a link into ../../blobs) is read; a link out of the repository is still refused")
    func huggingFaceCacheSnapshot() throws {
        let source = try shardedFolder()
        defer { try? FileManager.default.removeItem(at: source) }
        let cache = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: cache) }
        let repository = cache.appendingPathComponent("models--org--name")
        let blobs = repository.appendingPathComponent("blobs")
        let snapshot = repository.appendingPathComponent("snapshots/0123abcd")
        try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        for (number, name) in ["model.safetensors.index.json", "a.safetensors", "b.safetensors"].enumerated() {
            let blob = "blob\(number)"
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: blobs.appendingPathComponent(blob))
            // Relative, as huggingface_hub makes them.
            try FileManager.default.createSymbolicLink(atPath: snapshot.appendingPathComponent(name).path, withDestinationPath: "../../blobs/\(blob)")
        }
        let reader = try ShardedCheckpointReader(indexURL: snapshot.appendingPathComponent("model.safetensors.index.json"), limits: ReaderLimits())
        #expect(reader.tensorInfos.map(\.name) == ["a1", "a2", "b1"])
        #expect(try reader.tensor(named: "b1").byteCount > 0)

        // A link leaving the repository (not into its blobs/) is refused, naming link and target.
        try FileManager.default.removeItem(at: snapshot.appendingPathComponent("b.safetensors"))
        try FileManager.default.copyItem(at: source.appendingPathComponent("b.safetensors"), to: cache.appendingPathComponent("outside.safetensors"))
        try FileManager.default.createSymbolicLink(atPath: snapshot.appendingPathComponent("b.safetensors").path, withDestinationPath: "../../../outside.safetensors")
        let error = F.formatError { _ = try ShardedCheckpointReader(indexURL: snapshot.appendingPathComponent("model.safetensors.index.json"), limits: ReaderLimits()) }
        #expect(error.map(F.caseName) == "shardLinkEscapes")
        #expect(error?.description.contains("outside.safetensors") == true, "\(String(describing: error))")
    }

    @Test("A FIFO named as a shard, given as the checkpoint or as the index is refused at once, never opened")
    func fifoInputs() throws {
        let folder = try shardedFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let fifo = folder.appendingPathComponent("b.safetensors")
        try FileManager.default.removeItem(at: fifo)
        #expect(mkfifo(fifo.path, 0o600) == 0)
        let clock = ContinuousClock()
        let start = clock.now
        let error = F.formatError { _ = try ShardedCheckpointReader(indexURL: folder.appendingPathComponent("model.safetensors.index.json"), limits: ReaderLimits()) }
        #expect(error.map(F.caseName) == "notRegularFile")
        #expect(error?.description.contains("FIFO") == true, "\(String(describing: error))")
        let single = F.formatError { _ = try SafetensorsReader(url: fifo) }
        #expect(single.map(F.caseName) == "notRegularFile")
        let viaDetection = F.formatError { _ = try Checkpoints.open(fifo) }
        #expect(viaDetection.map(F.caseName) == "notRegularFile")
        let index = folder.appendingPathComponent("fifo.index.json")
        #expect(mkfifo(index.path, 0o600) == 0)
        let asIndex = F.formatError { _ = try ShardedCheckpointReader(indexURL: index, limits: ReaderLimits()) }
        #expect(asIndex.map(F.caseName) == "notRegularFile")
        let device = F.formatError { _ = try Checkpoints.open(URL(fileURLWithPath: "/dev/zero")) }
        #expect(device.map(F.caseName) == "notRegularFile")
        #expect(clock.now - start < .seconds(5))
    }

    @Test("An existing destination that is a device, FIFO or folder is refused and left alone; a link to a regular file is replaced")
    func specialDestinations() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let state = try StateDict([("w", try Tensor(dtype: .float32, shape: [2], storage: Data(count: 8)))])
        for device in ["/dev/null", "/dev/full"] {
            let error = F.formatError { try Checkpoints.write(state, to: URL(fileURLWithPath: device), format: .safetensors) }
            #expect(error.map(F.caseName) == "writeFailed")
            #expect(error?.description.contains("character device") == true, "\(String(describing: error))")
            var status = stat()
            #expect(stat(device, &status) == 0 && status.st_mode & S_IFMT == S_IFCHR)
        }
        let fifo = folder.appendingPathComponent("out.safetensors")
        #expect(mkfifo(fifo.path, 0o600) == 0)
        for format in [CheckpointFormat.safetensors, .pkmz, .hdf5] {
            let error = F.formatError { try Checkpoints.write(state, to: fifo, format: format) }
            #expect(error?.description.contains("FIFO") == true, "\(format): \(String(describing: error))")
        }
        var status = stat()
        #expect(lstat(fifo.path, &status) == 0 && status.st_mode & S_IFMT == S_IFIFO)
        let sub = folder.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        #expect(F.formatError { try Checkpoints.write(state, to: sub, format: .safetensors) }.map(F.caseName) == "writeFailed")
        // Folder outputs: a folder or a missing name is fine, a file or device is not.
        try OutputDestination.checkFolder(sub)
        try OutputDestination.checkFolder(folder.appendingPathComponent("new"))
        #expect(throws: FormatError.self) { try OutputDestination.checkFolder(fifo) }
        #expect(throws: FormatError.self) { try OutputDestination.checkFolder(URL(fileURLWithPath: "/dev/null")) }
        // A symbolic link to a regular file is an allowed destination.
        let real = folder.appendingPathComponent("real.safetensors")
        try Data("old".utf8).write(to: real)
        let link = folder.appendingPathComponent("link.safetensors")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: real)
        try Checkpoints.write(state, to: link, format: .safetensors)
        #expect(try SafetensorsReader(url: link).tensorInfos.map(\.name) == ["w"])
    }

    @Test("Sharded index and shards must agree")
    func shardedMismatches() throws {
        func error(weightMap: [String: String]? = nil, indexText: String? = nil, limits: ReaderLimits = ReaderLimits(),
                   prepare: (URL) throws -> Void = { _ in }) throws -> FormatError? {
            let folder = try shardedFolder(weightMap: weightMap, indexText: indexText)
            defer { try? FileManager.default.removeItem(at: folder) }
            try prepare(folder)
            return F.formatError { _ = try ShardedCheckpointReader(indexURL: folder.appendingPathComponent("model.safetensors.index.json"), limits: limits) }
        }
        // A missing shard.
        let missing = try error(weightMap: ["a1": "a.safetensors", "a2": "a.safetensors", "b1": "c.safetensors"])
        guard case .missingShard(_, let shard)? = missing else { Issue.record("\(String(describing: missing))"); return }
        #expect(shard == "c.safetensors")
        // A listed tensor absent from every shard: named with the shard it should be in.
        let absent = try error(weightMap: ["a1": "a.safetensors", "a2": "a.safetensors", "b1": "b.safetensors", "ghost": "b.safetensors"])
        #expect(absent.map(F.caseName) == "tensorNotFound")
        #expect(absent.flatMap(F.tensorName) == "ghost")
        #expect(absent.flatMap(F.path)?.hasSuffix("b.safetensors") == true)
        // A tensor listed under the wrong shard.
        let misplaced = try error(weightMap: ["a1": "b.safetensors", "a2": "a.safetensors", "b1": "b.safetensors"])
        #expect(misplaced.map(F.caseName) == "invalidTensor")
        #expect(misplaced.flatMap(F.tensorName) == "a1")
        // A tensor stored in a shard but not listed.
        let unlisted = try error(weightMap: ["a1": "a.safetensors", "b1": "b.safetensors"])
        #expect(unlisted.map(F.caseName) == "invalidTensor")
        #expect(unlisted.flatMap(F.tensorName) == "a2")
        // The same tensor stored in two shards.
        let twice = try error { folder in
            var generator = F.Generator(state: 1)
            let b = try StateDict([("a1", try F.randomTensor(.float32, [2], generator: &generator)),
                                   ("b1", try F.randomTensor(.float16, [2, 2], generator: &generator))])
            try F.write(b, to: folder.appendingPathComponent("b.safetensors"))
        }
        #expect(twice.map(F.caseName) == "duplicateTensor")
        #expect(twice.flatMap(F.tensorName) == "a1")
        // A name listed twice in the index JSON.
        let listedTwice = try error(indexText: #"{"weight_map":{"a1":"a.safetensors","a2":"a.safetensors","b1":"b.safetensors","a1":"b.safetensors"}}"#)
        #expect(listedTwice.map(F.caseName) == "duplicateTensor")
        #expect(listedTwice.flatMap(F.tensorName) == "a1")
        // Malformed indexes.
        for text in [#"{"weight_map": "#, #"{"metadata": {}}"#, #"{"weight_map": []}"#, #"{"weight_map": {"a1": 3}}"#,
                     #"["a.safetensors"]"#, #"{"weight_map": {"a1": ""}}"#, #"{"metadata": 5, "weight_map": {}}"#] {
            let malformed = try error(indexText: text)
            #expect(malformed.map(F.caseName) == "invalidHeader", "\(text)")
        }
        // An index larger than the header limit is refused before it is read.
        var small = ReaderLimits()
        small.maxHeaderBytes = 16
        let large = try error(limits: small)
        guard case .limitExceeded(_, let limit, _, _)? = large else { Issue.record("\(String(describing: large))"); return }
        #expect(limit == .headerBytes)
        // A damaged shard reports the shard's path.
        let damaged = try error { folder in
            let url = folder.appendingPathComponent("b.safetensors")
            let bytes = try Data(contentsOf: url)
            try bytes.prefix(bytes.count - 1).write(to: url)
        }
        #expect(damaged.map(F.caseName) == "truncated")
        #expect(damaged.flatMap(F.path)?.hasSuffix("b.safetensors") == true)
        // No index at all.
        let noIndex = F.formatError { _ = try ShardedCheckpointReader(indexURL: URL(fileURLWithPath: "/nonexistent/model.safetensors.index.json"), limits: ReaderLimits()) }
        #expect(noIndex.map(F.caseName) == "fileNotFound")
    }

    // MARK: - Malformed single files

    static let malformed: [MalformedSafetensors] = {
        typealias M = MalformedSafetensors
        let e = SafetensorsFixtures.entry
        let file = { (header: String, data: [UInt8]) in SafetensorsFixtures.file(header, data: data) }
        let eight = [UInt8](repeating: 0, count: 8)
        let one = "{" + e("w", "F32", [2], 0, 8) + "}"
        var tinyHeader = ReaderLimits()
        tinyHeader.maxHeaderBytes = 16
        var twoTensors = ReaderLimits()
        twoTensors.maxTensorCount = 2
        var rankTwo = ReaderLimits()
        rankTwo.maxRank = 2
        var unlimited = ReaderLimits()
        unlimited.maxTotalBytes = Int.max
        let petabytes = 4_503_599_627_370_496  // 2^25 × 2^25 × 4 bytes = 4 PiB
        return [
            M(label: "empty file", bytes: Data(), expected: "truncated"),
            M(label: "5 bytes", bytes: Data([1, 0, 0, 0, 0]), expected: "truncated"),
            M(label: "header length beyond the file", bytes: SafetensorsFixtures.file(one, data: eight, declaredLength: 1000), expected: "invalidHeader"),
            // A length beyond the file is "not a safetensors file", whatever the cap (issue 13: a text file
            // named .safetensors was told to raise --max-header-bytes); a plausible one above the cap names it.
            M(label: "header length above the 100 MiB cap", bytes: SafetensorsFixtures.file(one, data: eight, declaredLength: 200 << 20),
              expected: "invalidHeader"),
            M(label: "header length 2^64-1", bytes: SafetensorsFixtures.file(one, data: eight, declaredLength: UInt64.max),
              expected: "invalidHeader"),
            M(label: "header above a lowered cap", bytes: file(one, eight), expected: "limitExceeded", limit: .headerBytes, limits: tinyHeader),
            M(label: "header length 0", bytes: SafetensorsFixtures.file("", data: eight), expected: "invalidHeader"),
            M(label: "header not starting with {", bytes: file(" " + one, eight), expected: "invalidHeader"),
            M(label: "header with a byte-order mark", bytes: file("\u{FEFF}" + one, eight), expected: "invalidHeader"),
            M(label: "invalid UTF-8", bytes: SafetensorsFixtures.file(headerBytes: Array("{\"w\u{1}".utf8) + [0xFF, 0xFE] + Array("\":1}".utf8)),
              expected: "invalidHeader"),
            M(label: "invalid JSON", bytes: file("{\"w\":{\"dtype\":\"F32\",", eight), expected: "invalidHeader"),
            M(label: "trailing NUL after the JSON", bytes: file(one + "\u{0}", eight), expected: "invalidHeader"),
            M(label: "trailing garbage after the JSON", bytes: file(one + "x", eight), expected: "invalidHeader"),
            M(label: "deep nesting", bytes: file("{\"w\":" + String(repeating: "[", count: 100_000), []), expected: "invalidHeader"),
            M(label: "entry not an object", bytes: file("{\"w\":\"F32\"}", []), expected: "invalidTensor", tensor: "w"),
            M(label: "missing dtype", bytes: file("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "missing shape", bytes: file("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "missing data_offsets", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "dtype not a string", bytes: file("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "shape not an array", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "shape with a float", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "shape with an exponent", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "shape with a boolean", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", [0, 0, 0, 0]), expected: "invalidTensor", tensor: "w"),
            M(label: "shape with null", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}}", [0, 0, 0, 0]), expected: "invalidTensor", tensor: "w"),
            M(label: "negative shape", bytes: file("{" + e("w", "F32", [-2], 0, 8) + "}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "shape beyond 64 bits", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,8]}}", eight),
              expected: "invalidTensor", tensor: "w"),
            M(label: "shape product overflows", bytes: file("{" + e("w", "F32", [1 << 40, 1 << 40], 0, 8) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "shape × dtype size overflows", bytes: file("{" + e("w", "F64", [1 << 31, 1 << 31], 0, 8) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "petabytes declared", bytes: file("{" + e("w", "F32", [1 << 25, 1 << 25], 0, petabytes) + "}", eight),
              expected: "limitExceeded", limit: .totalBytes),
            M(label: "petabytes declared, no total limit", bytes: file("{" + e("w", "F32", [1 << 25, 1 << 25], 0, petabytes) + "}", eight),
              expected: "truncated", limits: unlimited),
            M(label: "rank above the limit", bytes: file("{" + e("w", "F32", [1, 1, 2], 0, 8) + "}", eight), expected: "limitExceeded", limit: .rank, limits: rankTwo),
            M(label: "too many tensors", bytes: file("{" + e("a", "U8", [1], 0, 1) + "," + e("b", "U8", [1], 1, 2) + "," + e("c", "U8", [1], 2, 3) + "}", [1, 2, 3]),
              expected: "limitExceeded", limit: .tensorCount, limits: twoTensors),
            M(label: "data_offsets not an array", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "one data offset", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "three data offsets", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "data offset a string", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", eight), expected: "invalidTensor", tensor: "w"),
            M(label: "negative data offset", bytes: file("{" + e("w", "F32", [2], -8, 0) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "data offset beyond 64 bits", bytes: file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", eight),
              expected: "invalidOffsets", tensor: "w"),
            M(label: "offsets ending before they begin", bytes: file("{" + e("w", "F32", [0], 8, 0) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "offsets disagreeing with the shape", bytes: file("{" + e("w", "F32", [3], 0, 8) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "overlapping tensors", bytes: file("{" + e("a", "F32", [2], 0, 8) + "," + e("b", "F32", [2], 4, 12) + "}", eight + [0, 0, 0, 0]),
              expected: "invalidOffsets", tensor: "b"),
            M(label: "the same range twice", bytes: file("{" + e("a", "F32", [2], 0, 8) + "," + e("b", "F32", [2], 0, 8) + "}", eight),
              expected: "invalidOffsets", tensor: "b"),
            M(label: "gap between tensors", bytes: file("{" + e("a", "F32", [1], 0, 4) + "," + e("b", "F32", [1], 8, 12) + "}", eight + [0, 0, 0, 0]),
              expected: "invalidOffsets", tensor: "b"),
            M(label: "first tensor not at 0", bytes: file("{" + e("w", "F32", [1], 4, 8) + "}", eight), expected: "invalidOffsets", tensor: "w"),
            M(label: "data beyond the end of the file", bytes: file("{" + e("w", "F32", [2], 0, 8) + "}", [0, 0, 0, 0]), expected: "truncated"),
            M(label: "trailing bytes after the last tensor", bytes: file("{" + e("w", "F32", [1], 0, 4) + "}", [0, 0, 0, 0, 9, 9]), expected: "invalidHeader"),
            M(label: "data but no tensors", bytes: file("{}", [1]), expected: "invalidHeader"),
            M(label: "duplicate tensor", bytes: file("{" + e("w", "U8", [4], 0, 4) + "," + e("w", "F32", [1], 0, 4) + "}", [0, 0, 0x80, 0x3F]),
              expected: "duplicateTensor", tensor: "w"),
            M(label: "duplicate tensor spelled with an escape", bytes: file("{" + e("w", "U8", [4], 0, 4) + "," + e("\\u0077", "F32", [1], 0, 4) + "}", [0, 0, 0x80, 0x3F]),
              expected: "duplicateTensor", tensor: "w"),
            M(label: "duplicate field in an entry", bytes: file("{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", [0, 0, 0x80, 0x3F]),
              expected: "invalidTensor", tensor: "w"),
            M(label: "duplicate metadata key", bytes: file("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," + e("w", "F32", [2], 0, 8) + "}", eight), expected: "invalidHeader"),
            M(label: "duplicate __metadata__", bytes: file("{\"__metadata__\":{},\"__metadata__\":{}," + e("w", "F32", [2], 0, 8) + "}", eight), expected: "invalidHeader"),
            M(label: "metadata not an object", bytes: file("{\"__metadata__\":[\"a\"]," + e("w", "F32", [2], 0, 8) + "}", eight), expected: "invalidHeader"),
            M(label: "metadata value not a string", bytes: file("{\"__metadata__\":{\"k\":1}," + e("w", "F32", [2], 0, 8) + "}", eight), expected: "invalidHeader"),
            M(label: "pkm_provenance not provenance JSON", bytes: file("{\"__metadata__\":{\"pkm_provenance\":\"{\\\"tool\\\":1}\"}," + e("w", "F32", [2], 0, 8) + "}", eight),
              expected: "invalidHeader"),
        ]
    }()

    @Test("Malformed files raise the specific error", arguments: malformed)
    func malformedFile(_ testCase: MalformedSafetensors) throws {
        let error = try F.openError(testCase.bytes, limits: testCase.limits)
        #expect(error.map(F.caseName) == testCase.expected, "\(String(describing: error))")
        if let tensor = testCase.tensor { #expect(error.flatMap(F.tensorName) == tensor) }
        if let limit = testCase.limit {
            guard case .limitExceeded(_, let found, _, _)? = error else { return }
            #expect(found == limit)
        }
        #expect(error.flatMap(F.path)?.hasSuffix("bad.safetensors") == true)
    }

    @Test("Unsupported dtypes are refused, naming the tensor",
          arguments: ["F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "C64", "F4", "float32", "f32", ""])
    func unsupportedDType(_ dtype: String) throws {
        let bytes = F.file("{" + F.entry("w", dtype, [2], 0, 2) + "}", data: [0, 0])
        let error = try F.openError(bytes)
        guard case .unsupportedDType(_, let tensor, let found)? = error else {
            Issue.record("expected unsupportedDType, got \(String(describing: error))")
            return
        }
        #expect(tensor == "w")
        #expect(found == dtype)
    }

    @Test("Accepted like the reference reader: space padding, JSON whitespace, unknown fields, null metadata, empty files")
    func acceptedVariants() throws {
        let data: [UInt8] = [0, 0, 0x80, 0x3F]
        let entry = F.entry("w", "F32", [1], 0, 4)
        for header in ["{" + entry + "}     ", "{" + entry + "}\n\t\r ", "{\"w\":{\"dtype\":\"F32\",\"extra\":[1,{\"x\":2}],\"shape\":[1],\"data_offsets\":[0,4]}}",
                       "{\"__metadata__\":null," + entry + "}", "{ \"w\" : { \"data_offsets\" : [ 0 , 4 ] , \"shape\" : [ 1 ] , \"dtype\" : \"F32\" } }"] {
            let (reader, folder) = try F.open(F.file(header, data: data))
            defer { try? FileManager.default.removeItem(at: folder) }
            #expect(try reader.tensor(named: "w").floatValues() == [1], "\(header)")
            #expect(reader.metadata.isEmpty)
        }
        let (empty, folder) = try F.open(F.file("{}"))
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(empty.tensorInfos.isEmpty)
        // Zero-size tensors at one offset are listed in header order, and tensors in offset order.
        let ordered = "{" + F.entry("late", "U8", [1], 1, 2) + "," + F.entry("z", "F32", [0], 0, 0) + "," + F.entry("a", "F32", [0, 3], 0, 0) + ","
            + F.entry("early", "U8", [1], 0, 1) + "}"
        let (reader, orderedFolder) = try F.open(F.file(ordered, data: [7, 9]))
        defer { try? FileManager.default.removeItem(at: orderedFolder) }
        #expect(reader.tensorInfos.map(\.name) == ["z", "a", "early", "late"])
        #expect(try reader.tensor(named: "late").int64Values() == [9])
    }

    @Test("A missing path or a folder is refused")
    func missingOrFolder() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let missing = F.formatError { _ = try SafetensorsReader(url: folder.appendingPathComponent("nope.safetensors"), limits: ReaderLimits()) }
        #expect(missing.map(F.caseName) == "fileNotFound")
        let isFolder = F.formatError { _ = try SafetensorsReader(url: folder, limits: ReaderLimits()) }
        #expect(isFolder.map(F.caseName) == "notRegularFile")
    }

    @Test("Every truncation of a valid file is refused without a crash")
    func everyTruncation() throws {
        let bytes = try Data(contentsOf: F.url("no_metadata.safetensors"))
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("cut.safetensors")
        for length in 0..<bytes.count {
            try bytes.prefix(length).write(to: url)
            let error = F.formatError { _ = try SafetensorsReader(url: url, limits: ReaderLimits()) }
            #expect(error != nil, "length \(length)")
        }
    }

    @Test("Seeded byte flips in the header never crash: open fails with a FormatError or reads consistent tensors")
    func headerByteFlips() throws {
        let bytes = try Data(contentsOf: F.url("all_dtypes.safetensors"))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("flip.safetensors")
        var generator = F.Generator(state: 2024)
        var failures = 0
        for _ in 0..<200 {
            var damaged = bytes
            let position = Int(generator.next() % UInt64(8 + headerLength))
            damaged[position] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            try damaged.write(to: url)
            do {
                let reader = try SafetensorsReader(url: url, limits: ReaderLimits())
                for info in reader.tensorInfos { #expect(try reader.tensor(named: info.name).byteCount == info.byteCount) }
            } catch is FormatError {
                failures += 1
            }
        }
        #expect(failures > 100)
    }

    // MARK: - Writer errors and atomicity

    private struct Interrupted: Error {}

    @Test("A failing write leaves nothing behind and an existing destination untouched")
    func writerAtomicity() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let destination = folder.appendingPathComponent("model.safetensors")
        let infos = (0..<4).map { TensorInfo(name: "t\($0)", dtype: .float32, shape: [1024]) }
        var generator = F.Generator(state: 3)
        let data = try F.randomTensor(.float32, [1024], generator: &generator)

        // No destination yet: nothing appears.
        var calls = 0
        #expect(throws: Interrupted.self) {
            try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: [:], options: WriteOptions(), progress: nil) { _ in
                calls += 1
                if calls == 3 { throw Interrupted() }
                return data
            }
        }
        #expect(calls == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)

        // An existing destination stays as it was.
        let original = Data("previous contents".utf8)
        try original.write(to: destination)
        calls = 0
        #expect(throws: Interrupted.self) {
            try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: ["a": "b"], options: WriteOptions(), progress: nil) { _ in
                calls += 1
                if calls == 2 { throw Interrupted() }
                return data
            }
        }
        #expect(try Data(contentsOf: destination) == original)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["model.safetensors"])

        // Data that does not match its entry is an error naming the tensor, with the same guarantees.
        let mismatch = F.formatError {
            try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: [:], options: WriteOptions(), progress: nil) { info in
                info.name == "t1" ? try Tensor(zeros: .float16, shape: [1024]) : data
            }
        }
        #expect(mismatch.map(F.caseName) == "invalidTensor")
        #expect(mismatch.flatMap(F.tensorName) == "t1")
        let wrongShape = F.formatError {
            try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: [:], options: WriteOptions(), progress: nil) { info in
                info.name == "t3" ? try Tensor(zeros: .float32, shape: [32, 32]) : data
            }
        }
        #expect(wrongShape.flatMap(F.tensorName) == "t3")
        #expect(try Data(contentsOf: destination) == original)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["model.safetensors"])

        // A successful write replaces it.
        try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: [:], options: WriteOptions(), progress: nil) { _ in data }
        #expect(try SafetensorsReader(url: destination, limits: ReaderLimits()).tensorInfos == infos)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["model.safetensors"])
    }

    @Test("The writer refuses bad tensor tables before creating anything")
    func writerTableErrors() throws {
        let folder = try F.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let destination = folder.appendingPathComponent("bad.safetensors")
        func error(_ infos: [TensorInfo]) -> FormatError? {
            F.formatError {
                try SafetensorsWriter.write(to: destination, tensorInfos: infos, metadata: [:], options: WriteOptions(), progress: nil) { info in
                    Issue.record("asked for \(info.name)")
                    return try Tensor(zeros: info.dtype, shape: info.shape)
                }
            }
        }
        let duplicate = error([TensorInfo(name: "w", dtype: .int8, shape: [1]), TensorInfo(name: "w", dtype: .int8, shape: [2])])
        #expect(duplicate.map(F.caseName) == "duplicateTensor")
        let reserved = error([TensorInfo(name: "__metadata__", dtype: .int8, shape: [1])])
        #expect(reserved.map(F.caseName) == "invalidTensor")
        let negative = error([TensorInfo(name: "n", dtype: .int8, shape: [-1])])
        #expect(negative.map(F.caseName) == "tensor")
        let overflow = error([TensorInfo(name: "o", dtype: .float64, shape: [1 << 31, 1 << 31])])
        #expect(overflow.map(F.caseName) == "tensor")
        let totalOverflow = error([TensorInfo(name: "a", dtype: .uint8, shape: [Int.max]), TensorInfo(name: "b", dtype: .uint8, shape: [Int.max])])
        #expect(totalOverflow.map(F.caseName) == "invalidTensor")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)
        let notWritable = F.formatError {
            try SafetensorsWriter.write(to: folder.appendingPathComponent("no/such/folder.safetensors"), tensorInfos: [], metadata: [:],
                                        options: WriteOptions(), progress: nil) { _ in throw Interrupted() }
        }
        #expect(notWritable.map(F.caseName) == "writeFailed")
    }
}
