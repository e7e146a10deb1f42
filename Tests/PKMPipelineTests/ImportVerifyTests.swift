import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

@Suite("Import and verify")
struct ImportVerifyTests {
    @Test("an aliased checkpoint imports to canonical names, keeps unexpected tensors and ignores position_ids")
    func importAliases() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config(memoryLayers: [0, 2], modes: [.after, .replace])
        func legacy(_ name: String) -> String {
            var n = name.replacingOccurrences(of: "LayerNorm.weight", with: "LayerNorm.gamma").replacingOccurrences(of: "LayerNorm.bias", with: "LayerNorm.beta")
            n = n.replacingOccurrences(of: "query_proj.query_mlps.", with: "query_proj.")
            n = n.replacingOccurrences(of: "encoder.layer.0.memory.", with: "memories.0_after.")
            return "module.bert." + n
        }
        let extra = [("cls.predictions.bias", try Tensor(float32: [1, 2, 3], shape: [3])),
                     ("bert.embeddings.position_ids", try Tensor(int64: Array(0..<40), shape: [1, 40]))]
        let source = try PipelineFixtures.writeCheckpoint(config, to: folder.file("legacy.safetensors"), format: .safetensors,
                                                          rename: legacy, extra: extra)
        let out = folder.file("canonical.safetensors")
        let result = try LoadedCheckpoint(source).import(to: out)
        #expect(result.report.missing.isEmpty)
        #expect(result.report.unexpected.map(\.source) == ["cls.predictions.bias"])
        #expect(result.report.ignored.map(\.source) == ["bert.embeddings.position_ids"])
        let reader = try Checkpoints.open(out)
        let expected = PKMBertModel.parameterSpecs(for: config).map(\.name)
        #expect(Array(reader.tensorInfos.map(\.name).prefix(expected.count)) == expected)
        #expect(reader.tensorInfos.last?.name == "cls.predictions.bias")
        let original = try SyntheticModel.stateDict(for: config)
        for name in expected where original[name] != nil {
            #expect(try reader.tensor(named: name).isBitwiseEqual(to: original[name]!), "\(name)")
        }
        // --strict turns the unexpected tensor into an error and writes nothing.
        let strictOut = folder.file("strict.safetensors")
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(source).import(to: strictOut, options: ImportOptions(strict: true)) }
        #expect(!FileManager.default.fileExists(atPath: strictOut.path))
    }

    @Test("missing and mis-shaped tensors are named; nothing is written")
    func mappingErrors() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config(memoryLayers: [1], modes: [.residual])
        let source = try PipelineFixtures.writeCheckpoint(config, to: folder.file("bad.safetensors"), format: .safetensors,
                                                          rename: { $0 == "encoder.layer.1.memory.keys" ? "encoder.layer.1.memory.kees" : $0 })
        let out = folder.file("out.pkmz")
        do {
            _ = try LoadedCheckpoint(source).import(to: out)
            Issue.record("expected an error")
        } catch let PipelineError.mappingFailed(_, problems) {
            #expect(problems.map(\.description).contains("missing tensor 'encoder.layer.1.memory.keys'"))
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        // A config that disagrees with the shapes names the tensor.
        var wrong = config
        wrong.memory?.keyCount = 4
        let configFile = folder.file("wrong.json")
        try wrong.encodedJSON().write(to: configFile)
        let good = try PipelineFixtures.writeCheckpoint(config, to: folder.file("good.safetensors"), format: .safetensors, embedConfig: false)
        do {
            _ = try LoadedCheckpoint(good, options: OpenOptions(configURL: configFile)).import(to: out)
            Issue.record("expected an error")
        } catch let PipelineError.mappingFailed(_, problems) {
            #expect(problems.map(\.description).contains { $0.contains("encoder.layer.1.memory.keys") && $0.contains("[2, 2, 4, 4]") })
        }
    }

    @Test("config lookup order: --config, the file's own, config.json beside it")
    func configLookup() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let bare = try PipelineFixtures.writeCheckpoint(config, to: folder.file("model.safetensors"), format: .safetensors, embedConfig: false)
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(bare).resolved() }
        try config.encodedJSON().write(to: folder.file("config.json"))
        #expect(try LoadedCheckpoint(bare).resolved().report.configSource.hasSuffix("config.json"))
        #expect(try LoadedCheckpoint(folder.url).resolved().report.configSource.hasSuffix("config.json"))
        let embedded = try PipelineFixtures.writeCheckpoint(config, to: folder.file("embedded.h5"), format: .hdf5)
        #expect(try LoadedCheckpoint(embedded).resolved().report.configSource.contains("HDF5 root attribute"))
        let broken = folder.file("broken.json")
        try Data("{\"hidden_size\": 16}".utf8).write(to: broken)
        do {
            _ = try LoadedCheckpoint(embedded, options: OpenOptions(configURL: broken)).resolved()
            Issue.record("expected an error")
        } catch let PipelineError.invalidConfig(source, underlying) {
            #expect(source == broken.path)
            #expect("\(underlying)".contains("vocab_size"))
        }
    }

    @Test("a config.json larger than the header limit is refused before it is read")
    func oversizedConfig() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let bare = try PipelineFixtures.writeCheckpoint(config, to: folder.file("model.safetensors"), format: .safetensors, embedConfig: false)
        // JSON allows trailing whitespace: a valid config made larger than the limit, while the
        // safetensors header (a few KiB) stays under it.
        let json = config.encodedJSON() + Data(repeating: 0x20, count: 100_000)
        try json.write(to: folder.file("config.json"))
        var limits = ReaderLimits()
        limits.maxHeaderBytes = json.count - 1
        do {
            _ = try LoadedCheckpoint(bare, options: OpenOptions(limits: limits)).resolved()
            Issue.record("expected a limit error")
        } catch let FormatError.limitExceeded(path, _, value, maximum) {
            #expect(path.hasSuffix("config.json"))
            #expect(value == json.count && maximum == json.count - 1)
        }
        limits.maxHeaderBytes = json.count
        #expect(try LoadedCheckpoint(bare, options: OpenOptions(limits: limits)).resolved().report.configSource.hasSuffix("config.json"))
    }

    @Test("verify passes on its own outputs and fails on a perturbed weight or reference")
    func verifyDetectsPerturbation() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config(memoryLayers: [1], modes: [.residual])
        let checkpoint = try PipelineFixtures.writeCheckpoint(config, to: folder.file("m.safetensors"), format: .safetensors)
        let reference = folder.file("ref.h5")
        try PipelineFixtures.writeReference(for: checkpoint, config: config, to: reference, atol: 1e-6)
        let report = try LoadedCheckpoint(checkpoint).verify(against: LoadedCheckpoint(reference))
        #expect(report.passed)
        #expect(report.toleranceSource == "reference file attributes")
        #expect(report.outputs.contains { $0.name == "outputs/memory/1/indices" && $0.passed })
        #expect(report.outputs.count == 1 + 1 + 4 + 2)
        // Perturb one weight by 1e-3.
        var dict = try Checkpoints.open(checkpoint).readAll()
        var values = dict["encoder.layer.2.output.dense.weight"]!.floatValues()
        values[5] += 1e-3
        dict.set(try Tensor(float32: values, shape: [16, 32]), named: "encoder.layer.2.output.dense.weight")
        let perturbed = folder.file("p.safetensors")
        try Checkpoints.write(dict, to: perturbed, format: .safetensors)
        let failed = try LoadedCheckpoint(perturbed).verify(against: LoadedCheckpoint(reference))
        #expect(!failed.passed)
        let last = try #require(failed.outputs.first { $0.name == "outputs/last_hidden_state" })
        #expect(!last.passed && last.beyondTolerance > 0)
        #expect(failed.outputs.first { $0.name == "outputs/hidden_states/1" }?.passed == true)
    }

    @Test("index disagreements at tied weights are ties when the model scores the slots alike, not otherwise")
    func tiesAreNotFailures() {
        let tolerance = Tolerance(absolute: 1e-6, relative: 0)
        // Slots 1 and 2 score alike under the model (the boundary tie); 8 does not score like 9.
        let score: (Int, Int, Int64) -> Float? = { _, _, slot in slot == 1 || slot == 2 ? 0.2 : Float(slot) }
        let tied = Compare.indices(name: "i", actual: [3, 5, 9, 1], expected: [5, 3, 9, 2], expectedWeights: [0.3, 0.3, 0.2, 0.2],
                                   shape: [1, 4], heads: 1, tolerance: tolerance, score: score)
        #expect(tied.passed)
        #expect(tied.ties == 3)
        let wrong = Compare.indices(name: "i", actual: [3, 5, 9, 1], expected: [3, 5, 8, 1], expectedWeights: [0.4, 0.3, 0.25, 0.05],
                                    shape: [1, 4], heads: 1, tolerance: tolerance, score: score)
        #expect(!wrong.passed)
        #expect(wrong.worstIndex == [0, 2])
    }

    @Test("tolerance semantics: absolute or relative, NaN and infinities explicit")
    func toleranceSemantics() {
        let t = Tolerance(absolute: 1e-4, relative: 1e-3)
        #expect(t.accepts(1.00005, 1))
        #expect(t.accepts(1000.5, 1000))
        #expect(!t.accepts(1000.5, 999))
        #expect(t.accepts(.nan, .nan))
        #expect(!t.accepts(.nan, 1))
        #expect(t.accepts(.infinity, .infinity))
        #expect(!t.accepts(.infinity, -.infinity))
        let report = Compare.values(name: "x", actual: [1, 2, .nan], expected: [1, 2.5, 3], shape: [3], tolerance: t)
        #expect(report.beyondTolerance == 2)
        #expect(report.worstIndex == [2])
    }

    @Test("verify reports errors for malformed references")
    func malformedReference() throws {
        let folder = try TemporaryFolder()
        let config = SyntheticModel.config()
        let checkpoint = try PipelineFixtures.writeCheckpoint(config, to: folder.file("m.safetensors"), format: .safetensors)
        let noInputs = folder.file("empty.h5")
        try Checkpoints.write(try StateDict([("outputs/last_hidden_state", try Tensor(float32: [0], shape: [1]))]), to: noInputs, format: .hdf5)
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(checkpoint).verify(against: LoadedCheckpoint(noInputs)) }
        let badIds = folder.file("bad.h5")
        try Checkpoints.write(try StateDict([("inputs/input_ids", try Tensor(int64: [1, 999], shape: [1, 2]))]), to: badIds, format: .hdf5)
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(checkpoint).verify(against: LoadedCheckpoint(badIds)) }
    }
}
