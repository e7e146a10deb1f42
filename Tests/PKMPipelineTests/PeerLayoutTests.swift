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

/// The registry and the layout values themselves: detection order, leaf tables against the model's parameter specs,
/// and export followed by import giving back every canonical name and byte.
@Suite("Peer layout values")
struct PeerLayoutValueTests {
    typealias M = ParameterNames.Memory
    /// H = 3 (so that the row re-ordering is not its own inverse), N = 4, K = 8 (D = 4), d = V = 16.
    static let (heads, keyCount, keyDimension, width) = (3, 4, 8, 16)

    /// A memory as each library stores it (names and shapes written from `/work/shared/spec/peer-layouts.md`), and
    /// the config it stands for.
    static func sample(_ layout: DetectedMemoryLayout) -> (leaves: PeerLayout.Leaves, memory: MemoryConfig) {
        let (h, n, k, d) = (heads, keyCount, keyDimension, width)
        var memory = MemoryConfig(layers: [1], modes: [.replace], keyCount: n, headCount: h, keyDimension: k, valueDimension: d)
        var leaves: PeerLayout.Leaves = ["values.weight": [n * n, d]]
        switch layout {
        case .lucidrains:
            memory.queryNorm = .layernorm; memory.queryBias = false; memory.inputNorm = true; memory.outputNorm = true
            leaves.merge(["to_queries.weight": [h * k, d], "norm.weight": [k / 2], "norm.bias": [k / 2], "keys": [h, n, 2, k / 2],
                          "pre_layernorm.weight": [d], "pre_layernorm.bias": [d], "output_norm.weight": [d], "output_norm.bias": [d]]) { $1 }
        case .lucidrainsBatchNorm:
            memory.queryNorm = .batchnorm; memory.queryBias = false
            leaves.merge(["to_queries.weight": [h * k, d], "norm.fn.weight": [h * k], "norm.fn.bias": [h * k], "norm.fn.running_mean": [h * k],
                          "norm.fn.running_var": [h * k], "norm.fn.num_batches_tracked": [], "keys": [h, n, 2, k / 2]]) { $1 }
        case .lingua:
            memory.queryNorm = .none; memory.valueProjection = .swiglu; memory.outputGate = .sigmoid
            leaves.merge(["keys": [2 * h * n, k / 2], "query_proj.query_mlps.0.weight": [h * k, d], "query_proj.query_mlps.0.bias": [h * k],
                          "swilu_projection.weight": [d, d], "swilu_projection.bias": [d], "value_proj.weight": [d, d], "value_proj.bias": [d],
                          "gating.weight": [1, d], "gating.bias": [1]]) { $1 }
        case .xlm:
            leaves.merge(["keys": [n, k / 2], "query_proj.query_mlps.0.weight": [h * k, d], "query_proj.query_mlps.0.bias": [h * k],
                          "query_proj.query_mlps.1.weight": [h * k], "query_proj.query_mlps.1.bias": [h * k],
                          "query_proj.query_mlps.1.running_mean": [h * k], "query_proj.query_mlps.1.running_var": [h * k],
                          "query_proj.query_mlps.1.num_batches_tracked": []]) { $1 }
        }
        return (leaves, memory)
    }

    static func specs(_ memory: MemoryConfig) -> [String: [Int]] {
        Dictionary(uniqueKeysWithValues: ProductKeyMemory.parameterSpecs(prefix: "", config: memory, inputWidth: width).map { ($0.name, $0.shape) })
    }

    @Test("the registry holds one value per detected layout, in detection order: lucidrains, its 0.1 BatchNorm, Meta, then XLM")
    func registry() {
        #expect(MemoryLayouts.detectionOrder.map(\.id) == [.lucidrains, .lucidrainsBatchNorm, .lingua, .xlm])
        #expect(Set(MemoryLayouts.detectionOrder.map(\.id)) == Set(DetectedMemoryLayout.allCases))
        #expect(Set(MemoryLayouts.detectionOrder.map(\.library)) == Set(MemoryLayoutChoice.allCases).subtracting([.auto]))
    }

    @Test("each library's memory is detected as its layout and its leaves map onto exactly the model's parameters",
          arguments: DetectedMemoryLayout.allCases)
    func leavesMapOntoSpecs(id: DetectedMemoryLayout) throws {
        let (leaves, memory) = Self.sample(id)
        let layout = try MemoryLayouts.detect(layer: 1, leaves: leaves, choice: .auto)
        #expect(layout.id == id)
        #expect(layout.heads(leaves) == Self.heads)
        var mapped: [String: [Int]] = [:]
        for (leaf, shape) in leaves {
            let rule = layout.importRule(leaf: leaf, shape: shape)
            let canonicalShape = try #require(MemoryLayouts.canonicalShape(shape, transform: rule?.transform, heads: Self.heads), "\(leaf)")
            #expect(mapped.updateValue(canonicalShape, forKey: rule?.canonical ?? leaf) == nil, "two leaves map to \(rule?.canonical ?? leaf)")
        }
        #expect(mapped == Self.specs(memory))
        // Every rule of the table names a real parameter of a memory of this kind (none is dead or misspelt).
        for rule in layout.leafRules { #expect(Self.specs(memory)[rule.canonical] != nil, "\(rule.canonical)") }
    }

    @Test("--memory-layout chooses among its library's layouts only; auto asks them in registry order")
    func choiceAndOrder() throws {
        let lucidrains = Self.sample(.lucidrains).leaves
        // lucidrains names win over Meta's Memory+ names (lucidrains is asked first).
        var mixed = lucidrains
        mixed["swilu_projection.weight"] = [16, 16]
        #expect(try MemoryLayouts.detect(layer: 0, leaves: mixed, choice: .auto).id == .lucidrains)
        #expect(try MemoryLayouts.detect(layer: 0, leaves: mixed, choice: .lingua).id == .lingua)
        #expect(try MemoryLayouts.detect(layer: 0, leaves: lucidrains, choice: .xlm).id == .xlm)
        // Meta's keys without its projections: [2·H·N, D] is Meta's; with N² rows of values, [N, D] is XLM's.
        var bare = Self.sample(.lingua).leaves
        for name in ["swilu_projection.weight", "value_proj.weight", "gating.weight"] { bare[name] = nil }
        #expect(try MemoryLayouts.detect(layer: 0, leaves: bare, choice: .auto).id == .lingua)
        bare["keys"] = [Self.keyCount, Self.keyDimension / 2]
        #expect(try MemoryLayouts.detect(layer: 0, leaves: bare, choice: .auto).id == .xlm)
        // 0.2.x's own BatchNorm ([D] statistics): refused when lucidrains is detected or forced, not otherwise.
        var broken = lucidrains
        broken["norm.fn.running_mean"] = [Self.keyDimension / 2]
        for choice in [MemoryLayoutChoice.auto, .lucidrains] {
            let error = try #require(throws: PipelineError.self) { try MemoryLayouts.detect(layer: 3, leaves: broken, choice: choice) }
            #expect(error.description.contains("0.2.x BatchNorm") && error.description.contains("layer 3"), "\(error)")
        }
        broken["to_queries.weight"] = nil
        #expect(try MemoryLayouts.detect(layer: 3, leaves: broken, choice: .auto).id == .xlm)
        #expect(throws: PipelineError.self) { try MemoryLayouts.detect(layer: 3, leaves: broken, choice: .lucidrains) }
    }

    @Test("a PEER module is named as PEER although it holds norm.gamma, EvoNorm's leaf")
    func refusalOrder() throws {
        let peer: PeerLayout.Leaves = ["norm.gamma": [16], "to_queries.0.weight": [16, 16], "keys": [2, 4, 2, 4], "weight_down_embed.weight": [64, 16]]
        let error = try #require(throws: PipelineError.self) { try MemoryLayouts.detect(layer: 0, leaves: peer, choice: .auto) }
        #expect(error.description.contains("PEER"), "\(error)")
        var evoNorm = peer
        evoNorm["weight_down_embed.weight"] = nil
        let evo = try #require(throws: PipelineError.self) { try MemoryLayouts.detect(layer: 0, leaves: evoNorm, choice: .auto) }
        #expect(evo.description.contains("EvoNorm"), "\(evo)")
    }

    @Test("every exported layout's leaves come back through import: same canonical names, same bytes", arguments: [
        (DetectedMemoryLayout.lucidrains, ExportMemoryLayout.lucidrains, MemoryMode.replace),
        (.lucidrainsBatchNorm, .lucidrains, .residual),
        (.xlm, .xlm, .replace),
        (.xlm, .xlm, .after),
    ])
    func exportRoundTrip(id: DetectedMemoryLayout, choice: ExportMemoryLayout, mode: MemoryMode) throws {
        var memory = Self.sample(id).memory
        memory.modes = [mode]
        let layout = try #require(MemoryLayouts.exportLayout(choice, memory: memory))
        #expect(layout.id == id)
        if choice == .lucidrains { #expect(Exporter.lucidrainsIncompatibilities(memory, hiddenSize: Self.width).isEmpty) }
        var options = ExportOptions()
        options.layout = choice
        options.attribute = "pkm"
        var exported: PeerLayout.Leaves = [:], tensors: [String: (canonical: String, tensor: Tensor, original: Tensor)] = [:]
        for (leaf, shape) in Self.specs(memory) {
            let count = try #require(ShapeMath.elementCount(shape))
            let canonical = try Tensor(float32: (0..<count).map { Float($0) + 0.5 }, shape: shape)
            let (name, transform) = try Exporter.memoryName(layer: 1, leaf: leaf, mode: mode, memory: memory, options: options)
            let shapeOut = try #require(MemoryLayouts.canonicalShape(shape, transform: transform, heads: Self.heads))
            let tensor = try transform.map { try $0.apply(to: canonical, heads: Self.heads, canonicalShape: shapeOut) } ?? canonical
            // The exported name is found again as layer 1's memory by import's name mapping.
            let mapped = KeyMapping.canonicalName(for: name)
            if choice == .xlm { #expect(mapped.impliedMemoryMode?.layer == 1 && mapped.impliedMemoryMode?.mode == mode) }
            let (layer, sourceLeaf) = try #require(ResolvedCheckpoint.memoryLeaf(of: mapped.canonical), "\(name)")
            #expect(layer == 1)
            #expect(exported.updateValue(shapeOut, forKey: sourceLeaf) == nil, "two leaves export as \(sourceLeaf)")
            tensors[sourceLeaf] = (leaf, tensor, canonical)
            if transform != nil { #expect(tensor.storage != canonical.storage, "\(leaf) was not re-ordered") }
        }
        let detected = try MemoryLayouts.detect(layer: 1, leaves: exported, choice: .auto)
        #expect(detected.id == id)
        for (sourceLeaf, (leaf, tensor, original)) in tensors {
            let rule = detected.importRule(leaf: sourceLeaf, shape: tensor.shape)
            #expect((rule?.canonical ?? sourceLeaf) == leaf)
            let shape = try #require(MemoryLayouts.canonicalShape(tensor.shape, transform: rule?.transform, heads: Self.heads))
            let back = try rule?.transform.map { try $0.apply(to: tensor, heads: Self.heads, canonicalShape: shape) } ?? tensor
            #expect(back.shape == original.shape && back.storage == original.storage, "\(leaf) came back as \(back.shape), other bytes")
        }
    }

    @Test("residual memories have no XLM name; lingua is not exported")
    func unexportable() throws {
        var memory = Self.sample(.xlm).memory
        memory.modes = [.residual]
        var options = ExportOptions()
        options.layout = .xlm
        let error = try #require(throws: PipelineError.self) {
            try Exporter.memoryName(layer: 1, leaf: M.keys, mode: .residual, memory: memory, options: options)
        }
        guard case .invalidSetting(.exportLayout, "xlm", _) = error else { Issue.record("\(error)"); return }
        #expect(error.description.contains("ExportOptions.layout xlm") && error.description.contains("residual"), "\(error)")
        #expect(PeerLayout.lingua.export == nil)
        #expect(!MemoryLayouts.detectionOrder.contains { $0.export?.choice == .canonical })
    }
}

