import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

@Suite("Graft")
struct GraftTests {
    func smallOptions(_ layers: [Int], mode: MemoryMode, valueInit: ValueInit = .normal, seed: UInt64 = 3) -> GraftOptions {
        var options = GraftOptions(layers: layers)
        options.mode = mode
        options.keyCount = 8
        options.headCount = 2
        options.knn = 4
        options.keyDimension = 8
        options.valueInit = valueInit
        options.seed = seed
        return options
    }

    @Test("every base tensor is copied bit-exactly and memory tensors are added", arguments: [CheckpointFormat.safetensors, .hdf5])
    func copiesBase(format: CheckpointFormat) throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let base = try PipelineFixtures.writeCheckpoint(config, to: folder.file("base.\(format.fileExtension)"), format: format)
        let out = folder.file("grafted.\(format.fileExtension)")
        let result = try LoadedCheckpoint(base).graft(smallOptions([1, 2], mode: .residual), to: out)
        let before = try Checkpoints.open(base).readAll()
        let after = try Checkpoints.open(out)
        for name in before.names {
            #expect(try after.tensor(named: name).isBitwiseEqual(to: before[name]!), "\(name) changed")
        }
        #expect(result.created.count == 2 * 9)  // keys, values, query weight + bias, 4 batchnorm tensors, num_batches_tracked
        #expect(result.copiedCount == before.count)
        let names = Set(after.tensorInfos.map(\.name))
        #expect(names.contains("encoder.layer.2.memory.values.weight"))
        #expect(after.provenance?.sourceSHA256 == (try SHA256.hex(ofFile: base)))
        #expect(after.provenance?.operation?.contains("seed 3") == true)
        let config2 = try ModelConfig.decode(json: Data(after.metadata["config"]!.utf8))
        #expect(config2.memory?.layers == [1, 2])
        #expect(config2.memory?.modes == [.residual, .residual])
    }

    @Test("initialisation follows spec §7")
    func initialisation() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let base = try PipelineFixtures.writeCheckpoint(config, to: folder.file("base.safetensors"), format: .safetensors)
        var options = smallOptions([0], mode: .after)
        options.keyCount = 64
        options.keyDimension = 32
        let out = folder.file("g.safetensors")
        _ = try LoadedCheckpoint(base).graft(options, to: out)
        let reader = try Checkpoints.open(out)
        let p = "encoder.layer.0.memory."
        let keys = try reader.tensor(named: p + "keys").floatValues()
        #expect(keys.allSatisfy { abs($0) <= 1 / Float(16).squareRoot() })
        #expect(keys.max()! > 0.2 && keys.min()! < -0.2)
        let values = try reader.tensor(named: p + "values.weight").floatValues()
        let mean = values.reduce(0, +) / Float(values.count)
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(values.count)).squareRoot()
        #expect(abs(std - 1 / Float(16).squareRoot()) < 0.01, "std \(std)")
        #expect(abs(mean) < 0.01)
        let query = try reader.tensor(named: p + "query_proj.query_mlps.0.weight").floatValues()
        #expect(query.allSatisfy { abs($0) <= 0.25 })
        #expect(try reader.tensor(named: p + "query_proj.query_mlps.1.weight").floatValues().allSatisfy { $0 == 1 })
        #expect(try reader.tensor(named: p + "query_proj.query_mlps.1.running_var").floatValues().allSatisfy { $0 == 1 })
        #expect(try reader.tensor(named: p + "query_proj.query_mlps.1.running_mean").floatValues().allSatisfy { $0 == 0 })
        #expect(try reader.tensor(named: p + "query_proj.query_mlps.1.bias").floatValues().allSatisfy { $0 == 0 })
    }

    @Test("the same seed gives the same bytes; another seed does not")
    func determinism() throws {
        let folder = try TemporaryFolder()
        let base = try PipelineFixtures.writeCheckpoint(SyntheticModel.config(), to: folder.file("base.safetensors"), format: .safetensors)
        let a = folder.file("a.safetensors"), b = folder.file("b.safetensors"), c = folder.file("c.safetensors")
        _ = try LoadedCheckpoint(base).graft(smallOptions([1], mode: .residual, seed: 11), to: a)
        _ = try LoadedCheckpoint(base).graft(smallOptions([1], mode: .residual, seed: 11), to: b)
        _ = try LoadedCheckpoint(base).graft(smallOptions([1], mode: .residual, seed: 12), to: c)
        let ra = try Checkpoints.open(a), rb = try Checkpoints.open(b), rc = try Checkpoints.open(c)
        let name = "encoder.layer.1.memory.values.weight"
        #expect(try ra.tensor(named: name).isBitwiseEqual(to: rb.tensor(named: name)))
        #expect(!(try ra.tensor(named: name).isBitwiseEqual(to: rc.tensor(named: name))))
        for info in ra.tensorInfos where info.name.contains("memory") {
            #expect(try ra.tensor(named: info.name).isBitwiseEqual(to: rb.tensor(named: info.name)))
        }
    }

    @Test("zero values in residual or after mode verify against the base reference at 1e-6", arguments: [MemoryMode.residual, .after])
    func zeroValuesKeepBase(mode: MemoryMode) throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let base = try PipelineFixtures.writeCheckpoint(config, to: folder.file("base.h5"), format: .hdf5)
        let reference = folder.file("reference.h5")
        try PipelineFixtures.writeReference(for: base, config: config, to: reference)
        let zero = folder.file("zero.safetensors")
        _ = try LoadedCheckpoint(base).graft(smallOptions([0, 2], mode: mode, valueInit: .zero), to: zero)
        let report = try LoadedCheckpoint(zero).verify(against: LoadedCheckpoint(reference), options: VerifyOptions(atol: 1e-6, rtol: 0))
        #expect(report.passed)
        #expect(report.outputs.map(\.maxAbsoluteDifference).max()! <= 1e-6)
        // Normal values change the outputs.
        let normal = folder.file("normal.safetensors")
        _ = try LoadedCheckpoint(base).graft(smallOptions([0, 2], mode: mode, valueInit: .normal), to: normal)
        let changed = try LoadedCheckpoint(normal).verify(against: LoadedCheckpoint(reference), options: VerifyOptions(atol: 1e-6, rtol: 0))
        #expect(!changed.passed)
    }

    @Test("replace mode drops the layer's feed-forward tensors and runs")
    func replaceRuns() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let base = try PipelineFixtures.writeCheckpoint(config, to: folder.file("base.safetensors"), format: .safetensors)
        let out = folder.file("replace.safetensors")
        let result = try LoadedCheckpoint(base).graft(smallOptions([1], mode: .replace), to: out)
        #expect(Set(result.dropped) == ["encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.intermediate.dense.bias",
                                        "encoder.layer.1.output.dense.weight", "encoder.layer.1.output.dense.bias"])
        let names = Set(try Checkpoints.open(out).tensorInfos.map(\.name))
        #expect(!names.contains("encoder.layer.1.output.dense.weight"))
        #expect(names.contains("encoder.layer.1.output.LayerNorm.weight"))
        let model = try LoadedCheckpoint(out).resolved().makeModel()
        let outputs = try model.forward(try SyntheticModel.inputs(config: config, batch: 1, sequence: 4))
        let finite = outputs.lastHiddenState.allSatisfy { $0.isFinite }
        #expect(finite)
    }


    @Test("out-of-range layers and layers that already have a memory are refused")
    func refusedLayers() throws {
        let folder = try TemporaryFolder()
        let base = try PipelineFixtures.writeCheckpoint(SyntheticModel.config(), to: folder.file("base.safetensors"), format: .safetensors)
        let out = folder.file("out.safetensors")
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(base).graft(smallOptions([3], mode: .residual), to: out) }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        _ = try LoadedCheckpoint(base).graft(smallOptions([1], mode: .residual), to: out)
        let again = folder.file("again.safetensors")
        do {
            _ = try LoadedCheckpoint(out).graft(smallOptions([1], mode: .after), to: again)
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("already has a memory"))
        }
        // A second graft at a new layer with the same hyper-parameters is allowed.
        _ = try LoadedCheckpoint(out).graft(smallOptions([2], mode: .after), to: again)
        let config = try LoadedCheckpoint(again).resolved().config
        #expect(config.memory?.layers == [1, 2])
        #expect(config.memory?.modes == [.residual, .after])
        #expect(folder.contents == ["again.safetensors", "base.safetensors", "out.safetensors"])
    }

    @Test("the seeded generator gives the same values for any split of a tensor into chunks")
    func generatorChunks() {
        let random = GraftRandom(seed: 5)
        let count = 100_003
        let whole = random.normal(name: "x", count: count, std: 0.25)
        let uniformWhole = random.uniform(name: "x", count: count, bound: 0.5)
        // Odd starts and odd lengths exercise the half pairs at both ends of a chunk.
        for cuts in [[0, 1, 2, 3, 517, 65_537, count], [0, 4_096, 50_001, 99_999, count]] {
            var pieces = [Float](repeating: .nan, count: count)
            var uniformPieces = [Float](repeating: .nan, count: count)
            for (start, end) in zip(cuts, cuts.dropFirst()) {
                pieces.withUnsafeMutableBufferPointer { buffer in
                    random.fillNormal(name: "x", std: 0.25, start: start, into: UnsafeMutableBufferPointer(rebasing: buffer[start..<end]))
                }
                uniformPieces.withUnsafeMutableBufferPointer { buffer in
                    random.fillUniform(name: "x", bound: 0.5, start: start, into: UnsafeMutableBufferPointer(rebasing: buffer[start..<end]))
                }
            }
            #expect(pieces == whole)
            #expect(uniformPieces == uniformWhole)
        }
        #expect(random.uniform(name: "x", count: 100, bound: 1) != random.uniform(name: "y", count: 100, bound: 1))
        #expect(GraftRandom(seed: 6).normal(name: "x", count: 100, std: 1) != random.normal(name: "x", count: 100, std: 1))
    }

    @Test("the generator follows its documented algorithm: SplitMix64 counters, Box–Muller, fixed polynomials")
    func generatorAlgorithm() {
        let seed: UInt64 = 42, name = "encoder.layer.4.memory.values.weight"
        let random = GraftRandom(seed: seed)
        func splitmix(_ key: UInt64, _ index: UInt64) -> UInt64 {
            var z = key &+ (index &+ 1) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var fnv: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { fnv = (fnv ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let key = splitmix(seed, fnv)
        #expect(random.key(name: name) == key)
        let count = 20_000, std: Float = 0.036
        let normal = random.normal(name: name, count: count, std: std)
        var worst = 0.0
        for pair in 0..<count / 2 {
            let word = splitmix(key, UInt64(pair))
            let u1 = (Double(word >> 40) + 1) * 0x1p-24, u2 = Double((word >> 8) & 0xFF_FFFF) * 0x1p-24
            let radius = (-2 * Foundation.log(u1)).squareRoot()
            let expected = [radius * cos(2 * Double.pi * u2), radius * sin(2 * Double.pi * u2)]
            for lane in 0..<2 {
                worst = max(worst, abs(Double(normal[2 * pair + lane]) / Double(std) - expected[lane]))
            }
        }
        // float32 polynomials against double libm: a few float32 ulps of values up to 5.8.
        #expect(worst < 4e-6)
        let uniform = random.uniform(name: name, count: 1_000, bound: 0.5)
        for (index, value) in uniform.enumerated() {
            let unit = Float(splitmix(key, UInt64(index)) >> 40) * 0x1p-24
            #expect(value == (unit * 2 - 1) * 0.5)
        }
        // Pinned bytes: grafted checkpoints of a given seed stay the same across releases and CPUs (SSE2 or AVX2).
        #expect(Array(normal.prefix(4)).map(\.bitPattern) == Self.pinnedNormal)
        let sum = normal.reduce(0.0) { $0 + Double($1) }, squares = normal.reduce(0.0) { $0 + Double($1) * Double($1) }
        #expect(abs(sum / Double(count)) < 0.001)
        #expect(abs((squares / Double(count)).squareRoot() / Double(std) - 1) < 0.02)
    }

    /// The first four values of `GraftRandom(seed: 42)` for the values table of layer 4, std 0.036.
    static let pinnedNormal: [UInt32] = [987_142_861, 1_016_870_820, 1_018_568_957, 1_029_356_059]
}
