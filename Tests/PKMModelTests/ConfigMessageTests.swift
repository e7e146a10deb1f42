import Foundation
import Testing
@testable import PKMModel

/// Issue 18: config errors in JSON's words, with positions, and a stated 0 called invalid, not missing.
@Suite("Config messages")
struct ConfigMessageTests {
    static let base = #""vocab_size":10,"hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8"#

    func message(_ json: String) -> (field: String, text: String)? {
        do {
            _ = try ModelConfig.decode(json: Data(json.utf8))
            return nil
        } catch let error as ModelError {
            guard case .invalidConfig(let field, _) = error else { return nil }
            return (field, error.description)
        } catch {
            return nil
        }
    }

    @Test("text that is not JSON says so with a position, never \"config field '(json)'\"")
    func notJSON() throws {
        let reported = try #require(message("{\"vocab_size\": 10,\n \"hidden_size\": x}"))
        #expect(reported.field == "")
        #expect(!reported.text.contains("(json)"), "\(reported.text)")
        #expect(reported.text.hasPrefix("config: it is not valid JSON"), "\(reported.text)")
        #expect(reported.text.contains("line 2"), "\(reported.text)")
    }

    @Test("a top level that is not an object is named in JSON's words", arguments: [("[1, 2]", "an array"), ("\"x\"", "a string"), ("3", "a number")])
    func notAnObject(json: String, kind: String) throws {
        let reported = try #require(message(json))
        #expect(!reported.text.contains("Dictionary"), "\(reported.text)")
        #expect(reported.text.contains(kind), "\(reported.text)")
    }

    @Test("a field of the wrong type says what was expected and found, without Swift type names")
    func wrongType() throws {
        let pkm = try #require(message("{\(Self.base),\"pkm\":\"yes\"}"))
        #expect(pkm.field == "pkm")
        #expect(pkm.text.contains("expected a JSON object, found a string"), "\(pkm.text)")
        #expect(!pkm.text.contains("Dictionary<"), "\(pkm.text)")
        let size = try #require(message(#"{"vocab_size":"ten","hidden_size":8,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8}"#))
        #expect(size.text.contains("expected an integer"), "\(size.text)")
    }

    @Test("pkm.n_keys: 0 is invalid, not missing; an absent n_keys is still missing", arguments: ["n_keys", "heads", "k_dim", "v_dim"])
    func statedZero(key: String) throws {
        var fields = ["\"layers\":[1]", "\"modes\":[\"residual\"]", "\"knn\":2", "\"n_keys\":4", "\"heads\":1", "\"k_dim\":4", "\"v_dim\":8"]
        fields = fields.map { $0.hasPrefix("\"\(key)\"") ? "\"\(key)\":0" : $0 }
        let stated = try #require(message("{\(Self.base),\"pkm\":{\(fields.joined(separator: ","))}}"))
        #expect(stated.field == "pkm.\(key)")
        #expect(stated.text.contains("is 0"), "\(stated.text)")
        #expect(!stated.text.contains("missing"), "\(stated.text)")
        let absent = try #require(message("{\(Self.base),\"pkm\":{\(fields.filter { !$0.hasPrefix("\"\(key)\"") }.joined(separator: ","))}}"))
        #expect(absent.text.contains("missing"), "\(absent.text)")
    }
}
