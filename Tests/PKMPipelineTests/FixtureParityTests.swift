import Foundation
import PKMCheckpoints
import PKMTestSupport
import PKMFormats
import PKMModel
import PKMTensor
import Testing
@testable import PKMPipeline

/// Every PyTorch-made fixture in fixtures/models verifies, from every checkpoint file and after import to pkmz.
@Suite("PyTorch fixture parity")
struct FixtureParityTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let checkpoint: String
        /// `fixtures/models` (tools/gen_model_fixtures.py) or `fixtures/peers` (tools/gen_peer_fixtures.py).
        var root = "fixtures/models"
        var testDescription: String { "\(name)/\(checkpoint)" }
        var folder: URL { PipelineFixtures.repositoryRoot.appendingPathComponent("\(root)/\(name)") }
        var checkpointURL: URL { folder.appendingPathComponent(checkpoint) }
        var referenceURL: URL { folder.appendingPathComponent("reference.h5") }
    }

    /// Cases and checkpoint files, read from fixtures/models/MANIFEST.json and fixtures/peers/MANIFEST.json.
    static let cases: [Case] = cases(in: "fixtures/models") + cases(in: "fixtures/peers")

    static func cases(in root: String) -> [Case] {
        let manifest = PipelineFixtures.repositoryRoot.appendingPathComponent("\(root)/MANIFEST.json")
        guard let data = FileManager.default.contents(atPath: manifest.path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let cases = object["cases"] as? [String: Any] else { return [] }
        var result: [Case] = []
        for (name, value) in cases.sorted(by: { $0.key < $1.key }) {
            guard let files = (value as? [String: Any])?["files"] as? [String: Any] else { continue }
            for file in files.keys.sorted() where file.hasPrefix("model") {
                result.append(Case(name: name, checkpoint: file, root: root))
            }
        }
        return result
    }

    @Test("the manifest lists every case and checkpoint kind")
    func manifestCoverage() {
        let names = Set(Self.cases.map(\.name))
        #expect(names.isSuperset(of: ["bert_residual", "bert_replace_nested", "roberta_after", "bert_two_memories_f16", "xlm_aliases", "bert_base_plain"]))
        #expect(names.isSuperset(of: ["bert_lucidrains_residual", "bert_lucidrains_norms", "roberta_lucidrains_relu", "bert_xlm_options_params",
                                      "bert_xlm_modulo_raw", "bert_meta_memory_plus", "bert_lucidrains_01_batchnorm"]))
        #expect(Self.cases.contains { $0.checkpoint.hasSuffix(".safetensors") })
        #expect(Self.cases.contains { $0.checkpoint.hasSuffix(".h5") })
    }

    @Test("each fixture checkpoint verifies against PyTorch", arguments: cases)
    func verifies(fixture: Case) throws {
        let report = try LoadedCheckpoint(fixture.checkpointURL).verify(against: LoadedCheckpoint(fixture.referenceURL))
        #expect(report.passed, "\(report.outputs.filter { !$0.passed }.map(\.name))")
        #expect(report.toleranceSource == "reference file attributes")
        // Every hidden state was compared, and memory outputs where the model has memories.
        let model = try LoadedCheckpoint(fixture.checkpointURL).resolved().config
        #expect(report.outputs.filter { $0.name.hasPrefix("outputs/hidden_states/") }.count == model.layerCount + 1)
        let memoryOutputs = report.outputs.filter { $0.name.hasPrefix("outputs/memory/") }.count
        #expect(memoryOutputs == 2 * (model.memory?.layers.count ?? 0))
        #expect(report.outputs.allSatisfy { $0.kind == "indices" || $0.maxAbsoluteDifference < 2e-5 })
    }

    @Test("each fixture imports to pkmz and still verifies", arguments: cases)
    func importThenVerify(fixture: Case) throws {
        let folder = try TemporaryFolder()
        let out = folder.file("model.pkmz")
        let result = try LoadedCheckpoint(fixture.checkpointURL).import(to: out)
        #expect(result.report.missing.isEmpty)
        let report = try LoadedCheckpoint(out).verify(against: LoadedCheckpoint(fixture.referenceURL))
        #expect(report.passed)
        // Round trip through the other formats keeps every tensor identical.
        let viaSafetensors = folder.file("m.safetensors"), viaHDF5 = folder.file("m.h5"), back = folder.file("back.pkmz")
        _ = try LoadedCheckpoint(out).convert(to: viaSafetensors)
        _ = try LoadedCheckpoint(viaSafetensors).convert(to: viaHDF5)
        _ = try LoadedCheckpoint(viaHDF5).convert(to: back)
        let original = try Checkpoints.open(out).readAll(), final = try Checkpoints.open(back).readAll()
        #expect(original.names == final.names)
        for name in original.names { #expect(final[name]!.isBitwiseEqual(to: original[name]!), "\(name)") }
        #expect(try LoadedCheckpoint(back).verify(against: LoadedCheckpoint(fixture.referenceURL)).passed)
    }

    @Test("the alias fixture maps XLM names and the RoBERTa fixture reports its unused tensors")
    func importReports() throws {
        let aliases = try LoadedCheckpoint(PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/xlm_aliases/model.h5")).resolved()
        #expect(aliases.report.mapped.contains { $0.rules.contains("xlm-memory-in") })
        #expect(aliases.report.mapped.contains { $0.rules.contains("xlm-memory-after") })
        #expect(aliases.report.mapped.contains { $0.rules.contains("replace-layer-norm") })
        #expect(aliases.report.unexpected.isEmpty)
        let roberta = try LoadedCheckpoint(PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/roberta_after/model.safetensors")).resolved()
        #expect(roberta.report.ignored.map(\.source) == ["roberta.embeddings.position_ids"])
        #expect(Set(roberta.report.unexpected.map(\.source)).isSuperset(of: ["lm_head.dense.weight", "lm_head.bias"]))
        #expect(throws: PipelineError.self) { try roberta.requireUsable(strict: true) }
    }

    @Test("a perturbed reference fails verification with the worst element located")
    func perturbedReferenceFails() throws {
        let fixture = Case(name: "bert_residual", checkpoint: "model.h5")
        let folder = try TemporaryFolder()
        var reference = try Checkpoints.open(fixture.referenceURL).readAll()
        var scores = reference["outputs.memory.1.scores"]!.floatValues()
        scores[7] += 1e-3
        reference.set(try Tensor(float32: scores, shape: reference["outputs.memory.1.scores"]!.shape), named: "outputs.memory.1.scores")
        var indices = reference["outputs.memory.1.indices"]!.int64Values()
        indices[12] = (indices[12] + 1) % 256
        reference.set(try Tensor(int64: indices, shape: reference["outputs.memory.1.indices"]!.shape), named: "outputs.memory.1.indices")
        // Rewrite with slashes so the file has the spec §5 groups.
        var slashed = StateDict(metadata: reference.metadata)
        for (name, tensor) in reference.entries { try slashed.insert(tensor, named: name.replacingOccurrences(of: ".", with: "/")) }
        let perturbed = folder.file("perturbed.h5")
        try Checkpoints.write(slashed, to: perturbed, format: .hdf5)
        let report = try LoadedCheckpoint(fixture.checkpointURL).verify(against: LoadedCheckpoint(perturbed))
        #expect(!report.passed)
        let scoreReport = try #require(report.outputs.first { $0.name == "outputs/memory/1/scores" })
        #expect(scoreReport.beyondTolerance == 1)
        #expect(scoreReport.worstIndex == [0, 0, 1, 3])
        let indexReport = try #require(report.outputs.first { $0.name == "outputs/memory/1/indices" })
        #expect(indexReport.beyondTolerance == 1)
        #expect(report.outputs.first { $0.name == "outputs/last_hidden_state" }?.passed == true)
    }

    @Test("a perturbed weight fails verification", arguments: ["encoder.layer.1.memory.query_proj.query_mlps.1.running_var", "embeddings.LayerNorm.weight"])
    func perturbedWeightFails(weight: String) throws {
        let fixture = Case(name: "bert_residual", checkpoint: "model.safetensors")
        let folder = try TemporaryFolder()
        let checkpoint = try LoadedCheckpoint(fixture.checkpointURL).resolved()
        var dict = StateDict(metadata: checkpoint.reader.metadata)
        for entry in checkpoint.report.mapped { try dict.insert(try checkpoint.tensor(canonical: entry.canonical), named: entry.canonical) }
        var values = dict[weight]!.floatValues()
        values[3] *= 1.01
        dict.set(try Tensor(float32: values, shape: dict[weight]!.shape), named: weight)
        let perturbed = folder.file("perturbed.safetensors")
        try Checkpoints.write(dict, to: perturbed, format: .safetensors)
        #expect(!(try LoadedCheckpoint(perturbed).verify(against: LoadedCheckpoint(fixture.referenceURL)).passed))
    }

    static var realModel: URL { PipelineFixtures.repositoryRoot.appendingPathComponent(".real-model/all-MiniLM-L6-v2") }
    static var realModelPresent: Bool {
        FileManager.default.fileExists(atPath: realModel.appendingPathComponent("model.safetensors").path)
    }

    @Test("the real all-MiniLM-L6-v2 BERT verifies against transformers within 1e-4",
          .enabled(if: realModelPresent, "real model absent: run `python3 tools/real_bert_parity.py` to install it into .real-model/"))
    func realModelParity() throws {
        let reference = PipelineFixtures.repositoryRoot.appendingPathComponent(".real-model/all-MiniLM-L6-v2.reference.h5")
        let report = try LoadedCheckpoint(Self.realModel).verify(against: LoadedCheckpoint(reference), options: VerifyOptions(atol: 1e-4, rtol: 1e-4))
        #expect(report.passed)
        #expect(report.outputs.count == 1 + 1 + 7)
        let checkpoint = try LoadedCheckpoint(Self.realModel).resolved()
        #expect(checkpoint.report.ignored.map(\.source) == ["embeddings.position_ids"])
    }
}
