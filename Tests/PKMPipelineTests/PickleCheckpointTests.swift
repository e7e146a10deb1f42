import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

/// `torch.save` checkpoints everywhere a checkpoint is accepted: files, HF folders, sharded indexes,
/// XLM training checkpoints; every one verifies against PyTorch's outputs.
@Suite("PyTorch pickle checkpoints in the pipelines")
struct PickleCheckpointTests {
    static func fixture(_ path: String) -> URL { PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/\(path)") }

    @Test("zip and legacy pytorch_model.bin, a sharded .bin folder and an HF folder verify against PyTorch",
          arguments: ["bert_residual_torch/pytorch_model.bin", "bert_residual_torch/legacy.pt", "bert_residual_torch_sharded",
                      "bert_residual_torch_sharded/pytorch_model.bin.index.json"])
    func verifies(path: String) throws {
        let url = Self.fixture(path)
        let reference = Self.fixture(path.split(separator: "/")[0] + "/reference.h5")
        let report = try LoadedCheckpoint(url).verify(against: LoadedCheckpoint(reference))
        #expect(report.passed, "\(report.outputs.filter { !$0.passed }.map(\.name))")
        #expect(try Checkpoints.open(url).format == .pytorch)
    }

    @Test("an HF folder holding only pytorch_model.bin (and training state) opens it")
    func folderWithTrainingState() throws {
        let folder = try TemporaryFolder(prefix: "pkm-pickle-folder")
        for name in ["pytorch_model.bin", "config.json"] {
            try FileManager.default.copyItem(at: Self.fixture("bert_residual_torch/\(name)"), to: folder.file(name))
        }
        try Data("not a model".utf8).write(to: folder.file("training_args.bin"))
        try Data("not a model".utf8).write(to: folder.file("rng_state_0.pth"))
        #expect(try Checkpoints.checkpointFile(inFolder: folder.url).lastPathComponent == "pytorch_model.bin")
        // safetensors is preferred when both are present.
        try FileManager.default.copyItem(at: Self.fixture("bert_residual/model.safetensors"), to: folder.file("model.safetensors"))
        #expect(try Checkpoints.checkpointFile(inFolder: folder.url).lastPathComponent == "model.safetensors")
        // A folder with no weights says what it holds.
        let empty = try TemporaryFolder(prefix: "pkm-pickle-empty")
        try Data("{}".utf8).write(to: empty.file("config.json"))
        let error = try #require(throws: FormatError.self) { try Checkpoints.checkpointFile(inFolder: empty.url) }
        #expect(error.description.contains("no model weights") && error.description.contains("config.json"), "\(error)")
    }

    @Test("pickles convert bit-exactly to safetensors (same names, dtypes, bytes as the safetensors PyTorch wrote)",
          arguments: ["bert_residual_torch/pytorch_model.bin", "bert_residual_torch/legacy.pt", "bert_residual_torch_sharded"])
    func convertsBitExactly(path: String) throws {
        let folder = try TemporaryFolder(prefix: "pkm-pickle-convert")
        let out = folder.file("out.safetensors")
        _ = try LoadedCheckpoint(Self.fixture(path)).convert(to: out)
        let converted = try Checkpoints.open(out), original = try Checkpoints.open(Self.fixture("bert_residual/model.safetensors"))
        #expect(Set(converted.tensorInfos.map(\.name)) == Set(original.tensorInfos.map(\.name)))
        for info in original.tensorInfos {
            #expect(try converted.tensor(named: info.name).isBitwiseEqual(to: original.tensor(named: info.name)), "\(info.name)")
        }
    }

    @Test("an XLM training checkpoint's params fill the config's memory fields, and it verifies")
    func xlmParams() throws {
        let url = Self.fixture("bert_xlm_params/model.pth")
        let checkpoint = try LoadedCheckpoint(url).resolved()
        let memory = try #require(checkpoint.config.memory)
        #expect(memory.layers == [0] && memory.modes == [.replace])
        #expect(memory.keyCount == 16 && memory.headCount == 2 && memory.knn == 4 && memory.keyDimension == 16)
        #expect(memory.queryBatchNorm && memory.queryBias)
        let note = try #require(checkpoint.report.warnings.first { $0.contains("XLM params") })
        #expect(note.contains("pkm.n_keys") && note.contains("pkm.layers"), "\(note)")
        #expect(try LoadedCheckpoint(url).verify(against: LoadedCheckpoint(Self.fixture("bert_xlm_params/reference.h5"))).passed)
        // The state dict key can be forced; a wrong one is an error listing the keys.
        let error = try #require(throws: FormatError.self) { try Checkpoints.open(url, options: ReadOptions(stateDictKey: "epoch")) }
        #expect(error.description.contains("'model'") && error.description.contains("'params'"), "\(error)")
    }

    @Test("a grafted pickle: graft reads pytorch_model.bin and writes pkmz, base tensors bit-exact")
    func graftFromPickle() throws {
        let folder = try TemporaryFolder(prefix: "pkm-pickle-graft")
        let out = folder.file("g.pkmz")
        // The same hyper-parameters as the checkpoint's own memory at layer 1 (one config describes all).
        var options = GraftOptions(layers: [2])
        options.keyCount = 16; options.headCount = 2; options.knn = 4; options.keyDimension = 16
        let base = Self.fixture("bert_residual_torch/pytorch_model.bin")
        _ = try LoadedCheckpoint(base).graft(options, to: out)
        let grafted = try LoadedCheckpoint(out).resolved()
        #expect(grafted.config.memory?.layers.sorted() == [1, 2])
        let source = try LoadedCheckpoint(base).resolved()
        for mapped in source.report.mapped {
            #expect(try grafted.tensor(canonical: mapped.canonical).isBitwiseEqual(to: source.tensor(canonical: mapped.canonical)), "\(mapped.canonical)")
        }
    }
}
