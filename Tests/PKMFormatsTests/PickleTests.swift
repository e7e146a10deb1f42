import Foundation
import PKMCheckpoints
import PKMTestSupport
import PKMTensor
import Testing
import ZIPFoundation
@testable import PKMFormats

// Tests of the PyTorch pickle reader against fixtures/pickle/ (written by real torch.save, see
// tools/gen_pickle_fixtures.py and fixtures/pickle/MANIFEST.json), crafted pickles, and a seeded
// mutation fuzz loop. No Python is needed.

/// fixtures/pickle/expected.json, decoded.
private struct PickleExpectations: Decodable {
    struct ExpectedTensor: Decodable {
        var name: String
        var dtype: String
        var shape: [Int]
        var hex: String
    }
    struct Good: Decodable {
        var tensors: [ExpectedTensor]
        var shared: [[String]]
        var extras: [String]
        var state_dict_key: String?
    }
    struct Refused: Decodable {
        var error: String
        var contains: [String]
    }
    var good: [String: Good]
    var refused: [String: Refused]

    static func load() throws -> PickleExpectations {
        try JSONDecoder().decode(PickleExpectations.self, from: Data(contentsOf: PickleFixtures.url("expected.json")))
    }
}

enum PickleFixtures {
    static func url(_ name: String) -> URL { TestPaths.repository("fixtures/pickle/\(name)") }

    static let good = ["flat_dtypes.pt", "flat_proto4.pt", "legacy.pt", "bigendian.pt", "deflated.pt", "shared.pt",
                       "views.pt", "lightning.ckpt", "model_state_dict.pt", "xlm.pth", "small.pt"]
    static let refused = ["malicious.pt", "bad_missing_storage.pt", "bad_short_storage.pt", "bad_extent.pt",
                          "bad_absurd_size.pt", "bad_negative_stride.pt", "bad_protocol1.pt", "bad_opcode.pt",
                          "bad_recursion_bomb.pt", "bad_builtins_eval.pt", "bad_persistent_id.pt",
                          "bad_truncated_pickle.pt", "bad_truncated_zip.pt"]
}

private func bytes(fromHex hex: String) -> Data {
    var data = Data(capacity: hex.utf8.count / 2)
    var iterator = hex.utf8.makeIterator()
    func nibble(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : c - 48 }
    while let high = iterator.next(), let low = iterator.next() { data.append(nibble(high) << 4 | nibble(low)) }
    return data
}

private func caseName(_ error: FormatError) -> String {
    Mirror(reflecting: error).children.first?.label ?? "\(error)"
}

/// Runs the pickle machine on raw bytes.
private func runPickle(_ bytes: [UInt8], limits: ReaderLimits = ReaderLimits()) throws -> PickleValue {
    var machine = PickleMachine(path: "crafted.pkl", context: "data.pkl", limits: PickleLimits(limits))
    return try machine.run(Data(bytes)).value
}

private func short(_ text: String) -> [UInt8] { [0x8C, UInt8(text.utf8.count)] + Array(text.utf8) }

@Suite("PyTorch pickle checkpoints")
struct PickleTests {
    @Test("the fixture lists here match expected.json")
    func fixtureListsMatch() throws {
        let expected = try PickleExpectations.load()
        #expect(Set(expected.good.keys) == Set(PickleFixtures.good))
        #expect(Set(expected.refused.keys) == Set(PickleFixtures.refused))
    }

    @Test("every good fixture reads bit-exactly, in pickle order, with its shared storages and extras", arguments: PickleFixtures.good)
    func goodFixture(name: String) throws {
        let expected = try #require(try PickleExpectations.load().good[name])
        let reader = try TorchCheckpointReader(url: PickleFixtures.url(name))
        #expect(reader.format == .pytorch)
        #expect(reader.tensorInfos.map(\.name) == expected.tensors.map(\.name))
        for want in expected.tensors {
            let tensor = try reader.tensor(named: want.name)
            #expect(tensor.dtype.rawValue == want.dtype, "\(name) \(want.name)")
            #expect(tensor.shape == want.shape, "\(name) \(want.name)")
            #expect(tensor.storage == bytes(fromHex: want.hex), "\(name) \(want.name): bytes differ")
        }
        #expect(reader.sharedStorages == expected.shared)
        #expect(reader.extras.keys.sorted() == expected.extras)
        #expect(reader.stateDictKey == expected.state_dict_key)
        let all = try reader.readAll()
        #expect(all.entries.count == expected.tensors.count)
    }

    @Test("containers and byte order are detected")
    func containers() throws {
        #expect(try TorchCheckpointReader(url: PickleFixtures.url("legacy.pt")).container == .legacy)
        #expect(try TorchCheckpointReader(url: PickleFixtures.url("flat_dtypes.pt")).container == .zip)
        #expect(try TorchCheckpointReader(url: PickleFixtures.url("bigendian.pt")).isBigEndian)
        #expect(try !TorchCheckpointReader(url: PickleFixtures.url("flat_dtypes.pt")).isBigEndian)
        for name in PickleFixtures.good {
            let head = try Data(contentsOf: PickleFixtures.url(name)).prefix(512)
            #expect(TorchCheckpointReader.looksLikeTorchCheckpoint(head), "\(name)")
        }
        let safetensors = try Data(contentsOf: TestPaths.repository("fixtures/safetensors/all_dtypes.safetensors")).prefix(512)
        #expect(!TorchCheckpointReader.looksLikeTorchCheckpoint(safetensors))
        #expect(!TorchCheckpointReader.looksLikeTorchCheckpoint(Data([0x80, 0x02, 0x7D, 0x2E])))
    }

    @Test("a contiguous legacy tensor is a slice of the mapped file; a view becomes a dense copy")
    func slicesAndCopies() throws {
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("legacy.pt"))
        let first = try #require(reader.tensorInfos.first)
        #expect(try reader.tensor(named: first.name).storage.startIndex > 0, "expected a slice of the mapping, not a fresh buffer")
        let views = try TorchCheckpointReader(url: PickleFixtures.url("views.pt"))
        #expect(try views.tensor(named: "transposed").storage.startIndex == 0)
    }

    @Test("a stored zip entry whose bytes no longer match its CRC-32 is refused when read")
    func crcMismatch() throws {
        var bytes = try Data(contentsOf: PickleFixtures.url("flat_dtypes.pt"))
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("flat_dtypes.pt"))
        let info = try #require(reader.tensorInfos.first { $0.byteCount >= 8 })
        let original = try reader.tensor(named: info.name).storage
        // Flip one byte of that tensor's data where it is stored (found by its bytes).
        let range = try #require(bytes.range(of: original))
        bytes[range.lowerBound] ^= 0xFF
        let folder = try TemporaryFolder(prefix: "pkm-pickle-crc")
        let file = folder.file("crc.pt")
        try bytes.write(to: file)
        let damaged = try TorchCheckpointReader(url: file)
        let error = try #require(throws: FormatError.self) { try damaged.tensor(named: info.name) }
        guard case .decompressionFailed(let path, _, _, let reason) = error else { Issue.record("\(error)"); return }
        #expect(path == file.path && reason.contains("CRC"), "\(reason)")
    }

    @Test("XLM params are exposed as extras and as metadata[\"xlm_params\"] JSON")
    func xlmParams() throws {
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("xlm.pth"))
        let params = try #require(reader.extras["params"])
        #expect(params["emb_dim"] == .int(16))
        #expect(params["n_layers"] == .int(2))
        #expect(params["mem_n_keys"] == .int(8))
        #expect(params["mem_enc_positions"] == .list([.tuple([.int(0), .string("in")])]))
        #expect(params["lang2id"]?.dictEntries?.first?.keyText == "en")
        let json = try #require(reader.metadata["xlm_params"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["emb_dim"] as? Int == 16)
        #expect(object["mem_k_dim"] as? Int == 8)
        #expect(object["mem_v_dim"] as? Int == -1)
        #expect(object["dropout"] as? Double == 0.1)
        #expect(object["use_memory"] as? Bool == true)
        #expect(object["mem_values"] is NSNull)
        #expect((object["mem_enc_positions"] as? [[Any]])?.first?.last as? String == "in")
        #expect(object["lang2id"] == nil, "dicts are left out of xlm_params")
        #expect(reader.extras["dico_id2word"]?.dictEntries?.first?.keyText == "0")
    }

    @Test("Lightning: the module state dict's _metadata is a diagnostic, the nn.Parameter an extra tensor")
    func lightning() throws {
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("lightning.ckpt"))
        #expect(reader.diagnostics.contains { $0.contains("_metadata") })
        guard case .tensor(let gate)? = reader.extras["gate"] else { Issue.record("gate is not a tensor"); return }
        #expect(gate.shape == [2])
        #expect(reader.extras["epoch"] == .int(3))
        #expect(reader.extras["hyper_parameters"]?["lr"] == .float(0.1))
    }

    @Test("stateDictKey forces a key; a missing key lists the available ones")
    func forcedKey() throws {
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("xlm.pth"), stateDictKey: "model")
        #expect(reader.tensorInfos.count == 6)
        do {
            _ = try TorchCheckpointReader(url: PickleFixtures.url("xlm.pth"), stateDictKey: "weights")
            Issue.record("expected an error")
        } catch let error as FormatError {
            guard case .invalidHeader = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("'weights'") && error.description.contains("'params'") && error.description.contains("'model'"))
        }
    }

    @Test("every refused fixture throws the expected FormatError naming the file", arguments: PickleFixtures.refused)
    func refusedFixture(name: String) throws {
        let expected = try #require(try PickleExpectations.load().refused[name])
        let marker = "/tmp/pkm-pwned"
        let existedBefore = FileManager.default.fileExists(atPath: marker)
        do {
            let reader = try TorchCheckpointReader(url: PickleFixtures.url(name))
            for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
            Issue.record("\(name) was read; expected \(expected.error)")
        } catch let error as FormatError {
            if expected.error != "any" { #expect(caseName(error) == expected.error, "\(name): \(error)") }
            #expect(error.description.contains(name), "\(error)")
            for part in expected.contains { #expect(error.description.contains(part), "\(name): '\(part)' not in: \(error)") }
        }
        if !existedBefore { #expect(!FileManager.default.fileExists(atPath: marker)) }
    }

    @Test("the malicious checkpoint names posix.system")
    func malicious() throws {
        #expect {
            _ = try TorchCheckpointReader(url: PickleFixtures.url("malicious.pt"))
        } throws: { error in
            guard case FormatError.refusedGlobal(let path, let global)? = error as? FormatError else { return false }
            return path.hasSuffix("malicious.pt") && (global == "posix.system" || global == "os.system")
        }
    }

    @Test("limits are enforced: rank, tensor count, total bytes, header bytes", arguments: ["rank", "tensor count", "total bytes", "header bytes"])
    func limits(limit: String) throws {
        var limits = ReaderLimits()
        switch limit {
        case "rank": limits.maxRank = 1
        case "tensor count": limits.maxTensorCount = 2
        case "total bytes": limits.maxTotalBytes = 40
        default: limits.maxHeaderBytes = 100
        }
        do {
            _ = try TorchCheckpointReader(url: PickleFixtures.url("flat_dtypes.pt"), limits: limits)
            Issue.record("expected limitExceeded(\(limit))")
        } catch let FormatError.limitExceeded(_, name, _, _) {
            #expect(name.rawValue == limit)
        }
    }

    @Test("the format is .pytorch by extension, opens through Checkpoints, and is never written")
    func formatPlumbing() throws {
        for ext in ["bin", "pt", "pth", "ckpt"] { #expect(CheckpointFormat(pathExtension: ext) == .pytorch) }
        #expect(CheckpointFormat.pytorch.fileExtension == "bin")
        let reader = try Checkpoints.open(PickleFixtures.url("small.pt"))
        #expect(reader is TorchCheckpointReader)
        let folder = try TemporaryFolder(prefix: "pkm-pickle")
        do {
            try Checkpoints.write(to: folder.file("out.bin"), format: .pytorch, tensorInfos: [], metadata: [:]) { _ in
                try Tensor(zeros: .float32, shape: [1])
            }
            Issue.record("writing a pickle should fail")
        } catch let error as FormatError {
            #expect(error.description.contains("never writes them") && error.description.contains("write .safetensors or .pkmz"))
        }
        #expect(folder.contents.isEmpty)
    }
}

// MARK: - Crafted pickles

/// One crafted pickle and a phrase its error must contain.
struct CraftedPickle: Sendable, CustomTestStringConvertible {
    var label: String
    var bytes: [UInt8]
    var expected: String
    var testDescription: String { label }
}

extension CraftedPickle {
    static let protocolTwo: [UInt8] = [0x80, 0x02]

    static let all: [CraftedPickle] = {
        var cases: [CraftedPickle] = []
        cases.append(CraftedPickle(label: "protocol 0 text pickle", bytes: Array("(dp0\n.".utf8), expected: "protocol 0 is not supported"))
        cases.append(CraftedPickle(label: "protocol 6", bytes: [0x80, 0x06, 0x4E, 0x2E], expected: "protocol 6 is not supported"))
        cases.append(CraftedPickle(label: "STACK_GLOBAL os.system (protocol 4)",
                                   bytes: [0x80, 0x04] + short("os") + short("system") + [0x93, 0x2E], expected: "os.system"))
        cases.append(CraftedPickle(label: "GLOBAL subprocess.Popen", bytes: protocolTwo + Array("csubprocess\nPopen\n.".utf8),
                                   expected: "subprocess.Popen"))
        cases.append(CraftedPickle(label: "GLOBAL torch.nn.Linear (a pickled module)", bytes: protocolTwo + Array("ctorch.nn.modules.linear\nLinear\n.".utf8),
                                   expected: "torch.nn.modules.linear.Linear"))
        cases.append(CraftedPickle(label: "REDUCE of a string", bytes: protocolTwo + short("x") + [0x29, 0x52, 0x2E], expected: "not callable"))
        cases.append(CraftedPickle(label: "calling a storage class", bytes: protocolTwo + Array("ctorch\nFloatStorage\n".utf8) + [0x29, 0x52, 0x2E],
                                   expected: "never calls"))
        cases.append(CraftedPickle(label: "LONG1 of 9 bytes", bytes: protocolTwo + [0x8A, 0x09] + [UInt8](repeating: 1, count: 9) + [0x2E],
                                   expected: "wider than 64 bits"))
        cases.append(CraftedPickle(label: "BINGET before BINPUT", bytes: protocolTwo + [0x68, 0x05, 0x2E], expected: "memo entry 5"))
        cases.append(CraftedPickle(label: "list containing itself", bytes: protocolTwo + [0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E],
                                   expected: "contains itself"))
        // Nesting through the memo (the stack stays small): L0 = []; repeat { new = []; new.append(L); L = new }.
        var memoBomb = protocolTwo + [0x5D, 0x71, 0x00, 0x30]
        for _ in 0..<2000 { memoBomb += [0x5D, 0x68, 0x00, 0x61, 0x71, 0x00, 0x30] }
        cases.append(CraftedPickle(label: "memo-driven nesting bomb", bytes: memoBomb + [0x68, 0x00, 0x2E], expected: "nest deeper"))
        cases.append(CraftedPickle(label: "stack flood", bytes: protocolTwo + [UInt8](repeating: 0x4E, count: 70_000) + [0x2E],
                                   expected: "values on the stack"))
        cases.append(CraftedPickle(label: "APPEND to a sealed list", bytes: protocolTwo + [0x5D, 0x71, 0x00, 0x85, 0x68, 0x00, 0x4E, 0x61, 0x2E],
                                   expected: "already stored inside"))
        cases.append(CraftedPickle(label: "SETITEM on a list", bytes: protocolTwo + [0x5D, 0x4E, 0x4E, 0x73, 0x2E], expected: "SETITEM on a list"))
        cases.append(CraftedPickle(label: "STOP with two values", bytes: protocolTwo + [0x4E, 0x4E, 0x2E], expected: "2 values on the stack"))
        cases.append(CraftedPickle(label: "no STOP", bytes: protocolTwo + [0x4E], expected: "ends early"))
        cases.append(CraftedPickle(label: "BINUNICODE longer than the pickle", bytes: protocolTwo + [0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x41, 0x2E],
                                   expected: "runs past the end"))
        cases.append(CraftedPickle(label: "EXT1 opcode", bytes: protocolTwo + [0x82, 0x01, 0x2E], expected: "0x82"))
        cases.append(CraftedPickle(label: "persistent id with 4 fields",
                                   bytes: protocolTwo + [0x28] + short("storage") + [0x4E, 0x4E, 0x4E, 0x74, 0x51, 0x2E], expected: "persistent id with 4 fields"))
        cases.append(CraftedPickle(label: "invalid UTF-8", bytes: protocolTwo + [0x8C, 0x01, 0xFF, 0x2E], expected: "UTF-8"))
        return cases
    }()
}

@Suite("PyTorch pickle machine: crafted pickles")
struct PickleMachineTests {
    @Test("each crafted pickle is refused with a FormatError saying why", arguments: CraftedPickle.all)
    func refused(_ crafted: CraftedPickle) {
        do {
            let value = try runPickle(crafted.bytes)
            Issue.record("read as \(value)")
        } catch let error as FormatError {
            #expect(error.description.contains(crafted.expected), "\(error)")
            #expect(error.description.contains("crafted.pkl"))
        } catch {
            Issue.record("not a FormatError: \(error)")
        }
    }

    @Test("the data subset builds the values Python would")
    func values() throws {
        // {'a': [1, -2, 3.5, True, None, b'x', (70000,)], 'b': OrderedDict()} with memo, FRAME and MEMOIZE.
        var bytes: [UInt8] = [0x80, 0x04, 0x95, 0x30, 0, 0, 0, 0, 0, 0, 0, 0x7D, 0x94, 0x28]
        bytes += short("a") + [0x94, 0x5D, 0x94, 0x28, 0x4B, 0x01, 0x4A, 0xFE, 0xFF, 0xFF, 0xFF]
        bytes += [0x47, 0x40, 0x0C, 0, 0, 0, 0, 0, 0, 0x88, 0x4E, 0x43, 0x01, 0x78, 0x8A, 0x03, 0x70, 0x11, 0x01, 0x85, 0x65]
        bytes += short("b") + short("collections") + short("OrderedDict") + [0x93, 0x29, 0x52, 0x75, 0x2E]
        let value = try runPickle(bytes)
        #expect(value == .dict([
            PickleDictEntry(key: .string("a"), value: .list([.int(1), .int(-2), .float(3.5), .bool(true), .none, .bytes(Data([0x78])), .tuple([.int(70000)])])),
            PickleDictEntry(key: .string("b"), value: .orderedDict([])),
        ]))
    }
}

// MARK: - Fuzzing

@Suite("Fuzzing the PyTorch pickle reader")
struct PickleFuzzTests {
    @Test("mutated checkpoints (zip, legacy, data.pkl in place) are read whole or refused with a FormatError")
    func fuzz() throws {
        let names = ["flat_dtypes.pt", "flat_proto4.pt", "legacy.pt", "shared.pt", "views.pt", "lightning.ckpt", "xlm.pth", "deflated.pt", "bigendian.pt"]
        let seeds = try names.map { [UInt8](try Data(contentsOf: PickleFixtures.url($0))) }
        // Each zip seed's entries, so a mutated data.pkl can be re-zipped (with its CRC-32 right):
        // the pickle machine then sees the mutation, not the container's checksum refusal.
        var zipEntries: [[(name: String, bytes: Data)]?] = []
        for name in names {
            guard let archive = try? Archive(url: PickleFixtures.url(name), accessMode: .read, pathEncoding: nil),
                  archive.contains(where: { $0.path.hasSuffix("/data.pkl") }) else { zipEntries.append(nil); continue }
            var entries: [(String, Data)] = []
            for entry in archive {
                var bytes = Data()
                _ = try archive.extract(entry) { bytes.append($0) }
                entries.append((entry.path, bytes))
            }
            zipEntries.append(entries)
        }
        func rezip(_ entries: [(name: String, bytes: Data)]) throws -> [UInt8] {
            let archive = try Archive(data: Data(), accessMode: .create)
            for (name, bytes) in entries {
                try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(bytes.count), provider: { position, size in
                    bytes.subdata(in: Int(position)..<(Int(position) + size))
                })
            }
            return [UInt8](archive.data ?? Data())
        }
        let iterations = FuzzEnvironment.iterations(default: 3000)
        let scratch = try FuzzScratch("pickle")
        let file = scratch.file("input.pt")
        var limits = ReaderLimits()
        limits.maxTotalBytes = 64 << 20
        var tally = FuzzTally(format: "pickle")
        for input in 0..<iterations {
            var random = SplitMix64(seed: FuzzEnvironment.seed ^ (UInt64(input) &* 0x9E37_79B9_7F4A_7C15) ^ 0x5054)
            let index = random.below(seeds.count)
            var bytes = seeds[index]
            if var entries = zipEntries[index], let at = entries.firstIndex(where: { $0.name.hasSuffix("/data.pkl") }), random.percent(70) {
                // The pickle's bytes only, re-zipped, so the container stays valid: half the time as bytes, half
                // as tensor geometry (sizes, strides, offsets, storage sizes set to stride 0 / huge / negative values).
                var pickle = [UInt8](entries[at].bytes)
                if random.percent(50) {
                    PickleStructureMutator.mutateIntegers(&pickle, random: &random)
                } else {
                    FuzzMutator.mutate(&pickle, random: &random)
                }
                entries[at].bytes = Data(pickle)
                bytes = try rezip(entries)
                // Now and then the zip's own records too: counts, sizes, offsets (issue 18's container tricks).
                if random.percent(20) { PickleStructureMutator.mutateZipRecords(&bytes, random: &random) }
            } else if zipEntries[index] != nil, random.percent(50) {
                PickleStructureMutator.mutateZipRecords(&bytes, random: &random)
            } else {
                FuzzMutator.mutate(&bytes, random: &random, others: seeds)
            }
            fuzzWrite(file.path, bytes)
            tally.read(input: input, bytes: bytes, fileExtension: "pt") { tally in
                FuzzReading.exercise(&tally, fileSize: bytes.count, maximumExpansion: 1 << 20) {
                    try TorchCheckpointReader(url: file, limits: limits)
                }
            }
        }
        print(tally.summary)
        tally.printExamples()
        #expect(tally.failures.isEmpty, "\(tally.failures.joined(separator: "\n"))")
        #expect(tally.hangs == 0)
        #expect(tally.tried == iterations)
        #expect(tally.refused > 0 && tally.accepted > 0, "the mutations should both break and spare files")
    }

    @Test("every truncation of a zip and a legacy checkpoint is refused with a FormatError", arguments: ["flat_dtypes.pt", "legacy.pt", "shared.pt"])
    func truncations(name: String) throws {
        let original = try Data(contentsOf: PickleFixtures.url(name))
        let folder = try TemporaryFolder(prefix: "pkm-pickle-truncated")
        let file = folder.file(name)
        var refused = 0
        for length in stride(from: 0, to: original.count, by: max(1, original.count / 300)) {
            try original.prefix(length).write(to: file)
            do {
                let reader = try TorchCheckpointReader(url: file)
                for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
            } catch is FormatError {
                refused += 1
            } catch {
                Issue.record("length \(length): \(type(of: error)) \(error)")
            }
        }
        #expect(refused > 0)
    }
}

/// Structure-aware mutations of `torch.save` checkpoints (issue 18): the integers of the pickle (which
/// in a state dict are tensor geometry: sizes, strides, storage offsets, storage element counts) and
/// the fields of the zip's directory records.
enum PickleStructureMutator {
    /// Values that break geometry: stride 0 (expanded views), huge sizes, negatives, boundaries.
    static let geometry: [Int32] = [0, 1, -1, 2, 131_072, 1 << 28, Int32.max, Int32.min, 1 << 16, 65_535]

    /// Rewrites 1–4 integer opcodes (BININT1 `K`, BININT2 `M`, BININT `J`) with geometry values, as
    /// BININT so any value fits (the pickle grows; later memo and frame offsets are not used by torch's pickles).
    static func mutateIntegers(_ bytes: inout [UInt8], random: inout SplitMix64) {
        var sites: [(Int, Int)] = []  // (offset, opcode length)
        var index = 2
        while index < bytes.count {
            switch bytes[index] {
            case 0x4B: sites.append((index, 2)); index += 2
            case 0x4D: sites.append((index, 3)); index += 3
            case 0x4A: sites.append((index, 5)); index += 5
            default: index += 1
            }
        }
        guard !sites.isEmpty else { return }
        var chosen = Set<Int>()
        for _ in 0..<(1 + random.below(4)) { chosen.insert(random.below(sites.count)) }
        for site in chosen.sorted(by: >) {
            let (offset, length) = sites[site]
            guard offset + length <= bytes.count else { continue }
            let value = geometry[random.below(geometry.count)]
            let encoded: [UInt8] = [0x4A] + withUnsafeBytes(of: value.littleEndian) { Array($0) }
            bytes.replaceSubrange(offset..<(offset + length), with: encoded)
        }
    }

    /// Sets one field of the EOCD or of a central-directory record (count, size, offset) to a boundary value.
    static func mutateZipRecords(_ bytes: inout [UInt8], random: inout SplitMix64) {
        var records: [Int] = []
        var eocd: Int?
        var index = 0
        while index + 4 <= bytes.count {
            if bytes[index] == 0x50, bytes[index + 1] == 0x4B {
                if bytes[index + 2] == 1, bytes[index + 3] == 2 { records.append(index) }
                if bytes[index + 2] == 5, bytes[index + 3] == 6 { eocd = index }
            }
            index += 1
        }
        let values: [UInt32] = [0, 1, 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFF0, UInt32(bytes.count), UInt32(bytes.count / 2), 0x7FFF_FFFF]
        var field: Int
        var width: Int
        if let eocd, random.percent(35) || records.isEmpty {
            let fields = [(8, 2), (10, 2), (12, 4), (16, 4)]
            let pick = fields[random.below(fields.count)]
            field = eocd + pick.0
            width = pick.1
        } else if !records.isEmpty {
            let record = records[random.below(records.count)]
            // compressed size, uncompressed size, local header offset, method, name length
            let fields = [(20, 4), (24, 4), (42, 4), (10, 2), (28, 2)]
            let pick = fields[random.below(fields.count)]
            field = record + pick.0
            width = pick.1
        } else {
            return
        }
        guard field + width <= bytes.count else { return }
        let value = values[random.below(values.count)]
        for byte in 0..<width { bytes[field + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(byte))) }
    }
}

@Suite("PyTorch pickle amplification")
struct PickleAmplificationTests {
    @Test("an honest deflate bomb (128 MiB of zeros in a ~130 KB zip) is refused as amplification, without extracting it")
    func deflateBomb() throws {
        let scratch = try FuzzScratch("deflate-bomb")
        let file = scratch.file("bomb.pt")
        let zeros = 128 << 20
        // data.pkl: {"w": _rebuild_tensor_v2(storage '0' of 32 Mi floats, 0, (32 Mi,), (1,), False, OrderedDict())}
        func text(_ string: String) -> [UInt8] { Array(string.utf8) }
        func binunicode(_ string: String) -> [UInt8] { [0x58, UInt8(string.utf8.count), 0, 0, 0] + text(string) }
        func binint(_ value: Int) -> [UInt8] { [0x4A] + withUnsafeBytes(of: Int32(value).littleEndian) { Array($0) } }
        var pkl: [UInt8] = [0x80, 0x02, 0x7D] + binunicode("w")
        pkl += text("ctorch._utils\n_rebuild_tensor_v2\n((") + binunicode("storage") + text("ctorch\nFloatStorage\n")
        pkl += binunicode("0") + binunicode("cpu") + binint(zeros / 4) + text("tQ") + [0x4B, 0]
        pkl += binint(zeros / 4) + [0x85, 0x4B, 1, 0x85, 0x89] + text("ccollections\nOrderedDict\n)RtRs.")
        let archive = try Archive(url: file, accessMode: .create, pathEncoding: nil)
        try archive.addEntry(with: "archive/data.pkl", type: .file, uncompressedSize: Int64(pkl.count), provider: { position, size in
            Data(pkl[Int(position)..<(Int(position) + size)])
        })
        try archive.addEntry(with: "archive/data/0", type: .file, uncompressedSize: Int64(zeros), compressionMethod: .deflate,
                             bufferSize: 1 << 20, provider: { _, size in Data(count: size) })
        let size = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int ?? 0
        #expect(size < 1 << 20)
        let error = #expect(throws: FormatError.self) { _ = try TorchCheckpointReader(url: file) }
        guard case .amplificationExceeded(_, let tensor, let logical, let stored, _)? = error else {
            Issue.record("expected amplificationExceeded, got \(String(describing: error))")
            return
        }
        #expect(tensor == "w" && logical == zeros && stored < 1 << 20)
        // Trusted: raising the limit reads it.
        var limits = ReaderLimits()
        limits.maxAmplifiedBytes = 256 << 20
        let reader = try TorchCheckpointReader(url: file, limits: limits)
        #expect(try reader.tensor(named: "w").byteCount == zeros)
    }

    @Test("the default allowance: 4 × the file + 64 MiB, at most half the memory, at least 64 MiB; a changed maxTotalBytes is used")
    func allowance() {
        #expect(ReaderLimits.defaultAmplificationAllowance(fileSize: 1_000, physicalMemory: 16 << 30) == 4_000 + (64 << 20))
        #expect(ReaderLimits.defaultAmplificationAllowance(fileSize: 10 << 30, physicalMemory: 16 << 30) == 8 << 30)
        #expect(ReaderLimits.defaultAmplificationAllowance(fileSize: 0, physicalMemory: 1 << 20) == 64 << 20)
        var limits = ReaderLimits()
        limits.maxTotalBytes = 5 << 30
        #expect(limits.amplificationAllowance(fileSize: 10) == 5 << 30)
        limits.maxAmplifiedBytes = 7
        #expect(limits.amplificationAllowance(fileSize: 10) == 7)
    }

    @Test("tied weights (two names over one storage) within the allowance are read")
    func tiedWeights() throws {
        let reader = try TorchCheckpointReader(url: PickleFixtures.url("shared.pt"))
        #expect(!reader.sharedStorages.isEmpty)
    }
}
