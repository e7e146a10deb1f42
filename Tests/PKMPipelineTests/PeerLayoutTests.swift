import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

/// Import of the peer memory layouts (lucidrains, XLM options, Meta): detection, inferred config, refusals.
@Suite("Peer memory layouts")
struct PeerLayoutTests {
    static func fixture(_ name: String) -> URL {
        let folder = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/peers/\(name)")
        let file = (try? FileManager.default.contentsOfDirectory(atPath: folder.path))?.first { $0.hasPrefix("model") } ?? "model.safetensors"
        return folder.appendingPathComponent(file)
    }
    static func reference(_ name: String) -> URL {
        PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/peers/\(name)/reference.h5")
    }

    @Test("layouts are detected and the pkm fields the weights show are filled in")
    func detectionAndInference() throws {
        let lucidrains = try LoadedCheckpoint(Self.fixture("bert_lucidrains_norms")).resolved()
        #expect(lucidrains.report.memoryLayouts == ["0": .lucidrains, "2": .lucidrains])
        let memory = try #require(lucidrains.config.memory)
        #expect(memory.headCount == 2 && memory.keyCount == 16 && memory.keyDimension == 16 && memory.valueDimension == 32)
        #expect(memory.queryNorm == .layernorm && !memory.queryBias && memory.inputNorm && memory.outputNorm)
        #expect(lucidrains.report.mapped.contains { $0.transform == .halfHeadRows && $0.source.hasSuffix("to_queries.weight") })
        #expect(lucidrains.report.unexpected.isEmpty)
        #expect(lucidrains.report.warnings.contains { $0.contains("filled from the memory tensors") && $0.contains("pkm.n_keys") })

        let legacy = try LoadedCheckpoint(Self.fixture("bert_lucidrains_01_batchnorm")).resolved()
        #expect(legacy.report.memoryLayouts == ["2": .lucidrainsBatchNorm])
        #expect(legacy.config.memory?.queryNorm == .batchnorm && legacy.config.memory?.queryBias == false)

        let relu = try LoadedCheckpoint(Self.fixture("roberta_lucidrains_relu")).resolved()
        #expect(relu.config.memory?.scoreActivation == .relu)
        #expect(relu.report.mapped.contains { $0.rules.contains("memory-attribute:mem") })

        let xlm = try #require(try LoadedCheckpoint(Self.fixture("bert_xlm_options_params")).resolved().config.memory)
        #expect(xlm.queryLayerSizes == [24] && xlm.queryNorm == .batchnorm && xlm.queryNormalize == .l2)
        #expect(xlm.temperature == 0.5 && xlm.slotMap == .headPermutations && xlm.sharedValues == 0)

        let modulo = try #require(try LoadedCheckpoint(Self.fixture("bert_xlm_modulo_raw")).resolved().config.memory)
        #expect(modulo.slotMap == .modulo && modulo.moduloSize == 200 && modulo.scoreActivation == .identity)

        let meta = try LoadedCheckpoint(Self.fixture("bert_meta_memory_plus")).resolved()
        #expect(meta.report.memoryLayouts["0"] == .lingua)
        #expect(meta.report.unexpected.isEmpty)
        #expect(meta.sourceName(ofCanonical: "encoder.layer.2.memory.values.weight") == nil)
        let plus = try #require(meta.config.memory)
        #expect(plus.valueProjection == .swiglu && plus.outputGate == .sigmoid && plus.sharedValues == 0 && plus.valueDimension == 24)
    }

    /// Canonical tensors of a fixture with one perturbed, written with the completed config embedded.
    static func perturbed(_ name: String, tensor: String, folder: TemporaryFolder) throws -> URL {
        let checkpoint = try LoadedCheckpoint(fixture(name)).resolved()
        var dict = StateDict(metadata: ["config": String(decoding: checkpoint.config.encodedJSON(), as: UTF8.self)])
        for entry in checkpoint.report.mapped { try dict.insert(try checkpoint.tensor(canonical: entry.canonical), named: entry.canonical) }
        let original = try #require(dict[tensor], "no tensor \(tensor)")
        let values = original.floatValues().map { $0 * 1.02 + 0.01 }
        dict.set(try Tensor(float32: values, shape: original.shape), named: tensor)
        let url = folder.file("perturbed.safetensors")
        try Checkpoints.write(dict, to: url, format: .safetensors)
        return url
    }

    @Test("the canonicalised checkpoint verifies, and a perturbed memory weight fails", arguments: [
        ("bert_lucidrains_residual", "encoder.layer.1.memory.query_norm.weight"),
        ("bert_lucidrains_norms", "encoder.layer.0.memory.input_norm.bias"),
        ("bert_lucidrains_01_batchnorm", "encoder.layer.2.memory.query_proj.query_mlps.1.running_mean"),
        ("bert_lucidrains_norms", "encoder.layer.2.memory.output_norm.weight"),
        ("roberta_lucidrains_relu", "encoder.layer.1.memory.keys"),
        ("bert_xlm_options_params", "encoder.layer.0.memory.query_proj.query_mlps.3.weight"),
        ("bert_xlm_modulo_raw", "encoder.layer.1.memory.values.weight"),
        ("bert_meta_memory_plus", "encoder.layer.2.memory.swilu_projection.weight"),
        ("bert_meta_memory_plus", "encoder.layer.0.memory.gating.bias"),
    ])
    func perturbedWeightFails(name: String, tensor: String) throws {
        let folder = try TemporaryFolder()
        let url = try Self.perturbed(name, tensor: tensor, folder: folder)
        #expect(!(try LoadedCheckpoint(url).verify(against: LoadedCheckpoint(Self.reference(name))).passed))
    }

    /// The lucidrains residual fixture's tensors, renamed or extended, with its config.json beside them.
    static func variant(folder: TemporaryFolder, rename: (String) -> String = { $0 }, extra: [(String, Tensor)] = [],
                        config: ((inout [String: Any]) -> Void)? = nil) throws -> URL {
        let source = try Checkpoints.open(fixture("bert_lucidrains_residual")).readAll()
        var dict = StateDict(metadata: ["format": "pt"])
        for (name, tensor) in source.entries { try dict.insert(tensor, named: rename(name)) }
        for (name, tensor) in extra { try dict.insert(tensor, named: name) }
        let url = folder.file("model.safetensors")
        try Checkpoints.write(dict, to: url, format: .safetensors)
        let configURL = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/peers/bert_lucidrains_residual/config.json")
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config?(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: folder.file("config.json"))
        return url
    }

    @Test("refused memories name the layer and the reason", arguments: [
        ("encoder.layer.1.pkm.maybe_concat_combine.2.weight", [32, 16], "concat_values_and_combine"),
        ("encoder.layer.1.pkm.norm.fn.running_mean", [8], "0.2.x BatchNorm"),
        ("encoder.layer.1.pkm.weight_down_embed", [256, 32], "PEER"),
    ])
    func refusals(name: String, shape: [Int], reason: String) throws {
        let folder = try TemporaryFolder()
        let url = try Self.variant(folder: folder, extra: [(name, try Tensor(zeros: .float32, shape: shape))])
        let error = try #require(throws: PipelineError.self) { try LoadedCheckpoint(url).resolved() }
        #expect(error.description.contains(reason) && error.description.contains("layer 1"), "\(error)")
    }

    @Test("a stated pkm field that disagrees with the weights is a conflict naming the tensor")
    func statedConflict() throws {
        let folder = try TemporaryFolder()
        let url = try Self.variant(folder: folder, config: { object in
            var pkm = object["pkm"] as! [String: Any]
            pkm["n_keys"] = 8
            object["pkm"] = pkm
        })
        let checkpoint = try LoadedCheckpoint(url).resolved()
        let problems = checkpoint.report.problems(strict: false)
        #expect(problems.map(\.description).contains { $0.contains("pkm.n_keys is 8") && $0.contains("encoder.layer.1.pkm.keys") }, "\(problems)")
    }

    @Test("--memory-attribute finds a memory under another name; --memory-layout forces a layout")
    func attributeAndForcedLayout() throws {
        let folder = try TemporaryFolder()
        let url = try Self.variant(folder: folder, rename: { $0.replacingOccurrences(of: ".pkm.", with: ".product_memory.") })
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(url).resolved().makeModel() }
        let found = try LoadedCheckpoint(url, options: OpenOptions(memory: MemoryImportOptions(attribute: "product_memory"))).resolved()
        let model = try found.makeModel()
        #expect(try Verifier.verify(model: model, checkpointName: url.path, reference: Checkpoints.open(Self.reference("bert_lucidrains_residual"))).passed)
        // Forced to read lucidrains keys [H, N, 2, D] as XLM's [H, 2, N, D], the sizes no longer fit.
        #expect(throws: PipelineError.self) {
            try LoadedCheckpoint(Self.fixture("bert_lucidrains_residual"), options: OpenOptions(memory: MemoryImportOptions(layout: .xlm))).resolved().makeModel()
        }
    }

    @Test("layout transforms re-order bytes exactly as the peers' permutes do")
    func transforms() throws {
        // lucidrains to_queries rows (p, h, j), H = 2, D = 2: canonical (h, p, j).
        let rows = try Tensor(float32: (0..<8).map(Float.init), shape: [8])
        #expect(try LayoutTransform.halfHeadRows.apply(to: rows, heads: 2, canonicalShape: [8]).floatValues() == [0, 1, 4, 5, 2, 3, 6, 7])
        // keys [H=1, N=2, 2, D=1] -> [1, 2, 2, 1]: (n, p) -> (p, n).
        let keys = try Tensor(float32: [10, 11, 20, 21], shape: [1, 2, 2, 1])
        #expect(try LayoutTransform.keysSwapKeyHalf.apply(to: keys, heads: 1, canonicalShape: [1, 2, 2, 1]).floatValues() == [10, 20, 11, 21])
        let shared = try Tensor(float32: [1, 2], shape: [1, 2])
        #expect(try LayoutTransform.keysBroadcast.apply(to: shared, heads: 2, canonicalShape: [2, 2, 1, 2]).floatValues() == [1, 2, 1, 2, 1, 2, 1, 2])
    }
}
