import Foundation
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMModel

@Suite("PKM-BERT model")
struct ModelTests {
    @Test("config validation names the field", arguments: [
        (#"{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":3,"intermediate_size":16,"max_position_embeddings":8}"#, "num_attention_heads"),
        (#"{"model_type":"gpt2","vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8}"#, "model_type"),
        (#"{"vocab_size":10,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8}"#, "hidden_size"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"hidden_act":"relu"}"#, "hidden_act"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"pkm":{"layers":[1],"modes":["residual"],"n_keys":4,"heads":1,"knn":5,"k_dim":4,"v_dim":8}}"#, "pkm.knn"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"pkm":{"layers":[1],"modes":["residual"],"n_keys":4,"heads":1,"knn":2,"k_dim":5,"v_dim":8}}"#, "pkm.k_dim"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"pkm":{"layers":[1],"modes":["residual"],"n_keys":4,"heads":1,"knn":2,"k_dim":4,"v_dim":6}}"#, "pkm.v_dim"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"pkm":{"layers":[2],"modes":["residual"],"n_keys":4,"heads":1,"knn":2,"k_dim":4,"v_dim":8}}"#, "pkm.layers"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"pkm":{"layers":[1],"modes":["sideways"],"n_keys":4,"heads":1,"knn":2,"k_dim":4,"v_dim":8}}"#, "pkm"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"position_embedding_type":"relative_key"}"#, "position_embedding_type"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"is_decoder":true}"#, "is_decoder"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"add_cross_attention":true}"#, "add_cross_attention"),
        (#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"embedding_size":4}"#, "embedding_size"),
    ])
    func configErrors(json: String, field: String) {
        do {
            _ = try ModelConfig.decode(json: Data(json.utf8))
            Issue.record("expected an error for \(field)")
        } catch let ModelError.invalidConfig(reported, _) {
            #expect(reported.hasPrefix(field), "reported \(reported)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test("config fields at the values the model implements are accepted")
    func mathFieldsAccepted() throws {
        let config = try ModelConfig.decode(json: Data(#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"position_embedding_type":"absolute","is_decoder":false,"add_cross_attention":false,"embedding_size":8,"hidden_act":"gelu"}"#.utf8))
        #expect(config.hiddenSize == 8)
    }

    @Test("a missing or mis-shaped tensor is named")
    func missingAndMisshaped() throws {
        let config = SyntheticModel.config(memoryLayers: [1], modes: [.residual])
        var dict = try SyntheticModel.stateDict(for: config)
        dict.remove("encoder.layer.1.memory.keys")
        let missing = try #require(throws: ModelError.self) { try PKMBertModel(config: config, stateDict: dict) }
        guard case .missingTensor(let name) = missing else { Issue.record("expected missingTensor, got \(missing)"); return }
        #expect(name == "encoder.layer.1.memory.keys")
        dict.set(try Tensor(float32: [Float](repeating: 0, count: 10), shape: [10]), named: "encoder.layer.1.memory.keys")
        let misshaped = try #require(throws: ModelError.self) { try PKMBertModel(config: config, stateDict: dict) }
        guard case .shapeMismatch(let shapeName, let expected, let actual) = misshaped else {
            Issue.record("expected shapeMismatch, got \(misshaped)"); return
        }
        #expect(shapeName == "encoder.layer.1.memory.keys")
        #expect(expected == [2, 2, 8, 4])
        #expect(actual == [10])
    }

    @Test("outputs do not depend on what else is in the batch", arguments: [ModelConfig.ModelType.bert, .roberta])
    func batchIndependence(type: ModelConfig.ModelType) throws {
        let config = SyntheticModel.config(type: type, memoryLayers: [0, 2], modes: [.residual, .after])
        let model = try PKMBertModel(config: config, stateDict: try SyntheticModel.stateDict(for: config))
        let inputs = try SyntheticModel.inputs(config: config, batch: 3, sequence: 6, padding: 2)
        let batched = try model.forward(inputs, collectMemoryTraces: true)
        let d = config.hiddenSize
        for b in 0..<3 {
            let range = (b * 6)..<(b * 6 + 6)
            let single = try ModelInputs(batchSize: 1, sequenceLength: 6, inputIds: Array(inputs.inputIds[range]),
                                         attentionMask: inputs.attentionMask.map { Array($0[range]) },
                                         tokenTypeIds: inputs.tokenTypeIds.map { Array($0[range]) })
            let alone = try model.forward(single, collectMemoryTraces: true)
            let slice = Array(batched.lastHiddenState[(b * 6 * d)..<((b + 1) * 6 * d)])
            let worst = zip(slice, alone.lastHiddenState).map { abs($0 - $1) }.max() ?? 0
            #expect(worst == 0, "sequence \(b) differs by \(worst)")
            let perRow = 6 * 2 * 4
            #expect(Array(batched.memoryTraces[0]!.indices[(b * perRow)..<((b + 1) * perRow)]) == alone.memoryTraces[0]!.indices)
        }
    }

    @Test("padding does not change the real tokens' outputs")
    func paddingMasked() throws {
        let config = SyntheticModel.config(memoryLayers: [1], modes: [.replace])
        let model = try PKMBertModel(config: config, stateDict: try SyntheticModel.stateDict(for: config))
        let short = try ModelInputs(batchSize: 1, sequenceLength: 4, inputIds: [5, 6, 7, 8], attentionMask: [1, 1, 1, 1])
        let padded = try ModelInputs(batchSize: 1, sequenceLength: 6, inputIds: [5, 6, 7, 8, 0, 0], attentionMask: [1, 1, 1, 1, 0, 0])
        let a = try model.forward(short).lastHiddenState
        let b = try model.forward(padded).lastHiddenState
        let worst = zip(a, b.prefix(a.count)).map { abs($0 - $1) }.max() ?? 1
        #expect(worst <= 1e-6)
    }

    @Test("a zero-valued residual or after memory computes exactly the base model", arguments: [MemoryMode.residual, .after])
    func zeroMemoryIsIdentity(mode: MemoryMode) throws {
        let base = SyntheticModel.config()
        let withMemory = SyntheticModel.config(memoryLayers: [1], modes: [mode])
        var dict = try SyntheticModel.stateDict(for: withMemory)
        dict.set(try Tensor(zeros: .float32, shape: [64, 16]), named: "encoder.layer.1.memory.values.weight")
        let inputs = try SyntheticModel.inputs(config: base, batch: 2, sequence: 5, padding: 1)
        let plain = try PKMBertModel(config: base, stateDict: dict).forward(inputs)
        let grafted = try PKMBertModel(config: withMemory, stateDict: dict).forward(inputs)
        #expect(plain.lastHiddenState == grafted.lastHiddenState)
        #expect(plain.poolerOutput == grafted.poolerOutput)
    }

    @Test("non-zero memories change the output in every mode", arguments: MemoryMode.allCases)
    func memoryMatters(mode: MemoryMode) throws {
        let config = SyntheticModel.config(memoryLayers: [1], modes: [mode])
        let dict = try SyntheticModel.stateDict(for: config)
        var zeroed = dict
        zeroed.set(try Tensor(zeros: .float32, shape: [64, 16]), named: "encoder.layer.1.memory.values.weight")
        let inputs = try SyntheticModel.inputs(config: config, batch: 1, sequence: 5)
        let a = try PKMBertModel(config: config, stateDict: dict).forward(inputs).lastHiddenState
        let b = try PKMBertModel(config: config, stateDict: zeroed).forward(inputs).lastHiddenState
        #expect(zip(a, b).map { abs($0 - $1) }.max()! > 1e-3)
    }

    @Test("RoBERTa positions start after the padding index")
    func robertaPositions() throws {
        let config = SyntheticModel.config(type: .roberta)
        let inputs = try ModelInputs(batchSize: 1, sequenceLength: 5, inputIds: [0, 7, 8, 1, 1], attentionMask: [1, 1, 1, 0, 0])
        #expect(Embeddings.positionIds(config, inputs: inputs) == [2, 3, 4, 1, 1])
        #expect(Embeddings.positionIds(SyntheticModel.config(), inputs: inputs) == [0, 1, 2, 3, 4])
    }

    @Test("token ids outside the vocabulary are an input error, not a crash")
    func badTokenIds() throws {
        let config = SyntheticModel.config()
        let model = try PKMBertModel(config: config, stateDict: try SyntheticModel.stateDict(for: config))
        let inputs = try ModelInputs(batchSize: 1, sequenceLength: 2, inputIds: [3, 500])
        #expect(throws: ModelError.self) { try model.forward(inputs) }
        let long = try ModelInputs(batchSize: 1, sequenceLength: 41, inputIds: [Int](repeating: 3, count: 41))
        #expect(throws: ModelError.self) { try model.forward(long) }
    }
}
