import Foundation
import PKMTestSupport
import Testing
@testable import PKMModel
import PKMTensor

/// The `pkm` object's fields are declared once, as data (``MemoryConfig/fields``): the table must cover the schema,
/// round-trip every value, and keep what a config stated out of equality.
@Suite("pkm fields as data")
struct MemoryConfigFieldTests {
    /// Every key the JSON Schema of the `pkm` object lists.
    static func schemaKeys() throws -> Set<String> {
        let url = TestPaths.repositoryRoot.appendingPathComponent("schemas/pkmz-header.schema.json")
        let schema = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let pkm = try #require((schema["$defs"] as? [String: Any])?["pkm"] as? [String: Any])
        return Set(try #require(pkm["properties"] as? [String: Any]).keys)
    }

    @Test("the field table, with layers and modes, writes exactly the schema's keys")
    func coversTheSchema() throws {
        var memory = MemoryConfig(layers: [1], modes: [.residual], valueDimension: 8)
        memory.sharedValues = 1
        memory.slotMap = .modulo
        memory.moduloSize = 64
        let object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(memory)) as? [String: Any])
        #expect(Set(object.keys) == (try Self.schemaKeys()))
        #expect(Set(MemoryConfig.fields.map(\.key)).isSubset(of: try Self.schemaKeys()))
    }

    @Test("non-default values of every field survive encoding and decoding; stated fields are recorded but not compared")
    func roundTrip() throws {
        let json = """
        {"layers": [0, 2], "modes": ["replace", "after"], "n_keys": 16, "heads": 3, "knn": 5, "k_dim": 12, "v_dim": 20,
         "query_norm": "layernorm", "query_bias": false, "bn_eps": 0.001, "norm_eps": 0.0002, "query_layer_sizes": [7],
         "query_normalize": "l2", "input_norm": true, "output_norm": true, "score_activation": "relu", "temperature": 2.5,
         "value_projection": "swiglu", "output_gate": "sigmoid", "shared_values": 0, "slot_map": "modulo", "modulo_size": 9}
        """
        let decoded = try JSONDecoder().decode(MemoryConfig.self, from: Data(json.utf8))
        #expect(decoded.keyCount == 16 && decoded.headCount == 3 && decoded.knn == 5 && decoded.keyDimension == 12)
        #expect(decoded.queryNorm == .layernorm && !decoded.queryBias && decoded.batchNormEpsilon == 0.001)
        #expect(decoded.layerNormEpsilon == 0.0002 && decoded.queryLayerSizes == [7] && decoded.queryNormalize == .l2)
        #expect(decoded.inputNorm && decoded.outputNorm && decoded.scoreActivation == .relu && decoded.temperature == 2.5)
        #expect(decoded.valueProjection == .swiglu && decoded.outputGate == .sigmoid && decoded.sharedValues == 0)
        #expect(decoded.slotMap == .modulo && decoded.moduloSize == 9)
        #expect(decoded.statedFields.isSuperset(of: ["n_keys", "query_norm", "modulo_size"]))
        var again = try JSONDecoder().decode(MemoryConfig.self, from: JSONEncoder().encode(decoded))
        #expect(again == decoded)
        // What was stated is not part of equality; every value is.
        again.statedFields = []
        #expect(again == decoded)
        again.temperature = 1
        #expect(again != decoded)
    }

    @Test("absent sizes are left to the weights (0), absent knobs take the XLM defaults, the legacy query_batchnorm is read")
    func defaults() throws {
        let memory = try JSONDecoder().decode(MemoryConfig.self, from: Data(#"{"layers": [1], "modes": "residual", "knn": 4, "query_batchnorm": false}"#.utf8))
        #expect(memory.keyCount == 0 && memory.headCount == 0 && memory.keyDimension == 0 && memory.valueDimension == 0)
        #expect(memory.queryNorm == .none && memory.statedFields.contains("query_norm") && !memory.statedFields.contains("n_keys"))
        #expect(memory.queryBias && memory.scoreActivation == .softmax && memory.slotMap == .none && memory.modes == [.residual])
        #expect(throws: (any Error).self) { try JSONDecoder().decode(MemoryConfig.self, from: Data(#"{"layers": [1], "modes": "residual"}"#.utf8)) }
        #expect(throws: ModelError.self) {
            try JSONDecoder().decode(MemoryConfig.self, from: Data(#"{"layers": [1], "modes": "residual", "knn": 4, "query_batchnorm": true, "query_norm": "none"}"#.utf8))
        }
    }
}

/// Found by the 16-seed release fuzz run (seed 1, config decoder): Foundation's JSON parser traps (SIGILL) while
/// describing its own error for documents nested past 512 levels. Deep documents are refused before they reach it.
@Suite("Deeply nested JSON never reaches Foundation")
struct DeepJSONTests {
    @Test("a config nested 600 levels deep is a config error with a position, not a trap", arguments: [101, 600, 5000])
    func deepConfig(depth: Int) throws {
        let json = Data(("{\"model_type\": " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}").utf8)
        do {
            _ = try ModelConfig.decode(json: json)
            Issue.record("accepted")
        } catch let ModelError.invalidConfig(field, reason) {
            #expect(field.isEmpty && reason.contains("nested more than 100 levels deep at line 1, column 115 (byte 114)"), "\(reason)")
        }
    }

    @Test("the depth scan ignores brackets inside strings and allows 100 levels")
    func scan() {
        let inString = Data(("{\"a\": \"" + String(repeating: "[", count: 500) + "\"}").utf8)
        #expect(JSONSyntax.depthExceeded(in: inString) == nil)
        let hundred = Data((String(repeating: "[", count: 100) + String(repeating: "]", count: 100)).utf8)
        #expect(JSONSyntax.depthExceeded(in: hundred) == nil)
        #expect(JSONSyntax.depthExceeded(in: Data(("[" + hundred.map { String(UnicodeScalar($0)) }.joined() + "]").utf8)) == 0 + 100)
        let escaped = Data(("[\"\\\"[[[\", " + String(repeating: "[", count: 101)).utf8)
        #expect(JSONSyntax.depthExceeded(in: escaped) != nil)
    }
}
