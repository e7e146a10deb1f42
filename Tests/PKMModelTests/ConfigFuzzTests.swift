import Foundation
import PKMTestSupport
import Testing
@testable import PKMModel

// Seeded mutation fuzzing of the config decoder (`ModelConfig.decode(json:)`), starting from the
// committed fixtures' config.json files. Every input must finish within a second and end in a
// validated config or a `ModelError.invalidConfig` naming a field; a config that decodes must give a
// parameter table without trapping. PKM_FUZZ_ITERATIONS and PKM_FUZZ_SEED as in FuzzTests.swift;
// RELIABILITY.md records the full run.

private enum ConfigFuzz {
    static var iterations: Int { FuzzEnvironment.iterations(default: 3000) }
    static var seed: UInt64 { FuzzEnvironment.seed }

    static var repositoryRoot: URL { TestPaths.repositoryRoot }

    /// Values a field may be replaced with: wrong types, boundaries, overflowing and non-finite numbers.
    static let replacementTexts = [
        "null", "true", "false", "\"\"", "\"gelu\"", "\"relu\"", "\"roberta\"", "\"bert\"", "\"residual\"", "\"after\"", "\"sideways\"",
        "[]", "{}", "[0]", "[0,0]", "[-1]", "[1024]", "[\"replace\"]", "0", "-1", "1", "2", "3", "7", "16", "1023", "1024", "1025", "4096",
        "65536", "65537", "16777216", "16777217", "67108864", "67108865", "2147483647", "2147483648", "4294967296",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616", "1e400", "-1e400",
        "1e-400", "0.5", "1.0", "1e-12", "1e3", "0.0", "-0.0", "3.4e38",
    ]

    static let bytes: [UInt8] = Array("{}[],:\"\\0123456789-.eE tfn".utf8) + [0x00, 0xFF, 0xC3, 0xA9, 0xED, 0xA0, 0x80]

    /// One mutated config: as a JSON tree (valid JSON, wrong content) or as bytes.
    static func mutate(_ seed: [UInt8], random: inout SplitMix64) -> [UInt8] {
        if random.percent(65), var object = (try? JSONSerialization.jsonObject(with: Data(seed))) as? [String: Any] {
            for _ in 0..<(1 + random.below(3)) { mutateTree(&object, random: &random, depth: 0) }
            return Array(serialize(object).utf8)
        }
        var bytes = seed
        for _ in 0..<(1 + random.below(4)) {
            let position = random.below(bytes.count + 1)
            switch random.below(7) {
            case 0 where position < bytes.count: bytes[position] ^= UInt8(1) << UInt8(random.below(8))
            case 1 where position < bytes.count: bytes[position] = random.pick(Self.bytes)
            case 2 where position < bytes.count: bytes.removeSubrange(position..<min(bytes.count, position + 1 + random.below(16)))
            case 3: bytes.insert(contentsOf: Array(random.pick(replacementTexts).utf8), at: position)
            case 4: bytes.insert(contentsOf: [UInt8](repeating: random.pick(Array("[{".utf8)), count: random.pick([100, 1000, 100_000])), at: position)
            case 5 where position < bytes.count: bytes.removeSubrange(position...)
            default: bytes.insert(random.pick(Self.bytes), at: position)
            }
        }
        return bytes
    }

    private static func mutateTree(_ object: inout [String: Any], random: inout SplitMix64, depth: Int) {
        let keys = object.keys.sorted()
        switch random.below(10) {
        case 0 where !keys.isEmpty:
            object.removeValue(forKey: random.pick(keys))
        case 1:
            object[random.pick(["pkm", "model_type", "hidden_act", "extra", "num_hidden_layers", "vocab_size"])] = RawJSON(random.pick(replacementTexts))
        default:
            guard !keys.isEmpty else { return }
            let key = random.pick(keys)
            if var child = object[key] as? [String: Any], depth < 3, random.percent(70) {
                mutateTree(&child, random: &random, depth: depth + 1)
                object[key] = child
            } else if var array = object[key] as? [Any], !array.isEmpty, random.percent(50) {
                let index = random.below(array.count)
                switch random.below(3) {
                case 0: array.remove(at: index)
                case 1: array.append(array[index])
                default: array[index] = RawJSON(random.pick(replacementTexts))
                }
                object[key] = array
            } else {
                object[key] = RawJSON(random.pick(replacementTexts))
            }
        }
    }

    /// JSON text kept as written (so overflowing and non-finite numbers reach the decoder).
    struct RawJSON {
        let text: String
        init(_ text: String) { self.text = text }
    }

    static func serialize(_ value: Any) -> String {
        switch value {
        case let raw as RawJSON: return raw.text
        case let object as [String: Any]:
            return "{" + object.keys.sorted().map { "\(quoted($0)):\(serialize(object[$0] as Any))" }.joined(separator: ",") + "}"
        case let array as [Any]: return "[" + array.map(serialize).joined(separator: ",") + "]"
        case let text as String: return quoted(text)
        case let number as NSNumber:
            if String(cString: number.objCType) == "c" { return number.boolValue ? "true" : "false" }
            return number.stringValue
        default: return "null"
        }
    }

    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

@Suite("Fuzzing the config decoder")
struct ConfigFuzzTests {
    @Test("mutated config.json files decode to a valid config or throw ModelError.invalidConfig, each within a second")
    func configDecoder() throws {
        let folder = ConfigFuzz.repositoryRoot.appendingPathComponent("fixtures/models")
        let models = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        let seeds = models.compactMap { FileManager.default.contents(atPath: folder.appendingPathComponent("\($0)/config.json").path) }.map { [UInt8]($0) }
        try #require(seeds.count >= 3, "no config.json fixtures found")
        let iterations = ConfigFuzz.iterations
        var accepted = 0, refused = 0, slowest = 0.0, slowestInput = -1
        var failures: [String] = []
        var fields: [String: Int] = [:]
        for input in 0..<iterations {
            var random = SplitMix64(seed: ConfigFuzz.seed ^ (UInt64(input) &* 0x9E37_79B9_7F4A_7C15) ^ 0x4346)
            let bytes = ConfigFuzz.mutate(random.pick(seeds), random: &random)
            let start = ConfigFuzz.now()
            do {
                let config = try ModelConfig.decode(json: Data(bytes))
                accepted += 1
                let specs = PKMBertModel.parameterSpecs(for: config)
                if specs.contains(where: { $0.shape.contains { $0 < 0 } }) {
                    failures.append("input #\(input): a validated config gives a negative dimension: \(String(decoding: bytes, as: UTF8.self))")
                }
            } catch let ModelError.invalidConfig(field, _) {
                refused += 1
                fields[field.isEmpty ? "(document)" : field.split(separator: ".").first.map(String.init) ?? field, default: 0] += 1
            } catch {
                failures.append("input #\(input): threw \(type(of: error)), not ModelError.invalidConfig: \(error)")
            }
            let elapsed = ConfigFuzz.now() - start
            if elapsed > slowest { (slowest, slowestInput) = (elapsed, input) }
            if elapsed > 1 { failures.append("input #\(input) took \(elapsed) s") }
        }
        let kinds = fields.sorted { $0.value > $1.value }.prefix(8).map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("FUZZ config: \(iterations) inputs (seed 0x\(String(ConfigFuzz.seed, radix: 16))), \(accepted) accepted, \(refused) refused with "
              + "ModelError.invalidConfig [by field: \(kinds), …], 0 crashes, \(failures.count) failures, slowest "
              + String(format: "%.2f ms", slowest * 1000) + " (input #\(slowestInput))")
        #expect(failures.isEmpty, "\(failures.prefix(10).joined(separator: "\n"))")
        #expect(accepted > 0 && refused > 0, "the mutations should both break and spare configs")
    }

    @Test("hostile nesting and numbers are refused without trapping", arguments: [
        String(repeating: "[", count: 100_000),
        String(repeating: "{\"a\":", count: 50_000),
        "{\"vocab_size\": 1e400, \"hidden_size\": 32}",
        "{\"vocab_size\": 18446744073709551616}",
        "{\"vocab_size\": 99, \"hidden_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 8, \"layer_norm_eps\": 1e400}",
        "{\"vocab_size\": 99, \"hidden_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 8, \"pkm\": {\"layers\": [0], \"modes\": \"replace\", \"n_keys\": 9223372036854775807, \"heads\": 1, \"knn\": 1, \"k_dim\": 2, \"v_dim\": 32}}",
    ])
    func hostile(json: String) {
        #expect(throws: ModelError.self) { try ModelConfig.decode(json: Data(json.utf8)) }
    }
}
