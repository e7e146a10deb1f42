import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

/// Whole models (issue 19): transformers-made masked-LM, classification, token-classification and QA PKM models
/// verify on their logits; a wrong head fails; a reference output the model cannot produce is reported.
@Suite("Task heads")
struct HeadTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let architecture: String
        var testDescription: String { name }
        var folder: URL { PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/heads/\(name)") }
        var checkpoint: URL { folder.appendingPathComponent("model.safetensors") }
        var reference: URL { folder.appendingPathComponent("reference.h5") }
    }

    /// The cases of fixtures/heads/MANIFEST.json (tools/gen_head_fixtures.py).
    static let cases: [Case] = {
        let manifest = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/heads/MANIFEST.json")
        guard let data = FileManager.default.contents(atPath: manifest.path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let cases = object["cases"] as? [String: [String: Any]] else { return [] }
        return cases.keys.sorted().map { Case(name: $0, architecture: cases[$0]?["architecture"] as? String ?? "") }
    }()

    /// The weights files every case folder holds (the same state dict each time); opened by path, since a folder
    /// holding several resolves to model.safetensors.
    static let weightsFiles = ["model.safetensors", "pytorch_model.bin", "model.h5"]

    /// One weights file of one case.
    struct Weights: CustomTestStringConvertible, Sendable {
        let fixture: Case
        let file: String
        var testDescription: String { "\(fixture.name)/\(file)" }
        var url: URL { fixture.folder.appendingPathComponent(file) }
    }

    /// Every weights file of every case.
    static let weights: [Weights] = cases.flatMap { fixture in weightsFiles.map { Weights(fixture: fixture, file: $0) } }

    @Test("the manifest lists a masked-LM, a classification, a token-classification and a QA model")
    func coverage() {
        let architectures = Set(Self.cases.map(\.architecture))
        #expect(architectures.isSuperset(of: ["BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
                                              "BertForQuestionAnswering", "RobertaForMaskedLM", "RobertaForSequenceClassification"]))
        #expect(Self.cases.contains { $0.name == "bert_mlm_untied_residual" })
        for fixture in Self.cases {
            for file in Self.weightsFiles {
                #expect(FileManager.default.fileExists(atPath: fixture.folder.appendingPathComponent(file).path), "\(fixture.name)/\(file)")
            }
        }
        #expect(Self.weights.count == Self.cases.count * 3)
    }

    @Test("each weights file of each head fixture runs as its architecture and verifies on its logits under strict",
          arguments: weights)
    func verifies(weights: Weights) throws {
        let fixture = weights.fixture
        let checkpoint = try LoadedCheckpoint(weights.url)
        let resolved = try checkpoint.resolved()
        #expect(resolved.report.architecture == fixture.architecture)
        #expect(resolved.report.headSource == "config.json architectures")
        #expect(resolved.report.unexpected.isEmpty, "\(resolved.report.unexpected.map(\.source))")
        let report = try checkpoint.verify(against: LoadedCheckpoint(fixture.reference), options: VerifyOptions(strict: true))
        #expect(report.notProduced.isEmpty)
        Self.expectLogits(report, fixture)
    }

    /// The untied `BertForMaskedLM` fixture: transformers 5 computes its decoder as `nn.Linear` with its own
    /// `cls.predictions.decoder.bias` (distinct from `cls.predictions.bias`, which that forward never reads). Before
    /// `TaskHead` read the decoder's bias, its logits were off by exactly max |decoder.bias − bias| (0.3236 here).
    static let untied = "bert_mlm_untied_residual"

    @Test("an untied decoder adds its own bias; a file that keeps only cls.predictions.bias (transformers 4) uses that")
    func untiedDecoderBias() throws {
        let fixture = try #require(Self.cases.first { $0.name == Self.untied })
        let folder = try TemporaryFolder()
        var dict = try Checkpoints.open(fixture.checkpoint).readAll()
        let decoderBias = try #require(dict["cls.predictions.decoder.bias"])
        #expect(decoderBias.floatValues() != dict["cls.predictions.bias"]!.floatValues())
        // As transformers 4 saves an untied model: the decoder's bias is the head's bias, stored once.
        dict.set(decoderBias, named: "cls.predictions.bias")
        _ = dict.remove("cls.predictions.decoder.bias")
        try Checkpoints.write(dict, to: folder.file("model.safetensors"), format: .safetensors)
        try FileManager.default.copyItem(at: fixture.folder.appendingPathComponent("config.json"), to: folder.file("config.json"))
        let report = try LoadedCheckpoint(folder.file("model.safetensors")).verify(against: LoadedCheckpoint(fixture.reference),
                                                                                   options: VerifyOptions(strict: true))
        #expect(report.passed, "\(report.outputs.filter { !$0.passed }.map(\.name))")
    }

    /// The head outputs of a verified fixture: passed under strict, with the logits' own statistics.
    static func expectLogits(_ report: VerifyReport, _ fixture: Case) {
        #expect(report.passed, "\(report.outputs.filter { !$0.passed }.map(\.name)) \(report.notProduced)")
        let names = Set(report.outputs.map(\.name))
        if fixture.architecture.hasSuffix("QuestionAnswering") {
            #expect(names.isSuperset(of: ["outputs/start_logits", "outputs/end_logits"]))
        } else {
            #expect(names.contains("outputs/logits"))
        }
        let logits = report.outputs.first { $0.name == "outputs/logits" }
        if fixture.architecture.hasSuffix("MaskedLM") {
            // Real tokens only: 3 rows of 9, one padded after 5.
            #expect(logits?.distributionPositions == 23)
            #expect(logits?.top1Agreement == 1)
            #expect((logits?.meanKLDivergence ?? 1) < 1e-8)
            #expect(logits?.shape == [3, 9, 99])
        } else {
            #expect(logits?.top1Agreement == nil)
        }
    }

    @Test("the head is inferred from the tensor names when the config has no architectures", arguments: cases)
    func inferred(fixture: Case) throws {
        let folder = try TemporaryFolder()
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.folder.appendingPathComponent("config.json"))) as? [String: Any])
        object["architectures"] = nil
        object["id2label"] = nil
        object["label2id"] = nil
        try JSONSerialization.data(withJSONObject: object).write(to: folder.file("config.json"))
        try FileManager.default.copyItem(at: fixture.checkpoint, to: folder.file("model.safetensors"))
        let checkpoint = try LoadedCheckpoint(folder.file("model.safetensors"))
        let resolved = try checkpoint.resolved()
        #expect(resolved.report.architecture == fixture.architecture)
        #expect(resolved.report.headSource?.hasPrefix("tensor names") == true)
        let report = try checkpoint.verify(against: LoadedCheckpoint(fixture.reference))
        #expect(report.passed)
    }

    /// The fixture's tensors with `name` changed by `change`, written beside a copy of its config.
    static func perturbed(_ fixture: Case, tensor name: String, in folder: TemporaryFolder,
                          change: (Float) -> Float) throws -> URL {
        var dict = try Checkpoints.open(fixture.checkpoint).readAll()
        let original = try #require(dict[name], "no tensor \(name)")
        dict.set(try Tensor(float32: original.floatValues().map(change), shape: original.shape), named: name)
        try FileManager.default.copyItem(at: fixture.folder.appendingPathComponent("config.json"), to: folder.file("config.json"))
        let url = folder.file("model.safetensors")
        try Checkpoints.write(dict, to: url, format: .safetensors)
        return url
    }

    @Test("a perturbed classifier or QA weight fails on the logits while the encoder's outputs still pass",
          arguments: [("bert_seqcls_residual", "classifier.weight"), ("bert_tokcls_residual", "classifier.bias"),
                      ("bert_qa_residual", "qa_outputs.weight"), ("bert_mlm_residual", "cls.predictions.transform.dense.weight"),
                      ("roberta_seqcls_residual", "classifier.out_proj.weight"), ("roberta_seqcls_residual", "classifier.dense.bias"),
                      ("bert_mlm_untied_residual", "cls.predictions.decoder.weight"), ("bert_mlm_untied_residual", "cls.predictions.decoder.bias")])
    func perturbedHead(name: String, tensor: String) throws {
        let fixture = try #require(Self.cases.first { $0.name == name })
        let folder = try TemporaryFolder()
        let url = try Self.perturbed(fixture, tensor: tensor, in: folder) { $0 * 1.01 + 0.001 }
        let report = try LoadedCheckpoint(url).verify(against: LoadedCheckpoint(fixture.reference))
        #expect(!report.passed)
        let failing = Set(report.outputs.filter { !$0.passed }.map(\.name))
        #expect(!failing.isEmpty)
        #expect(failing.isSubset(of: ["outputs/logits", "outputs/start_logits", "outputs/end_logits"]), "\(failing)")
        #expect(report.outputs.contains { $0.name == "outputs/last_hidden_state" && $0.passed })
    }

    @Test("a tied masked-LM decoder reads the word embeddings: changing them moves the logits beyond tolerance")
    func tiedDecoder() throws {
        let fixture = try #require(Self.cases.first { $0.name == "bert_mlm_residual" })
        let model = try LoadedCheckpoint(fixture.checkpoint).model()
        #expect(model.head?.readsWordEmbeddings == true)
        #expect(try LoadedCheckpoint(fixture.checkpoint).resolved().sourceName(ofCanonical: "cls.predictions.decoder.weight") == nil)
    }

    @Test("an untied masked-LM decoder reads its own weight, not the word embeddings, in every weights file",
          arguments: weightsFiles)
    func untiedDecoder(file: String) throws {
        let fixture = try #require(Self.cases.first { $0.name == "bert_mlm_untied_residual" })
        let url = fixture.folder.appendingPathComponent(file)
        let model = try LoadedCheckpoint(url).model()
        #expect(model.head?.readsWordEmbeddings == false)
        #expect(try LoadedCheckpoint(url).resolved().sourceName(ofCanonical: "cls.predictions.decoder.weight") == "cls.predictions.decoder.weight")
        // The tied fixture's decoder reads the embeddings whichever file holds it.
        let tied = try #require(Self.cases.first { $0.name == "bert_mlm_residual" })
        #expect(try LoadedCheckpoint(tied.folder.appendingPathComponent(file)).model().head?.readsWordEmbeddings == true)
    }

    @Test("logits the bare encoder cannot produce are listed as skipped, and fail under strict")
    func notProduced() throws {
        let folder = try TemporaryFolder()
        let url = try ReferenceFileTests.reference(in: folder) { dict in
            try dict.insert(try Tensor(float32: [Float](repeating: 0.5, count: 3 * 9 * 99), shape: [3, 9, 99]), named: "outputs.logits")
        }
        let lenient = try ReferenceFileTests.verify(url)
        #expect(lenient.passed)
        #expect(lenient.notProduced == ["/outputs/logits"])
        #expect(lenient.skipped.contains("/outputs/logits (not an output this model produces)"))
        let strict = try LoadedCheckpoint(ReferenceFileTests.checkpoint).verify(against: LoadedCheckpoint(url), options: VerifyOptions(strict: true))
        #expect(!strict.passed)
        #expect(!strict.outputs.contains { !$0.passed })
        // Without the extra output, strict passes: it fails only on outputs passed over.
        let clean = try ReferenceFileTests.reference(in: folder, named: "clean.h5") { _ in }
        #expect(try LoadedCheckpoint(ReferenceFileTests.checkpoint).verify(against: LoadedCheckpoint(clean), options: VerifyOptions(strict: true)).passed)
    }

    @Test("run -o writes the head's outputs, and they verify against the fixture's reference", arguments: cases)
    func runWritesLogits(fixture: Case) throws {
        let folder = try TemporaryFolder()
        let out = folder.file("run.h5")
        let checkpoint = try LoadedCheckpoint(fixture.checkpoint)
        _ = try checkpoint.run(.file(fixture.reference), options: RunOptions(outputURL: out))
        let written = try LoadedCheckpoint(out)
        let names = Set(written.reader.tensorInfos.map(\.name))
        let expected = fixture.architecture.hasSuffix("QuestionAnswering") ? ["outputs.start_logits", "outputs.end_logits"] : ["outputs.logits"]
        #expect(names.isSuperset(of: expected), "\(names.sorted())")
        let own = try checkpoint.verify(against: written, options: VerifyOptions(atol: 0, rtol: 0, strict: true))
        #expect(own.passed)
    }
}

/// Grafting and exporting a memory-free `BertForMaskedLM` keeps its head (issue 19, "Done when").
@Suite("Task heads through graft and export")
struct HeadExportTests {
    /// A memory-free masked-LM checkpoint as transformers saves one: encoder under `bert.`, head at the top level, the
    /// tied decoder not saved; config.json beside it.
    static func maskedLM(in folder: TemporaryFolder) throws -> (URL, ModelConfig) {
        var config = SyntheticModel.config()
        config.head = .maskedLM
        config.statedArchitectures = ["BertForMaskedLM"]
        let dict = try SyntheticModel.stateDict(for: config, withPooler: false)
        var saved = StateDict()
        let head = Set(TaskHead.parameterSpecs(config).map(\.name))
        for (name, tensor) in dict.entries where !name.hasPrefix("cls.predictions.decoder.") {
            try saved.insert(tensor, named: head.contains(name) ? name : "bert." + name)
        }
        try config.encodedJSON().write(to: folder.file("config.json"))
        let url = folder.file("model.safetensors")
        try Checkpoints.write(saved, to: url, format: .safetensors)
        return (url, config)
    }

    @Test("a grafted BertForMaskedLM exports as BertForMaskedLM with its head bit-exact, and computes the base's logits")
    func graftExport() throws {
        let folder = try TemporaryFolder()
        let (base, _) = try Self.maskedLM(in: folder)
        #expect(try LoadedCheckpoint(base).resolved().report.architecture == "BertForMaskedLM")
        var options = GraftOptions(layers: [1])
        (options.keyCount, options.headCount, options.knn, options.keyDimension) = (8, 2, 4, 8)
        options.valueInit = .zero
        let grafted = folder.file("grafted.pkmz")
        _ = try LoadedCheckpoint(base).graft(options, to: grafted)
        #expect(try LoadedCheckpoint(grafted).resolved().config.head == .maskedLM)
        let exported = folder.file("export")
        let result = try LoadedCheckpoint(grafted).export(to: exported)
        #expect(result.diagnostics.contains { $0.message.contains("'bert.'") })

        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: exported.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["architectures"] as? [String] == ["BertForMaskedLM"])
        let written = try Checkpoints.open(exported.appendingPathComponent("model.safetensors"))
        let names = Set(written.tensorInfos.map(\.name))
        let source = try Checkpoints.open(base)
        for name in source.tensorInfos.map(\.name) {
            #expect(names.contains(name), "\(name) not exported under its name")
            let before = try source.tensor(named: name), after = try written.tensor(named: name)
            #expect(before.storage == after.storage && before.shape == after.shape && before.dtype == after.dtype, "\(name) changed")
        }
        #expect(names.contains("bert.encoder.layer.1.memory.keys"))
        #expect(!names.contains { $0.hasPrefix("bert.cls.") })

        // Zero-initialised residual values: the exported model's logits are the base model's, bit for bit.
        let inputs = try SyntheticModel.inputs(config: try LoadedCheckpoint(base).resolved().config, batch: 2, sequence: 7, padding: 2)
        let before = try LoadedCheckpoint(base).model().forward(inputs)
        let after = try LoadedCheckpoint(exported).model().forward(inputs)
        let logits = try #require(before.head?.logits)
        #expect(before.head?.logitsShape == [2, 7, 50])
        #expect(after.head?.logits == logits)
    }

    @Test("a bare encoder's export still says BertModel, with no prefix")
    func bareExport() throws {
        let folder = try TemporaryFolder()
        let result = try LoadedCheckpoint(PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_base_plain/model.safetensors"))
            .export(to: folder.file("out"))
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.file("out/config.json"))) as? [String: Any])
        #expect(config["architectures"] as? [String] == ["BertModel"])
        #expect(!result.diagnostics.contains { $0.message.contains("'bert.'") })
        #expect(try Checkpoints.open(folder.file("out/model.safetensors")).tensorInfos.allSatisfy { !$0.name.hasPrefix("bert.") })
    }
}
