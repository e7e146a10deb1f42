import Foundation
@testable import PKMConvertCLI
import PKMPipeline
import Testing

/// The command line's string formats (parsed in the executable; the library takes typed values) and the one
/// table that renders the library's settings as flags.
@Suite("Argument formats and the settings-to-flags table")
struct ArgumentFormatTests {
    @Test("malformed --layers are clear errors naming the flag", arguments: [
        ("1,1", "--layers: layer 1 is listed twice"), ("a,b", "not a comma-separated"), ("", "not a comma-separated"),
        ("-1", "--layers: layer -1 is negative"),
    ])
    func malformedLayers(text: String, message: String) {
        do {
            _ = try ArgumentFormats.layers(text)
            Issue.record("expected an error for '\(text)'")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test("layers parse in order", arguments: [("4,8", [4, 8]), ("0", [0]), (" 2, 1 ", [2, 1])])
    func layers(text: String, expected: [Int]) throws {
        #expect(try ArgumentFormats.layers(text) == expected)
    }

    @Test("sizes parse as Hugging Face's", arguments: [("2GB", 2_000_000_000), ("500MB", 500_000_000), ("40KB", 40_000), ("1KiB", 1024), ("123", 123)])
    func sizes(text: String, bytes: Int) throws {
        #expect(try ArgumentFormats.size(text) == bytes)
    }

    @Test("bad sizes, shapes and id lists name their flag", arguments: ["0", "-2GB", "two", "1.5XB"])
    func badSizes(text: String) {
        #expect(throws: (any Error).self) { try ArgumentFormats.size(text) }
        do { _ = try ArgumentFormats.size(text) } catch { #expect("\(error)".hasPrefix("--max-shard-size: ")) }
    }

    @Test("BATCHxSEQUENCE and token ids")
    func inputs() throws {
        guard case .random(let batch, let sequence, let seed) = try ArgumentFormats.randomInputs("4X24", seed: 3) else {
            Issue.record("not random inputs"); return
        }
        #expect(batch == 4 && sequence == 24 && seed == 3)
        for bad in ["4", "0x3", "4x", "x", "4x-1"] {
            do { _ = try ArgumentFormats.randomInputs(bad, seed: 0); Issue.record("accepted \(bad)") } catch {
                #expect("\(error)".hasPrefix("--random-inputs: '\(bad)' is not BATCHxSEQUENCE"))
            }
        }
        guard case .given(let given) = try ArgumentFormats.tokenIds("101, 7592,102") else { Issue.record("not given ids"); return }
        #expect(given.inputIds == [101, 7592, 102] && given.batchSize == 1)
        #expect(throws: (any Error).self) { try ArgumentFormats.tokenIds("1,,2") }
    }

    @Test("every library setting has a flag, and library errors render with it")
    func settingsRenderAsFlags() {
        for setting in Setting.allCases {
            #expect(ErrorText.flag(for: setting).hasPrefix("--") || ErrorText.flag(for: setting).hasPrefix("`pkm-convert "), "\(setting)")
        }
        let error = PipelineError.configNotFound(checkpoint: "/m.h5", looked: ["the file's embedded config"])
        #expect(ErrorText.render(error).hasSuffix("; pass --config config.json"))
        #expect("\(error)".hasSuffix("; pass OpenOptions.configURL config.json"))
        let layout = PipelineError.invalidSetting(.exportLayout, value: "xlm", reason: "no name for residual memories; export \(setting: .exportLayout, "canonical")")
        #expect(ErrorText.render(layout) == "--export-memory-layout xlm: no name for residual memories; export --export-memory-layout canonical")
        #expect(!"\(layout)".contains("--"))
        let strict = PipelineError.mappingFailed(checkpoint: "/m.h5", problems: [.unexpected("extra.weight")])
        #expect(ErrorText.render(strict).hasSuffix("unexpected tensor 'extra.weight' (--strict)"))
        #expect(!"\(strict)".contains("--"))
    }
}
