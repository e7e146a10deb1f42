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
        let result = try Grafter.run(base: base, destination: out, options: smallOptions([1, 2], mode: .residual))
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
        #expect(after.provenance?.operation?.contains("--seed 3") == true)
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
        _ = try Grafter.run(base: base, destination: out, options: options)
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
        _ = try Grafter.run(base: base, destination: a, options: smallOptions([1], mode: .residual, seed: 11))
        _ = try Grafter.run(base: base, destination: b, options: smallOptions([1], mode: .residual, seed: 11))
        _ = try Grafter.run(base: base, destination: c, options: smallOptions([1], mode: .residual, seed: 12))
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
        _ = try Grafter.run(base: base, destination: zero, options: smallOptions([0, 2], mode: mode, valueInit: .zero))
        let report = try Verifier.run(checkpoint: zero, reference: reference, atol: 1e-6, rtol: 0)
        #expect(report.passed)
        #expect(report.outputs.map(\.maxAbsoluteDifference).max()! <= 1e-6)
        // Normal values change the outputs.
        let normal = folder.file("normal.safetensors")
        _ = try Grafter.run(base: base, destination: normal, options: smallOptions([0, 2], mode: mode, valueInit: .normal))
        let changed = try Verifier.run(checkpoint: normal, reference: reference, atol: 1e-6, rtol: 0)
        #expect(!changed.passed)
    }

    @Test("replace mode drops the layer's feed-forward tensors and runs")
    func replaceRuns() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let base = try PipelineFixtures.writeCheckpoint(config, to: folder.file("base.safetensors"), format: .safetensors)
        let out = folder.file("replace.safetensors")
        let result = try Grafter.run(base: base, destination: out, options: smallOptions([1], mode: .replace))
        #expect(Set(result.dropped) == ["encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.intermediate.dense.bias",
                                        "encoder.layer.1.output.dense.weight", "encoder.layer.1.output.dense.bias"])
        let names = Set(try Checkpoints.open(out).tensorInfos.map(\.name))
        #expect(!names.contains("encoder.layer.1.output.dense.weight"))
        #expect(names.contains("encoder.layer.1.output.LayerNorm.weight"))
        let model = try ResolvedCheckpoint(url: out).makeModel()
        let outputs = try model.forward(try SyntheticModel.inputs(config: config, batch: 1, sequence: 4))
        let finite = outputs.lastHiddenState.allSatisfy { $0.isFinite }
        #expect(finite)
    }

    @Test("invalid requests are clear errors and leave nothing behind", arguments: [
        ("1,1", "listed twice"), ("a,b", "not a comma-separated"), ("", "not a comma-separated"), ("-1", "layer -1 is negative"),
    ])
    func malformedLayers(text: String, message: String) {
        do {
            _ = try GraftOptions.parseLayers(text)
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test("out-of-range layers and layers that already have a memory are refused")
    func refusedLayers() throws {
        let folder = try TemporaryFolder()
        let base = try PipelineFixtures.writeCheckpoint(SyntheticModel.config(), to: folder.file("base.safetensors"), format: .safetensors)
        let out = folder.file("out.safetensors")
        #expect(throws: PipelineError.self) { try Grafter.run(base: base, destination: out, options: smallOptions([3], mode: .residual)) }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        _ = try Grafter.run(base: base, destination: out, options: smallOptions([1], mode: .residual))
        let again = folder.file("again.safetensors")
        do {
            _ = try Grafter.run(base: out, destination: again, options: smallOptions([1], mode: .after))
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("already has a memory"))
        }
        // A second graft at a new layer with the same hyper-parameters is allowed.
        _ = try Grafter.run(base: out, destination: again, options: smallOptions([2], mode: .after))
        let config = try ResolvedCheckpoint(url: again).config
        #expect(config.memory?.layers == [1, 2])
        #expect(config.memory?.modes == [.residual, .after])
        #expect(folder.contents == ["again.safetensors", "base.safetensors", "out.safetensors"])
    }

    @Test("the seeded generator does not depend on thread count or block boundaries")
    func generatorBlocks() {
        let random = GraftRandom(seed: 5)
        let long = random.normal(name: "x", count: GraftRandom.blockSize * 2 + 10, std: 1)
        let short = random.normal(name: "x", count: GraftRandom.blockSize + 3, std: 1)
        #expect(Array(long.prefix(GraftRandom.blockSize)) == Array(short.prefix(GraftRandom.blockSize)))
        #expect(random.uniform(name: "x", count: 100, bound: 1) != random.uniform(name: "y", count: 100, bound: 1))
    }
}
