import Foundation
import PKMTestSupport
import PKMFormats
import Testing

/// Runs the built `pkm-convert` binary: exit codes, one-line errors, JSON output.
@Suite("pkm-convert CLI")
struct CLITests {
    struct Outcome {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static var repositoryRoot: URL { TestPaths.repositoryRoot }

    static var binary: URL? { TestPaths.cli }

    static func run(_ arguments: [String], executable: String = "pkm-convert") throws -> Outcome {
        let process = Process()
        let tool = try #require(binary, "pkm-convert binary not found next to the tests")
        process.executableURL = tool.deletingLastPathComponent().appendingPathComponent(executable)
        process.arguments = arguments
        process.currentDirectoryURL = repositoryRoot
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    func temporaryFolder() throws -> URL { try TestPaths.newFolder(prefix: "pkm-cli") }

    @Test("outputs are bit-identical on one core and on all cores (run -o, then verify --atol 0 --rtol 0 under taskset)",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") && ProcessInfo.processInfo.activeProcessorCount > 1,
                   "needs /usr/bin/taskset and more than one core"))
    func threadCountIndependence() throws {
        let taskset = "/usr/bin/taskset"
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        for fixture in ["bert_two_memories_f16", "roberta_after"] {
            let model = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(Self.repositoryRoot.path)/fixtures/models/\(fixture)")
                .first { $0.hasPrefix("model.") }, "no model file in \(fixture)")
            let checkpoint = "fixtures/models/\(fixture)/\(model)"
            let allCores = folder.appendingPathComponent("\(fixture)-all-cores.h5").path
            let run = try Self.run(["run", checkpoint, "--inputs", "fixtures/models/\(fixture)/reference.h5", "-o", allCores])
            #expect(run.status == 0, "\(run.stderr)")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: taskset)
            process.arguments = ["-c", "0", try #require(Self.binary).path, "verify", checkpoint, "--reference", allCores,
                                 "--atol", "0", "--rtol", "0"]
            process.currentDirectoryURL = Self.repositoryRoot
            let out = Pipe()
            process.standardOutput = out
            process.standardError = out
            try process.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(fixture): one core differs from all cores:\n\(text)")
        }
    }

    @Test("verify exits 0 on a matching reference and prints JSON with --json")
    func verifyPasses() throws {
        let outcome = try Self.run(["verify", "fixtures/models/bert_residual/model.h5", "--reference", "fixtures/models/bert_residual/reference.h5", "--json"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any])
        #expect(object["passed"] as? Bool == true)
        let outputs = object["outputs"] as? [[String: Any]]
        #expect(outputs?.count == 8)
    }

    @Test("verify exits 1 when an output is beyond tolerance")
    func verifyFails() throws {
        let outcome = try Self.run(["verify", "fixtures/models/bert_residual/model.h5", "--reference", "fixtures/models/bert_residual/reference.h5",
                                    "--atol", "0", "--rtol", "0"])
        #expect(outcome.status == 1)
        #expect(outcome.stdout.contains("FAIL"))
    }

    @Test("errors exit 2 with one line naming the file", arguments: [
        ["verify", "fixtures/models/bert_residual/model.h5", "--reference", "fixtures/models/does-not-exist.h5"],
        ["inspect", "fixtures/hdf5/MANIFEST.json"],
        ["convert", "fixtures/safetensors/all_dtypes.safetensors", "-o", "/nonexistent-folder/x.pkmz"],
        ["import", "fixtures/models/bert_replace_nested/model.h5", "-o", "/tmp/x.unknown-extension"],
    ])
    func errorsExitTwo(arguments: [String]) throws {
        let outcome = try Self.run(arguments)
        #expect(outcome.status == 2)
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(outcome.stderr)")
        #expect(lines.first?.hasPrefix("pkm-convert: error: ") == true)
    }

    @Test("import, inspect --json and convert work end to end; --strict refuses unexpected tensors")
    func importInspectConvert() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let pkmz = folder.appendingPathComponent("m.pkmz").path
        let imported = try Self.run(["import", "fixtures/models/roberta_after/model.safetensors", "-o", pkmz, "--json"])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stderr.contains("unexpected tensor 'lm_head.bias'"))
        let strict = try Self.run(["import", "fixtures/models/roberta_after/model.safetensors", "-o", folder.appendingPathComponent("s.pkmz").path, "--strict"])
        #expect(strict.status == 2)
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("s.pkmz").path))
        let inspected = try Self.run(["inspect", pkmz, "--json", "--verify-data"])
        #expect(inspected.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as? [String: Any])
        #expect(object["format"] as? String == "pkmz")
        let provenance = object["provenance"] as? [String: Any]
        let sourceFile = provenance?["source_file"] as? String
        #expect(sourceFile == "model.safetensors")
        let h5 = folder.appendingPathComponent("m.h5").path
        #expect(try Self.run(["convert", pkmz, "-o", h5, "--dtype", "f16"]).status == 0)
        let again = try Self.run(["verify", h5, "--reference", "fixtures/models/roberta_after/reference.h5", "--atol", "5e-2", "--rtol", "5e-2"])
        #expect(again.status == 0, "\(again.stdout)")
    }

    @Test("graft then usage, with --json")
    func graftAndUsage() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let out = folder.appendingPathComponent("g.pkmz").path
        let graft = try Self.run(["graft", "fixtures/models/bert_base_plain", "-o", out, "--layers", "1", "--mode", "residual",
                                  "--n-keys", "16", "--heads", "2", "--knn", "4", "--k-dim", "16", "--json"])
        #expect(graft.status == 0, "\(graft.stderr)")
        let usage = try Self.run(["usage", out, "--inputs", "fixtures/models/bert_base_plain/reference.h5", "--json"])
        #expect(usage.status == 0, "\(usage.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(usage.stdout.utf8)) as? [String: Any])
        let layers = try #require(object["layers"] as? [[String: Any]])
        #expect(layers.count == 1)
        let usagePercent = layers[0]["usagePercent"] as? Double ?? 0
        #expect(usagePercent > 0)
        let bad = try Self.run(["graft", "fixtures/models/bert_base_plain", "-o", folder.appendingPathComponent("bad.pkmz").path, "--layers", "9"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("out of range"))
    }

    @Test("the scripting example runs its whole pipeline and exits 0")
    func scriptingExample() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let outcome = try Self.run(["fixtures/models/bert_base_plain", folder.path], executable: "pkm-script-example")
        #expect(outcome.status == 0, "\(outcome.stdout)\(outcome.stderr)")
        #expect(outcome.stdout.contains("verify grafted (zero values) against the base model's outputs at atol 1e-6: PASS, max |Δ| 0"))
    }

    @Test("convert and graft into a folder path write an HF model folder (export)")
    func folderDestinations() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = "fixtures/peers/bert_lucidrains_residual/model.safetensors"
        let converted = folder.appendingPathComponent("converted").path
        let convert = try Self.run(["convert", source, "-o", converted, "--export-memory-layout", "lucidrains", "--export-memory-attribute", "pkm"])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(FileManager.default.fileExists(atPath: converted + "/config.json") && FileManager.default.fileExists(atPath: converted + "/model.safetensors"))
        let verify = try Self.run(["verify", converted, "--reference", "fixtures/peers/bert_lucidrains_residual/reference.h5"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let grafted = folder.appendingPathComponent("grafted").path
        let graft = try Self.run(["graft", "fixtures/models/bert_base_plain/model.safetensors", "-o", grafted, "--layers", "1", "--n-keys", "16",
                                  "--heads", "2", "--knn", "4", "--k-dim", "16", "--query-norm", "layernorm", "--no-query-bias",
                                  "--export-memory-layout", "lucidrains", "--export-memory-attribute", "pkm", "--max-shard-size", "60KB"])
        #expect(graft.status == 0, "\(graft.stderr)")
        #expect(FileManager.default.fileExists(atPath: grafted + "/model.safetensors.index.json"))
        let inspect = try Self.run(["inspect", grafted])
        #expect(inspect.status == 0 && inspect.stdout.contains("layer 1: lucidrains"), "\(inspect.stdout)\(inspect.stderr)")
    }
}
