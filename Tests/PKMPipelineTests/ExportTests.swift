import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

/// `export`: HF model folders, memory layouts, HF sharding.
@Suite("Export to HF model folders")
struct ExportTests {
    static func fixture(_ path: String) -> URL { PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/\(path)") }

    @Test("a canonical export verifies from the folder; config.json keeps the source keys and holds the complete pkm object")
    func canonicalFolder() throws {
        let folder = try TemporaryFolder()
        let out = folder.file("bert")
        let result = try LoadedCheckpoint(Self.fixture("models/bert_residual/model.safetensors")).export(to: out)
        #expect(result.shards == ["model.safetensors"])
        #expect(try LoadedCheckpoint(out).verify(against: LoadedCheckpoint(Self.fixture("models/bert_residual/reference.h5"))).passed)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["architectures"] as? [String] == ["BertModel"] && config["model_type"] as? String == "bert")
        let pkm = try #require(config["pkm"] as? [String: Any])
        #expect(pkm["query_norm"] as? String == "batchnorm" && pkm["n_keys"] as? Int == 16)
        let reader = try Checkpoints.open(out.appendingPathComponent("model.safetensors"))
        #expect(reader.metadata["format"] == "pt" && reader.provenance?.operation?.hasPrefix("export") == true)
    }

    @Test("importing lucidrains names and exporting them back gives the source tensors bit for bit",
          arguments: ["bert_lucidrains_norms", "bert_lucidrains_01_batchnorm"])
    func lucidrainsRoundTrip(name: String) throws {
        let folder = try TemporaryFolder()
        let source = Self.fixture("peers/\(name)/model.safetensors")
        var options = ExportOptions()
        options.layout = .lucidrains
        options.attribute = name == "bert_lucidrains_01_batchnorm" ? "pkm" : "memory"
        _ = try LoadedCheckpoint(source).export(to: folder.file("out"), options: options)
        let original = try Checkpoints.open(source).readAll()
        let exported = try Checkpoints.open(folder.file("out/model.safetensors")).readAll()
        #expect(Set(original.names) == Set(exported.names))
        for name in original.names { #expect(exported[name]?.isBitwiseEqual(to: original[name]!) == true, "\(name)") }
        #expect(try LoadedCheckpoint(folder.file("out")).verify(against: LoadedCheckpoint(Self.fixture("peers/\(name)/reference.h5"))).passed)
    }

    @Test("a memory lucidrains cannot express is refused naming the fields; residual memories have no XLM name")
    func refusedLayouts() throws {
        let folder = try TemporaryFolder()
        var options = ExportOptions()
        options.layout = .lucidrains
        let error = try #require(throws: PipelineError.self) {
            try LoadedCheckpoint(Self.fixture("models/bert_residual/model.safetensors")).export(to: folder.file("a"), options: options)
        }
        #expect(error.description.contains("pkm.query_bias"), "\(error)")
        options.layout = .xlm
        #expect(throws: PipelineError.self) {
            try LoadedCheckpoint(Self.fixture("models/bert_residual/model.safetensors")).export(to: folder.file("b"), options: options)
        }
        // replace/after memories get XLM's names and import back.
        _ = try LoadedCheckpoint(Self.fixture("models/roberta_after/model.safetensors")).export(to: folder.file("c"), options: options)
        let names = try Checkpoints.open(folder.file("c/model.safetensors")).tensorInfos.map(\.name)
        #expect(names.contains { $0.hasPrefix("memories.") && $0.contains("_after.") })
        #expect(try LoadedCheckpoint(folder.file("c")).verify(against: LoadedCheckpoint(Self.fixture("models/roberta_after/reference.h5"))).passed)
    }

    @Test("shards follow huggingface_hub: in order, a tensor above the limit alone, index with weight_map and total_size")
    func sharding() throws {
        let folder = try TemporaryFolder()
        var options = ExportOptions()
        options.maxShardBytes = 20_000
        options.prefix = .bert
        let out = folder.file("sharded")
        let result = try LoadedCheckpoint(Self.fixture("models/bert_base_plain/model.safetensors")).export(to: out, options: options)
        #expect(result.shards.count > 2 && result.shards.first == "model-00001-of-\(String(format: "%05d", result.shards.count)).safetensors")
        let index = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("model.safetensors.index.json"))) as? [String: Any])
        let weightMap = try #require(index["weight_map"] as? [String: String])
        #expect((index["metadata"] as? [String: Any])?["total_size"] as? Int == result.totalBytes)
        // The word embeddings (99 × 32 floats = 12,672 bytes) fit; the limit-exceeding check uses a smaller limit.
        #expect(weightMap.keys.allSatisfy { $0.hasPrefix("bert.") })
        var sizes: [String: Int] = [:]
        for shard in result.shards {
            let reader = try Checkpoints.open(out.appendingPathComponent(shard))
            sizes[shard] = reader.totalBytes
            for info in reader.tensorInfos { #expect(weightMap[info.name] == shard) }
        }
        #expect(sizes.values.allSatisfy { $0 <= 20_000 })
        #expect(try LoadedCheckpoint(out).verify(against: LoadedCheckpoint(Self.fixture("models/bert_base_plain/reference.h5"))).passed)
        // A limit below the largest tensor: that tensor gets a shard of its own, the others keep filling in order.
        options.maxShardBytes = 10_000
        let small = try LoadedCheckpoint(Self.fixture("models/bert_base_plain/model.safetensors")).export(to: folder.file("small"), options: options)
        let first = try Checkpoints.open(folder.file("small").appendingPathComponent(small.shards[0]))
        #expect(first.tensorInfos.map(\.name) == ["bert.embeddings.word_embeddings.weight"])
    }


    @Test("index.json is byte-identical to json.dumps(index, indent=2, sort_keys=True)")
    func indexText() {
        let text = ModelFolder.shardIndexJSON(weightMap: ["b.w": "model-00002-of-00002.safetensors", "a.w": "model-00001-of-00002.safetensors"],
                                      totalSize: 10, totalParameters: 3)
        #expect(text == "{\n  \"metadata\": {\n    \"total_parameters\": 3,\n    \"total_size\": 10\n  },\n  \"weight_map\": {\n    \"a.w\": \"model-00001-of-00002.safetensors\",\n    \"b.w\": \"model-00002-of-00002.safetensors\"\n  }\n}\n")
    }
}
