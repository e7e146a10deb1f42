import Foundation
import PKMCheckpoints
@testable import PKMHDF5
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats

/// Fixture locations, seeded data and small helpers for the HDF5 tests.
enum HDF5Fixtures {
    /// The folder holding `Package.swift`.
    static var repositoryRoot: URL { TestPaths.repositoryRoot }

    static let folder = repositoryRoot.appendingPathComponent("fixtures/hdf5")

    static func url(_ name: String) -> URL { folder.appendingPathComponent(name) }

    /// `fixtures/hdf5/expected.json`, written by `tools/gen_hdf5_fixtures.py`.
    static func expected() throws -> [String: Any] {
        let data = try Data(contentsOf: url("expected.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A fresh empty folder; remove it with `FileManager.default.removeItem(at:)`.
    static func temporaryFolder() throws -> URL {
        try TestPaths.newFolder(prefix: "pkm-hdf5-tests")
    }

    static func hex(_ data: Data) -> String { data.map { String(format: "%02x", $0) }.joined() }

    static func data<T: FixedWidthInteger>(_ values: [T]) -> Data {
        values.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
    }

    /// SplitMix64: the same seed gives the same bytes on every machine.
    typealias Generator = SplitMix64

    /// Bit patterns every float type must keep: NaN payloads (quiet and signalling), ±0,
    /// subnormals, ±inf, extremes.
    static func specialBytes(_ dtype: DType) -> Data {
        switch dtype {
        case .float32:
            return data([0x7FC0_0001, 0x7F80_0001, 0xFFC1_2345, 0x8000_0000, 0x0000_0000, 0x0000_0001, 0x807F_FFFF,
                         0x7F80_0000, 0xFF80_0000, 0x7F7F_FFFF] as [UInt32])
        case .float64:
            return data([0x7FF8_0000_0000_0001, 0x7FF0_0000_0000_0001, 0xFFF8_1234_5678_9ABC, 0x8000_0000_0000_0000,
                         0x0000_0000_0000_0001, 0x800F_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000, 0x7FEF_FFFF_FFFF_FFFF] as [UInt64])
        case .float16:
            return data([0x7C01, 0xFE01, 0x7DFF, 0x8000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7BFF] as [UInt16])
        case .bfloat16:
            return data([0x7F81, 0xFFC1, 0x7FC0, 0x8000, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7F7F] as [UInt16])
        case .int64: return data([Int64.min, Int64.max, -1, 0])
        case .int32: return data([Int32.min, Int32.max, -1, 0])
        case .int16: return data([Int16.min, Int16.max, -1, 0])
        case .int8: return data([Int8.min, Int8.max, -1, 0])
        case .uint8: return data([UInt8.min, UInt8.max, 1, 0] as [UInt8])
        case .bool: return data([1, 0, 0, 1] as [UInt8])
        }
    }

    /// Seeded tensors of `dtype` with ranks 0–4, empty shapes, and every special bit pattern.
    static func stateDict(_ dtype: DType, seed: UInt64) throws -> StateDict {
        var generator = Generator(state: seed)
        let shapes: [[Int]] = [[], [0], [7], [2, 3], [2, 0, 4], [3, 1, 2], [1, 2, 3, 2], [2, 3, 4, 5]]
        var dict = StateDict()
        for (index, shape) in shapes.enumerated() {
            let count = ShapeMath.elementCount(shape) ?? 0
            var bytes = generator.bytes(count * dtype.byteSize)
            if dtype == .bool { bytes = bytes.map { $0 & 1 } }
            try dict.insert(Tensor(dtype: dtype, shape: shape, storage: Data(bytes)), named: "layer.\(index).rank\(shape.count)")
        }
        let specials = specialBytes(dtype)
        try dict.insert(Tensor(dtype: dtype, shape: [specials.count / dtype.byteSize], storage: specials), named: "specials")
        return dict
    }

    /// The sample `tools/gen_hdf5_fixtures.py --check-swift` checks with h5py; keep the two in step.
    static func sample() throws -> (dict: StateDict, provenance: Provenance) {
        var dict = StateDict(metadata: ["config": #"{"model_type": "bert"}"#, "note": "µ unicode ✓"])
        try dict.insert(Tensor(float32: (0..<6).map { Float($0) * 0.5 - 1 }, shape: [2, 3]), named: "weight.f32")
        try dict.insert(Tensor(dtype: .float16, shape: [6], storage: data([0x3C00, 0xC100, 0x8000, 0x7BFF, 0x0001, 0x7E01] as [UInt16])), named: "half")
        try dict.insert(Tensor(dtype: .bfloat16, shape: [3], storage: data([0x3F80, 0xC000, 0x7FC0] as [UInt16])), named: "brain")
        try dict.insert(Tensor(dtype: .bool, shape: [2, 2], storage: Data([1, 0, 0, 1])), named: "mask")
        try dict.insert(Tensor(int64: [-1, 0, 1 << 40], shape: [3]), named: "ids")
        try dict.insert(Tensor(dtype: .int32, shape: [2], storage: data([-7, 7] as [Int32])), named: "i32")
        try dict.insert(Tensor(dtype: .int16, shape: [2], storage: data([-300, 300] as [Int16])), named: "i16")
        try dict.insert(Tensor(dtype: .int8, shape: [2], storage: data([-128, 127] as [Int8])), named: "i8")
        try dict.insert(Tensor(dtype: .uint8, shape: [2], storage: Data([0, 255])), named: "u8")
        try dict.insert(Tensor(dtype: .float64, shape: [2], storage: data([Double.pi.bitPattern, (-1e300).bitPattern])), named: "f64")
        try dict.insert(Tensor(int64: [42], shape: []), named: "scalar")
        try dict.insert(Tensor(zeros: .float32, shape: [0, 4]), named: "empty")
        try dict.insert(Tensor(int64: [3, 5], shape: [1, 2]), named: "outputs/memory/1/indices")
        let provenance = Provenance(sourceFile: "sample.safetensors", sourceSHA256: String(repeating: "cd", count: 32),
                                    created: Date(timeIntervalSince1970: 1_718_107_200), operation: "convert")
        return (dict, provenance)
    }

    static func write(_ dict: StateDict, to url: URL, provenance: Provenance? = nil) throws {
        var options = WriteOptions()
        options.provenance = provenance
        try Checkpoints.write(dict, to: url, format: .hdf5, options: options)
    }

    /// Names in a folder, hidden ones included (temporary files start with a dot).
    static func contents(of folder: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
    }
}

private struct StopWriting: Error {}

/// Thread-safe accumulation for concurrency tests.
private final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: Data] = [:]
    private var failures: [String] = []
    func record(_ name: String, _ data: Data) { lock.lock(); values[name] = data; lock.unlock() }
    func fail(_ message: String) { lock.lock(); failures.append(message); lock.unlock() }
    var snapshot: (values: [String: Data], failures: [String]) { lock.lock(); defer { lock.unlock() }; return (values, failures) }
}

@Suite("HDF5")
struct HDF5Tests {
    // MARK: Round trips

    @Test("every dtype round-trips bit-exactly, ranks 0–4 and empty tensors", arguments: DType.allCases)
    func roundTrip(dtype: DType) throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var dict = try HDF5Fixtures.stateDict(dtype, seed: 0xC0FFEE &+ UInt64(dtype.byteSize))
        dict.metadata = ["config": #"{"model_type":"roberta","hidden_size":8}"#, "note": "ünïcode ✓", "empty": ""]
        let provenance = Provenance(sourceFile: "in.safetensors", sourceSHA256: String(repeating: "0f", count: 32), operation: "test")
        let url = folder.appendingPathComponent("model.h5")
        try HDF5Fixtures.write(dict, to: url, provenance: provenance)

        let reader = try HDF5Reader(url: url, limits: ReaderLimits())
        #expect(reader.format == .hdf5)
        #expect(reader.tensorInfos.map(\.name) == dict.names)
        for (name, tensor) in dict.entries {
            let info = try #require(reader.tensorInfos.first { $0.name == name })
            #expect(info.dtype == dtype && info.shape == tensor.shape, "\(name)")
            let read = try reader.tensor(named: name)
            #expect(read.isBitwiseEqual(to: tensor), "\(name): \(HDF5Fixtures.hex(read.storage)) != \(HDF5Fixtures.hex(tensor.storage))")
        }
        #expect(reader.metadata == dict.metadata)
        #expect(reader.provenance == provenance)
        #expect(try Checkpoints.detectFormat(of: url) == .hdf5)
    }

    @Test("writing is deterministic: the same input gives the same bytes")
    func deterministic() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (dict, provenance) = try HDF5Fixtures.sample()
        let first = folder.appendingPathComponent("a.h5"), second = folder.appendingPathComponent("b.h5")
        try HDF5Fixtures.write(dict, to: first, provenance: provenance)
        try HDF5Fixtures.write(dict, to: second, provenance: provenance)
        #expect(try Data(contentsOf: first) == Data(contentsOf: second))
    }

    @Test("tensor order is the writing order; '/' names become nested groups read back as dotted keys")
    func orderAndNesting() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let names = ["zeta", "inputs/input_ids", "alpha.weight", "outputs/memory/1/indices", "inputs/attention_mask", "mid"]
        var dict = StateDict()
        for (index, name) in names.enumerated() { try dict.insert(Tensor(int64: [Int64(index)], shape: [1]), named: name) }
        let url = folder.appendingPathComponent("order.h5")
        try HDF5Fixtures.write(dict, to: url)
        let reader = try HDF5Reader(url: url, limits: ReaderLimits())
        // Depth first: the `inputs` group (created second) holds both of its datasets.
        #expect(reader.tensorInfos.map(\.name) == ["zeta", "inputs.input_ids", "inputs.attention_mask", "alpha.weight",
                                                   "outputs.memory.1.indices", "mid"])
        #expect(reader.objectPath(ofTensor: "outputs.memory.1.indices") == "/outputs/memory/1/indices")
        #expect(reader.objectPath(ofTensor: "alpha.weight") == "/alpha.weight")
        #expect(try reader.tensor(named: "inputs.attention_mask").int64Values() == [4])
    }

    @Test("a large tensor (4 MiB) round-trips")
    func largeTensor() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var generator = HDF5Fixtures.Generator(state: 99)
        let tensor = try Tensor(dtype: .float32, shape: [1024, 1024], storage: Data(generator.bytes(4 << 20)))
        let url = folder.appendingPathComponent("large.h5")
        try HDF5Fixtures.write(try StateDict([("big.weight", tensor)]), to: url)
        #expect(try HDF5Reader(url: url, limits: ReaderLimits()).tensor(named: "big.weight").isBitwiseEqual(to: tensor))
    }

    @Test("an HDF5 checkpoint read and written again keeps every tensor and the metadata")
    func readThenWrite() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try HDF5Reader(url: HDF5Fixtures.url("flat.h5"), limits: ReaderLimits())
        let url = folder.appendingPathComponent("copy.h5")
        try Checkpoints.write(to: url, format: .hdf5, tensorInfos: source.tensorInfos, metadata: source.metadata) {
            try source.tensor(named: $0.name)
        }
        let copy = try HDF5Reader(url: url, limits: ReaderLimits())
        #expect(copy.tensorInfos == source.tensorInfos)
        #expect(copy.metadata == source.metadata)
        for info in source.tensorInfos {
            #expect(try copy.tensor(named: info.name).isBitwiseEqual(to: source.tensor(named: info.name)), "\(info.name)")
        }
    }

    // MARK: Committed fixtures written by h5py

    @Test("h5py fixtures read as expected", arguments: ["flat.h5", "nested.h5", "chunked.h5", "float16.h5", "bfloat16.h5",
                                                       "bigendian.h5", "strings.h5", "userblock.h5"])
    func h5pyFixture(name: String) throws {
        let expected = try #require(try HDF5Fixtures.expected()[name] as? [String: Any])
        let reader = try HDF5Reader(url: HDF5Fixtures.url(name), limits: ReaderLimits())
        try Self.compare(reader, with: expected)
    }

    /// Compares names, order, dtypes, shapes, bytes, metadata and provenance with expected.json.
    static func compare(_ reader: HDF5Reader, with expected: [String: Any]) throws {
        let tensors = try #require(expected["tensors"] as? [[String: Any]])
        #expect(reader.tensorInfos.map(\.name) == tensors.compactMap { $0["name"] as? String })
        for entry in tensors {
            let name = try #require(entry["name"] as? String)
            let info = try #require(reader.tensorInfos.first { $0.name == name }, "\(name) missing")
            #expect(info.dtype.rawValue == entry["dtype"] as? String, "\(name)")
            #expect(info.shape == entry["shape"] as? [Int], "\(name)")
            let tensor = try reader.tensor(named: name)
            #expect(tensor.dtype == info.dtype && tensor.shape == info.shape)
            if let hex = entry["hex"] as? String {
                #expect(HDF5Fixtures.hex(tensor.storage) == hex, "\(name)")
            } else {
                #expect(SHA256.hex(of: tensor.storage) == entry["sha256"] as? String, "\(name)")
            }
        }
        #expect(reader.metadata == (expected["metadata"] as? [String: String] ?? [:]))
        if let provenance = expected["provenance"] as? [String: String] {
            let read = try #require(reader.provenance)
            #expect(read.sourceFile == provenance["source_file"])
            #expect(read.sourceSHA256 == provenance["source_sha256"])
            #expect(read.tool == provenance["tool"])
            #expect(read.created == provenance["created"])
            #expect(read.operation == provenance["operation"])
        } else {
            #expect(reader.provenance == nil)
        }
    }

    @Test("spot checks on h5py fixtures: config attribute, scalar, float16 kept raw, bool, big-endian values")
    func fixtureSpotChecks() throws {
        let flat = try HDF5Reader(url: HDF5Fixtures.url("flat.h5"), limits: ReaderLimits())
        let config = try #require(flat.metadata["config"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(config.utf8)) as? [String: Any])
        #expect(object["model_type"] as? String == "bert")
        #expect(flat.metadata["atol"].flatMap(Double.init) == 1e-4)
        let scalar = try flat.tensor(named: "encoder.layer.0.memory.query_proj.query_mlps.1.num_batches_tracked")
        #expect(scalar.shape == [] && scalar.int64Values() == [1_234_567_890_123])
        #expect(try flat.tensor(named: "encoder.mask").storage == Data([1, 0, 1, 0, 0, 1]))
        #expect(try flat.tensor(named: "encoder.bool_bytes").dtype == .bool)

        let half = try HDF5Reader(url: HDF5Fixtures.url("float16.h5"), limits: ReaderLimits())
        let special = try half.tensor(named: "special")
        #expect(special.dtype == .float16)
        #expect(try half.tensor(named: "special_be").storage == special.storage)

        let big = try HDF5Reader(url: HDF5Fixtures.url("bigendian.h5"), limits: ReaderLimits())
        let floats = try big.tensor(named: "be.f32")
        #expect(floats.storage.prefix(12) == HDF5Fixtures.data([0x0000_0000, 0x8000_0000, 0x0000_0001] as [UInt32]))
        #expect(floats.floatValues()[9] == 1)

        let nested = try HDF5Reader(url: HDF5Fixtures.url("nested.h5"), limits: ReaderLimits())
        #expect(nested.objectPath(ofTensor: "bert.encoder.layer.0.attention.self.query.weight") == "/bert/encoder/layer/0/attention/self/query/weight")
    }

    /// Debian 12 ships no HDF5 zstd plugin (`apt-cache search hdf5 plugin`: LZ4, BZip2, Bitshuffle,
    /// Blosc, ZFP, LZF only), so without `HDF5_PLUGIN_PATH` the outcome is the clear error; with a
    /// plugin path set, the file must read and match. Either way one definite outcome is required.
    @Test("zstd (filter 32015): a clear error naming the filter and HDF5_PLUGIN_PATH, or with a plugin path the exact values")
    func zstdFilter() throws {
        let url = HDF5Fixtures.url("zstd.h5")
        let expected = try #require(try HDF5Fixtures.expected()["zstd.h5"] as? [String: Any])
        if ProcessInfo.processInfo.environment["HDF5_PLUGIN_PATH"] != nil {
            try Self.compare(try HDF5Reader(url: url, limits: ReaderLimits()), with: expected)
            return
        }
        do {
            _ = try HDF5Reader(url: url, limits: ReaderLimits()).readAll()
            Issue.record("a zstd-compressed dataset read without a zstd plugin")
        } catch let FormatError.hdf5(path, object, message) {
            #expect(path == url.path)
            #expect(object == "/zstd.f32")
            #expect(message.contains("32015") && message.contains("HDF5_PLUGIN_PATH"))
        }
    }

    @Test("the committed file written by HDF5Writer (checked with h5py) holds the sample")
    func swiftWrittenFixture() throws {
        let (dict, provenance) = try HDF5Fixtures.sample()
        if let out = ProcessInfo.processInfo.environment["PKM_HDF5_SAMPLE_OUT"] {
            // Regenerate: PKM_HDF5_SAMPLE_OUT=fixtures/hdf5/swift_written.h5 swift test --filter HDF5,
            // then run tools/gen_hdf5_fixtures.py, which checks it with h5py.
            try HDF5Fixtures.write(dict, to: URL(fileURLWithPath: out), provenance: provenance)
        }
        let reader = try HDF5Reader(url: HDF5Fixtures.url("swift_written.h5"), limits: ReaderLimits())
        #expect(reader.tensorInfos.map(\.name) == dict.names.map { $0.replacingOccurrences(of: "/", with: ".") })
        for (name, tensor) in dict.entries {
            #expect(try reader.tensor(named: name.replacingOccurrences(of: "/", with: ".")).isBitwiseEqual(to: tensor), "\(name)")
        }
        #expect(reader.metadata == dict.metadata)
        #expect(reader.provenance == provenance)

        // The writer is deterministic, so today's output must be the very file h5py checked.
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let fresh = folder.appendingPathComponent("sample.h5")
        try HDF5Fixtures.write(dict, to: fresh, provenance: provenance)
        #expect(try Data(contentsOf: fresh) == Data(contentsOf: HDF5Fixtures.url("swift_written.h5")),
                "HDF5Writer output changed: regenerate with PKM_HDF5_SAMPLE_OUT=fixtures/hdf5/swift_written.h5 swift test --filter HDF5, then run tools/gen_hdf5_fixtures.py (h5py check)")
    }

    // MARK: Malformed and unsupported input

    @Test("an empty file, a non-HDF5 file, a folder and a missing file give FormatErrors")
    func notHDF5() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let empty = folder.appendingPathComponent("empty.h5")
        try Data().write(to: empty)
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: empty, limits: ReaderLimits()) }
        guard case .unknownFormat(let path, _) = error else { Issue.record("empty file: \(String(describing: error))"); return }
        #expect(path == empty.path)

        let text = folder.appendingPathComponent("text.h5")
        try Data(String(repeating: "this is not an HDF5 file\n", count: 100).utf8).write(to: text)
        let magic = #expect(throws: FormatError.self) { try HDF5Reader(url: text, limits: ReaderLimits()) }
        guard case .badMagic(_, _, let found) = magic else { Issue.record("text file: \(String(describing: magic))"); return }
        #expect(found.hasPrefix("74 68 69 73"))

        let missing = #expect(throws: FormatError.self) { try HDF5Reader(url: folder.appendingPathComponent("nope.h5"), limits: ReaderLimits()) }
        guard case .fileNotFound = missing else { Issue.record("missing file: \(String(describing: missing))"); return }
        let directory = #expect(throws: FormatError.self) { try HDF5Reader(url: folder, limits: ReaderLimits()) }
        guard case .notRegularFile(_, let found, _) = directory, found == "a folder" else { Issue.record("folder: \(String(describing: directory))"); return }
    }

    @Test("a truncated HDF5 file gives a FormatError naming the file, never a crash", arguments: [8, 40, 100, 600, 2048, -1])
    func truncated(cut: Int) throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let whole = try Data(contentsOf: HDF5Fixtures.url("flat.h5"))
        let length = cut < 0 ? whole.count - 1 : cut
        let url = folder.appendingPathComponent("cut.h5")
        try whole.prefix(length).write(to: url)
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: url, limits: ReaderLimits()) }
        let described = error.map(String.init(describing:)) ?? ""
        #expect(described.contains(url.path))
        if length >= 100, case .truncated(_, _, let offset, let needed, let available)? = error {
            #expect(available == length && offset == length && needed == whole.count)
        } else if length >= 100 {
            Issue.record("expected .truncated for a cut at \(length): \(described)")
        }
    }

    /// Damaged chunk data (a gzip stream, a fletcher32-checked chunk) fails that tensor's read
    /// with an error naming the dataset, while the other tensors still read. (Arbitrarily
    /// corrupted *metadata* is not tested: libhdf5 1.10.8 itself can crash on it.)
    @Test("damaged chunk data gives a FormatError naming the dataset", arguments: ["gzip_shuffle.f32", "fletcher.f64"])
    func damagedChunk(dataset: String) throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let entry = try #require(try HDF5Fixtures.expected()["chunked.h5"] as? [String: Any])
        let chunks = try #require(entry["first_chunks"] as? [String: [String: Int]])
        let chunk = try #require(chunks[dataset])
        let offset = try #require(chunk["offset"]), size = try #require(chunk["size"])
        var bytes = [UInt8](try Data(contentsOf: HDF5Fixtures.url("chunked.h5")))
        for position in (offset + size / 3)..<(offset + size / 3 + 8) { bytes[position] ^= 0x5A }
        let url = folder.appendingPathComponent("damaged.h5")
        try Data(bytes).write(to: url)

        let reader = try HDF5Reader(url: url, limits: ReaderLimits())
        let error = #expect(throws: FormatError.self) { try reader.tensor(named: dataset) }
        guard case .hdf5(let path, let object, _)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path == url.path && object == "/\(dataset)")
        let untouched = try HDF5Reader(url: HDF5Fixtures.url("chunked.h5"), limits: ReaderLimits())
        for info in reader.tensorInfos where info.name != dataset {
            #expect(try reader.tensor(named: info.name).isBitwiseEqual(to: untouched.tensor(named: info.name)), "\(info.name)")
        }
    }

    @Test("unsupported datasets are rejected naming the dataset",
          arguments: [("unsupported_compound.h5", "bad.compound"), ("unsupported_string.h5", "bad.strings"),
                      ("unsupported_vlen.h5", "bad.vlen"), ("unsupported_uint32.h5", "bad.uint32"),
                      ("unsupported_uint16.h5", "bad.uint16")])
    func unsupported(file: String, dataset: String) throws {
        let url = HDF5Fixtures.url(file)
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: url, limits: ReaderLimits()) }
        guard case .unsupportedDType(let path, let tensor, let dtype)? = error else {
            Issue.record("\(file): \(String(describing: error))")
            return
        }
        #expect(path == url.path && tensor == dataset)
        #expect(dtype.hasPrefix("HDF5 "))
    }

    @Test("a dataset declaring more data than the file stores is refused before anything is allocated",
          arguments: ["unallocated_contiguous.h5", "unallocated_chunked.h5"])
    func unallocated(file: String) throws {
        let url = HDF5Fixtures.url(file)
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: url, limits: ReaderLimits()) }
        guard case .invalidOffsets(let path, let tensor, let reason)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path == url.path && tensor == "never.written")
        #expect(reason.contains("declares"))
    }

    @Test("a soft link is rejected naming it")
    func softLink() throws {
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: HDF5Fixtures.url("soft_link.h5"), limits: ReaderLimits()) }
        guard case .invalidTensor(_, let tensor, let reason)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(tensor == "alias" && reason.contains("soft"))
    }

    @Test("declared sizes are checked against ReaderLimits before anything is read")
    func limits() throws {
        let flat = HDF5Fixtures.url("flat.h5")
        func limitName(_ limits: ReaderLimits, _ url: URL = flat) -> String? {
            do {
                _ = try HDF5Reader(url: url, limits: limits)
                return nil
            } catch FormatError.limitExceeded(_, let limit, let value, let maximum) {
                return value > maximum ? limit.rawValue : "value \(value) not above \(maximum)"
            } catch {
                return "\(error)"
            }
        }
        var limits = ReaderLimits()
        limits.maxTensorCount = 3
        #expect(limitName(limits) == "tensor count")
        limits = ReaderLimits()
        limits.maxRank = 3
        #expect(limitName(limits) == "rank")
        limits = ReaderLimits()
        limits.maxTotalBytes = 100
        #expect(limitName(limits) == "total bytes")
        limits = ReaderLimits()
        limits.maxHeaderBytes = 16
        #expect(limitName(limits, HDF5Fixtures.url("strings.h5")) == "header bytes")
        #expect(limitName(ReaderLimits()) == nil)
    }

    @Test("an unknown tensor name gives tensorNotFound")
    func unknownTensor() throws {
        let reader = try HDF5Reader(url: HDF5Fixtures.url("flat.h5"), limits: ReaderLimits())
        let error = #expect(throws: FormatError.self) { try reader.tensor(named: "no.such.tensor") }
        guard case .tensorNotFound(_, let tensor)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(tensor == "no.such.tensor")
    }

    // MARK: Writer errors and atomicity

    @Test("names HDF5 cannot hold are rejected naming the tensor, leaving nothing behind",
          arguments: ["/leading", "trailing/", "double//slash", "", "dot/./part"])
    func invalidNames(name: String) throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("bad.h5")
        let dict = try StateDict([("fine", Tensor(float32: [1], shape: [1])), (name, Tensor(float32: [2], shape: [1]))])
        let error = #expect(throws: FormatError.self) { try HDF5Fixtures.write(dict, to: url) }
        guard case .invalidTensor(let path, let tensor, _)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(path == url.path && tensor == name)
        #expect(try HDF5Fixtures.contents(of: folder).isEmpty)
    }

    @Test("a tensor that is also a group, or two names with the same dotted key, are rejected")
    func conflictingNames() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("bad.h5")
        let one = try Tensor(float32: [1], shape: [1])
        let groupClash = #expect(throws: FormatError.self) { try HDF5Fixtures.write(try StateDict([("a", one), ("a/b", one)]), to: url) }
        guard case .invalidTensor(_, "a/b", _)? = groupClash else { Issue.record("\(String(describing: groupClash))"); return }
        let reverse = #expect(throws: FormatError.self) { try HDF5Fixtures.write(try StateDict([("a/b", one), ("a", one)]), to: url) }
        guard case .invalidTensor(_, "a", _)? = reverse else { Issue.record("\(String(describing: reverse))"); return }
        let dotted = #expect(throws: FormatError.self) { try HDF5Fixtures.write(try StateDict([("x.y", one), ("x/y", one)]), to: url) }
        guard case .duplicateTensor(_, "x/y")? = dotted else { Issue.record("\(String(describing: dotted))"); return }
        #expect(try HDF5Fixtures.contents(of: folder).isEmpty)
    }

    @Test("data that disagrees with its table entry is rejected")
    func mismatchedData() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("bad.h5")
        let error = #expect(throws: FormatError.self) {
            try HDF5Writer.write(to: url, tensorInfos: [TensorInfo(name: "w", dtype: .float32, shape: [2])], metadata: [:],
                                 options: WriteOptions(), progress: nil) { _ in try Tensor(float32: [1, 2, 3], shape: [3]) }
        }
        guard case .invalidTensor(_, "w", _)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(try HDF5Fixtures.contents(of: folder).isEmpty)
    }

    @Test("progress is reported after each tensor")
    func progress() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let dict = try HDF5Fixtures.stateDict(.float32, seed: 5)
        let infos = dict.entries.map { TensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }
        var calls: [[Int]] = []
        try HDF5Writer.write(to: folder.appendingPathComponent("p.h5"), tensorInfos: infos, metadata: [:], options: WriteOptions(),
                             progress: { calls.append([$0, $1]) }) { info in
            try #require(dict[info.name])
        }
        #expect(calls == (1...infos.count).map { [$0, infos.count] })
    }

    @Test("writing into a folder that does not exist fails cleanly")
    func missingFolder() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("absent/model.h5")
        let (dict, _) = try HDF5Fixtures.sample()
        #expect(throws: FormatError.self) { try HDF5Fixtures.write(dict, to: url) }
        #expect(!FileManager.default.fileExists(atPath: url.path))
        #expect(try HDF5Fixtures.contents(of: folder).isEmpty)
    }

    @Test("a write that fails midway leaves no file and no temporary files; an existing file is untouched")
    func atomicWrite() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("model.h5")
        let dict = try HDF5Fixtures.stateDict(.float32, seed: 11)
        let infos = dict.entries.map { TensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }
        func failingWrite() throws {
            var served = 0
            try HDF5Writer.write(to: url, tensorInfos: infos, metadata: ["config": "{}"], options: WriteOptions(), progress: nil) { info in
                served += 1
                if served == 4 { throw StopWriting() }
                return try #require(dict[info.name])
            }
        }
        #expect(throws: StopWriting.self) { try failingWrite() }
        #expect(try HDF5Fixtures.contents(of: folder).isEmpty)

        let previous = Data("previous contents".utf8)
        try previous.write(to: url)
        #expect(throws: StopWriting.self) { try failingWrite() }
        #expect(try Data(contentsOf: url) == previous)
        #expect(try HDF5Fixtures.contents(of: folder) == ["model.h5"])

        try HDF5Fixtures.write(dict, to: url)
        #expect(try HDF5Reader(url: url, limits: ReaderLimits()).tensorInfos.map(\.name) == dict.names)
        #expect(try HDF5Fixtures.contents(of: folder) == ["model.h5"])
    }

    // MARK: Concurrency

    @Test("readers and writers on many threads at once (libhdf5 calls are serialised)")
    func concurrentUse() throws {
        let folder = try HDF5Fixtures.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let readers = try ["flat.h5", "chunked.h5", "nested.h5"].map { try HDF5Reader(url: HDF5Fixtures.url($0), limits: ReaderLimits()) }
        var serial: [String: Data] = [:]
        for (index, reader) in readers.enumerated() {
            for info in reader.tensorInfos { serial["\(index):\(info.name)"] = try reader.tensor(named: info.name).storage }
        }
        let jobs = readers.enumerated().flatMap { index, reader in reader.tensorInfos.map { (index, $0.name) } }
        let results = Results()
        let folderPath = folder.path
        DispatchQueue.concurrentPerform(iterations: jobs.count + 8) { job in
            do {
                if job < jobs.count {
                    let (index, name) = jobs[job]
                    results.record("\(index):\(name)", try readers[index].tensor(named: name).storage)
                } else {
                    let dict = try HDF5Fixtures.stateDict(.float16, seed: UInt64(job))
                    let url = URL(fileURLWithPath: folderPath).appendingPathComponent("w\(job).h5")
                    try HDF5Fixtures.write(dict, to: url)
                    let back = try HDF5Reader(url: url, limits: ReaderLimits())
                    for (name, tensor) in dict.entries where try !back.tensor(named: name).isBitwiseEqual(to: tensor) {
                        results.fail("\(url.lastPathComponent) \(name) differs")
                    }
                }
            } catch {
                results.fail("job \(job): \(error)")
            }
        }
        let snapshot = results.snapshot
        #expect(snapshot.failures.isEmpty, "\(snapshot.failures)")
        #expect(snapshot.values == serial)
    }
}
