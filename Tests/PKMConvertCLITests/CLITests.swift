import Foundation
import PKMTestSupport
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
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

    static func run(_ arguments: [String], executable: String = "pkm-convert", environment: [String: String]? = nil) throws -> Outcome {
        let process = Process()
        let tool = try #require(binary, "pkm-convert binary not found next to the tests")
        process.executableURL = tool.deletingLastPathComponent().appendingPathComponent(executable)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
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

    @Test("on a CPU with AVX2 or AVX-512 the CLI never runs OpenBLAS's SSE3 fallback kernels",
          .enabled(if: BLASKernels.preferredCoreType(cpuFlags: BLASKernels.cpuFlags) != nil, "the CPU has neither AVX2+FMA nor AVX-512"))
    func blasKernels() throws {
        let outcome = try Self.run(["run", "fixtures/models/bert_residual", "--input-ids", "2,5,7"], environment: ["OPENBLAS_VERBOSE": "2"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        // OpenBLAS prints its choice when it loads: the last one is the kernels the run used.
        let cores = (outcome.stdout + "\n" + outcome.stderr).split(separator: "\n").filter { $0.hasPrefix("Core: ") }.map { String($0.dropFirst(6)) }
        let used = try #require(cores.last, "OPENBLAS_VERBOSE printed no core: \(outcome.stdout.prefix(300))")
        #expect(!BLASKernels.fallbacks.contains(used), "ran on \(used) (cores printed: \(cores))")
        // The user's choice is kept.
        let chosen = try Self.run(["run", "fixtures/models/bert_residual", "--input-ids", "2,5,7"],
                                  environment: ["OPENBLAS_VERBOSE": "2", "OPENBLAS_CORETYPE": "Prescott"])
        #expect((chosen.stdout + "\n" + chosen.stderr).split(separator: "\n").filter { $0.hasPrefix("Core: ") } == ["Core: Prescott"])
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

    @Test("verify of a masked-LM model reports top-1 agreement and KL; --strict fails on logits the encoder alone cannot produce")
    func verifyHeads() throws {
        let mlm = try Self.run(["verify", "fixtures/heads/bert_mlm_residual/model.safetensors", "--reference", "fixtures/heads/bert_mlm_residual/reference.h5"])
        #expect(mlm.status == 0, "\(mlm.stderr)")
        #expect(mlm.stdout.contains("ok   outputs/logits"), "\(mlm.stdout)")
        #expect(mlm.stdout.contains("top-1 agreement 100.00 % of 23 tokens"), "\(mlm.stdout)")
        // The same weights run as the bare encoder (config says BertModel): the head's tensors are unused, the logits skipped.
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = Self.repositoryRoot.appendingPathComponent("fixtures/heads/bert_mlm_residual")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any])
        config["architectures"] = ["BertModel"]
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: folder.appendingPathComponent("model.safetensors"))
        let arguments = ["verify", folder.appendingPathComponent("model.safetensors").path, "--reference", source.appendingPathComponent("reference.h5").path]
        let lenient = try Self.run(arguments)
        #expect(lenient.status == 0, "\(lenient.stdout)\(lenient.stderr)")
        #expect(lenient.stdout.contains("skip /outputs/logits (not an output this model produces)"), "\(lenient.stdout)")
        let strict = try Self.run(arguments + ["--strict", "--json"])
        #expect(strict.status == 1, "\(strict.stdout)\(strict.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(strict.stdout.utf8)) as? [String: Any])
        #expect(object["notProduced"] as? [String] == ["/outputs/logits"])
        #expect(object["passed"] as? Bool == false)
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

    // MARK: Issue 13: messages, exit codes and output people and scripts can use

    @Test("argument errors exit 2 with the real reason; --help and --version exit 0", arguments: [
        (["graft"], "Missing expected argument '<base>'"),
        (["graft", "fixtures/models/bert_base_plain", "-o", "/tmp/pkm-cli-never.pkmz", "--layers", "-1"], "--layers: layer -1 is negative"),
        (["convert", "fixtures/models/bert_residual/model.h5", "-o", "/tmp/pkm-cli-never.pkmz", "--level", "99"], "--level must be between 1 and 22"),
        (["imprt", "a", "-o", "x"], "unknown subcommand 'imprt'; did you mean 'import'?"),
        (["graft", "fixtures/models/bert_base_plain", "-o", "/tmp/pkm-cli-never.pkmz", "--layers", "1", "--knn", "32", "--n-keys", "16"],
         "--knn 32 exceeds --n-keys 16"),
        (["run", "fixtures/models/bert_base_plain", "--random-inputs", "1x600"], "sequence length 600 exceeds max_position_embeddings 40"),
        (["verify", "fixtures/models/bert_residual/model.h5", "--reference", "fixtures/models/bert_residual/model.h5"],
         "this is a checkpoint (64 tensors of model weights), not a reference or inputs file"),
        (["convert", "fixtures/safetensors/all_dtypes.safetensors", "-o", "/nonexistent-folder/x.pkmz"],
         "the folder /nonexistent-folder does not exist; create it first"),
        (["import", "fixtures/models/bert_replace_nested/model.h5", "-o", "/tmp/x.unknown-extension"], "or pass --to hdf5|safetensors|pkmz"),
    ] as [([String], String)])
    func argumentErrorsExitTwo(arguments: [String], message: String) throws {
        let outcome = try Self.run(arguments)
        #expect(outcome.status == 2, "\(arguments): \(outcome.stderr)")
        #expect(outcome.stderr.hasPrefix("pkm-convert: error: "), "\(outcome.stderr)")
        #expect(outcome.stderr.contains(message), "\(arguments): \(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/pkm-cli-never.pkmz"))
        for clean in [["--help"], ["--version"], ["graft", "--help"]] {
            #expect(try Self.run(clean).status == 0, "\(clean)")
        }
    }

    @Test("files that are not what their extension says are named as such")
    func notTheFormatItsNameSays() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let text = Data("hello world, this is a text file\n".utf8)
        let expectations = [
            ("x.safetensors", "not a safetensors file: its first 8 bytes declare a header of 8031924123371070824 bytes but the file has 33"),
            ("x.pkmz", "expected the pkmz magic"),
            ("x.h5", "expected the HDF5 signature"),
        ]
        for (name, message) in expectations {
            let url = folder.appendingPathComponent(name)
            try text.write(to: url)
            let outcome = try Self.run(["inspect", url.path, "--hdf5-probe", "off"])
            #expect(outcome.status == 2)
            #expect(outcome.stderr.contains(message), "\(name): \(outcome.stderr)")
            #expect(!outcome.stderr.contains("--max-header-bytes"), "\(name): \(outcome.stderr)")
        }
        // A plausible header above the limit still names the limit and its flag.
        let limited = try Self.run(["inspect", "fixtures/safetensors/all_dtypes.safetensors", "--max-header-bytes", "16"])
        #expect(limited.status == 2)
        #expect(limited.stderr.contains("raise it with --max-header-bytes"), "\(limited.stderr)")
    }

    @Test("inspect prints a summary by default, the table with --tensors, and JSON objects for config and provenance")
    func inspectSummary() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let summary = try Self.run(["inspect", "fixtures/models/bert_residual/model.h5"])
        #expect(summary.status == 0, "\(summary.stderr)")
        let lines = summary.stdout.split(separator: "\n")
        #expect(lines.count < 15, "\(summary.stdout)")
        #expect(summary.stdout.contains("64 tensors"))
        #expect(summary.stdout.contains("parameters: 41,152 (embeddings 4,576, encoder 25,632, memories 9,888, other 1,056)"), "\(summary.stdout)")
        #expect(summary.stdout.contains("dtypes: float32 63 tensors, 160.75 KiB; int64 1 tensor, 8 B"), "\(summary.stdout)")
        #expect(summary.stdout.contains("config: bert, 3 layers, hidden 32"), "\(summary.stdout)")
        #expect(!summary.stdout.contains("encoder.layer.0.attention"))
        let table = try Self.run(["inspect", "fixtures/models/bert_residual/model.h5", "--tensors"])
        #expect(table.stdout.split(separator: "\n").count > 64)
        // An HF folder shows its config.json.
        let hf = try Self.run(["inspect", "fixtures/models/bert_base_plain"])
        #expect(hf.stdout.contains("config: bert, 3 layers") && hf.stdout.contains("config.json"), "\(hf.stdout)")
        // JSON: config and pkm_source_provenance as objects, dtypes spelled as in the text.
        let pkmz = folder.appendingPathComponent("m.pkmz").path, safetensors = folder.appendingPathComponent("m.safetensors").path
        #expect(try Self.run(["import", "fixtures/models/bert_residual/model.h5", "-o", pkmz]).status == 0)
        #expect(try Self.run(["convert", pkmz, "-o", safetensors]).status == 0)
        let json = try Self.run(["inspect", safetensors, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((object["config"] as? [String: Any])?["hidden_size"] as? Int == 32)
        let metadata = try #require(object["metadata"] as? [String: Any])
        #expect((metadata["pkm_source_provenance"] as? [String: Any])?["source_file"] as? String == "model.h5", "\(metadata)")
        let tensors = try #require(object["tensors"] as? [[String: Any]])
        #expect(tensors.allSatisfy { ["float32", "int64"].contains($0["dtype"] as? String ?? "") }, "\(tensors.prefix(2))")
        #expect((object["parameters"] as? [String: Any])?["total"] as? Int == 41_152)
    }

    @Test("convert of an HF folder carries its config.json into h5, safetensors and pkmz, every key kept")
    func convertCarriesConfig() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        for ext in ["h5", "safetensors", "pkmz"] {
            let out = folder.appendingPathComponent("c.\(ext)").path
            let converted = try Self.run(["convert", "fixtures/models/bert_base_plain", "-o", out])
            #expect(converted.status == 0, "\(converted.stderr)")
            #expect(converted.stderr.contains("config embedded from"), "\(converted.stderr)")
            let json = try Self.run(["inspect", out, "--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            let config = try #require(object["config"] as? [String: Any], "\(ext): \(json.stdout.prefix(300))")
            #expect(config["architectures"] as? [String] == ["BertModel"], "\(ext)")
            #expect(config["hidden_dropout_prob"] as? Double == 0.1, "\(ext)")
            // The copied weights verify from the single file, with no config.json beside it.
            let verified = try Self.run(["verify", out, "--reference", "fixtures/models/bert_base_plain/reference.h5"])
            #expect(verified.status == 0, "\(ext): \(verified.stdout)\(verified.stderr)")
        }
    }

    @Test("the grafting walkthrough runs with pkm-convert alone: run --random-inputs --seed makes the base outputs")
    func graftWalkthroughWithoutPython() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let base = "fixtures/models/bert_base_plain"
        let reference = folder.appendingPathComponent("base.h5").path, again = folder.appendingPathComponent("again.h5").path
        #expect(try Self.run(["run", base, "--random-inputs", "4x24", "--seed", "7", "-o", reference]).status == 0)
        #expect(try Self.run(["run", base, "--random-inputs", "4x24", "--seed", "7", "-o", again]).status == 0)
        // Same seed, same ids and outputs; the file is a reference for verify.
        let same = try Self.run(["verify", base, "--reference", again, "--atol", "0", "--rtol", "0"])
        #expect(same.status == 0, "\(same.stdout)\(same.stderr)")
        let ids = try Self.run(["run", base, "--random-inputs", "64x24", "--seed", "1", "--json"])
        #expect(ids.status == 0, "\(ids.stderr)")
        let zero = folder.appendingPathComponent("zero.pkmz").path
        let graft = try Self.run(["graft", base, "-o", zero, "--layers", "1", "--n-keys", "16", "--heads", "2", "--knn", "4", "--k-dim", "16",
                                  "--value-init", "zero", "--seed", "1"])
        #expect(graft.status == 0, "\(graft.stderr)")
        // One summary note instead of one note per created tensor.
        #expect(graft.stderr.split(separator: "\n").count == 1, "\(graft.stderr)")
        #expect(graft.stderr.contains("created 9 memory tensors at layer 1"), "\(graft.stderr)")
        let verbose = try Self.run(["graft", base, "-o", folder.appendingPathComponent("v.pkmz").path, "--layers", "1", "--n-keys", "16",
                                    "--heads", "2", "--knn", "4", "--k-dim", "16", "--verbose"])
        #expect(verbose.stderr.split(separator: "\n").count == 9, "\(verbose.stderr)")
        let verified = try Self.run(["verify", zero, "--reference", reference, "--atol", "1e-6", "--rtol", "0"])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        for inputs in [["--inputs", reference], ["--random-inputs", "8x24", "--seed", "2"], ["--input-ids", "5,6,7,8"]] {
            let usage = try Self.run(["usage", zero, "--json"] + inputs)
            #expect(usage.status == 0, "\(inputs): \(usage.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(usage.stdout.utf8)) as? [String: Any])
            #expect((object["layers"] as? [[String: Any]])?.count == 1)
        }
        let none = try Self.run(["usage", zero])
        #expect(none.status == 2)
        #expect(none.stderr.contains("give exactly one of --inputs, --input-ids, --random-inputs"))
    }

    @Test("verify of a bf16/f16 checkpoint says its storage precision and shows the outcome at matching tolerances")
    func narrowStoragePrecision() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let reference = "fixtures/models/bert_base_plain/reference.h5"
        for (dtype, name, flags) in [("bf16", "bfloat16", "--atol 0.05 --rtol 0.05"), ("f16", "float16", "--atol 0.01 --rtol 0.01")] {
            let out = folder.appendingPathComponent("m-\(dtype).pkmz").path
            let converted = try Self.run(["convert", "fixtures/models/bert_base_plain", "-o", out, "--dtype", dtype])
            #expect(converted.status == 0, "\(converted.stderr)")
            let text = try Self.run(["verify", out, "--reference", reference])
            #expect(text.status == 1, "\(text.stdout)")
            #expect(text.stdout.contains("note: the checkpoint stores \(name) weights"), "\(text.stdout)")
            #expect(text.stdout.contains("with \(flags) (suggested for \(name)): PASS"), "\(text.stdout)")
            let json = try Self.run(["verify", out, "--reference", reference, "--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            #expect(object["storagePrecision"] as? String == name)
            #expect((object["withSuggestedTolerance"] as? [String: Any])?["passed"] as? Bool == true)
        }
        let full = try Self.run(["verify", "fixtures/models/bert_base_plain", "--reference", reference, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(full.stdout.utf8)) as? [String: Any])
        #expect(object["storagePrecision"] == nil)
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

    @Test("text in and diff out, as a user runs them: tokenize, run --text, usage --text-file --plot, diff exit codes and JSON")
    func textAndDiff() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // A tiny PKM-BERT with MiniLM's vocabulary and tokenizer in an HF folder.
        var config = SyntheticModel.config(memoryLayers: [1], modes: [.residual])
        config.vocabSize = 30_522
        config.maxPositionEmbeddings = 64
        var dict = try SyntheticModel.stateDict(for: config)
        dict.metadata["config"] = String(decoding: config.encodedJSON(), as: UTF8.self)
        let model = folder.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try Checkpoints.write(dict, to: model.appendingPathComponent("model.safetensors"), format: .safetensors)
        try FileManager.default.copyItem(at: Self.repositoryRoot.appendingPathComponent("fixtures/tokenizers/minilm/tokenizer.json"),
                                         to: model.appendingPathComponent("tokenizer.json"))
        let tokens = try Self.run(["tokenize", model.path, "--text", "Hello, world!", "--json"])
        #expect(tokens.status == 0, "\(tokens.stderr)")
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(tokens.stdout.utf8)) as? [String: Any])
        #expect(parsed["tokens"] as? [String] == ["[CLS]", "hello", ",", "world", "!", "[SEP]"])
        let run = try Self.run(["run", model.path, "--text", "memory slots", "--text", "product keys are cheap", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect((result["sequences"] as? [Any])?.count == 2)
        let corpus = folder.appendingPathComponent("corpus.txt")
        try "the memory\n\nproduct keys\nslots are used\n".write(to: corpus, atomically: true, encoding: .utf8)
        let plot = folder.appendingPathComponent("usage.svg")
        let usage = try Self.run(["usage", model.path, "--text-file", corpus.path, "--plot", plot.path])
        #expect(usage.status == 0, "\(usage.stderr)")
        #expect(usage.stdout.contains("per head:") && FileManager.default.fileExists(atPath: plot.path))
        // diff: 0 for a checkpoint and its pkmz, 1 after a graft changed it, JSON with the documented keys.
        let pkmz = folder.appendingPathComponent("same.pkmz").path
        #expect(try Self.run(["convert", model.path, "-o", pkmz]).status == 0)
        #expect(try Self.run(["diff", model.path, pkmz]).status == 0)
        let other = folder.appendingPathComponent("other.pkmz").path
        #expect(try Self.run(["graft", model.path, "-o", other, "--layers", "2", "--n-keys", "8", "--heads", "2", "--knn", "4", "--k-dim", "8"]).status == 0)
        let different = try Self.run(["diff", model.path, other, "--json"])
        #expect(different.status == 1, "\(different.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(different.stdout.utf8)) as? [String: Any])
        #expect(Set(report.keys).isSuperset(of: ["tensors", "memories", "onlyInA", "onlyInB"]))
        #expect((report["onlyInB"] as? [String])?.contains("encoder.layer.2.memory.values.weight") == true)
        #expect(try Self.run(["diff", model.path, "/nonexistent.pkmz"]).status == 2)
    }
}

/// Issue 18, item 12: argument errors are one line naming the flag, and a mistyped count fails before it allocates.
@Suite("Argument errors are one line")
struct ArgumentErrorLineTests {
    @Test("one error line, no usage lines, a pointer to the help", arguments: [
        (["run", "fixtures/models/bert_base_plain", "--input-ids", "-1"], "pkm-convert: error: --input-ids: token id -1 at position 0 is outside the model's vocabulary 0..<99"),
        (["convert", "fixtures/models/bert_residual/model.h5", "-o", "/tmp/pkm-cli-never.pkmz", "--threads", "1000000"],
         "pkm-convert: error: --threads must be between 0 (all cores) and 1024, is 1000000 (see 'pkm-convert convert --help')"),
        (["graft"], "pkm-convert: error: Missing expected argument '<base>' (see 'pkm-convert graft --help')"),
        (["run", "fixtures/models/bert_base_plain", "--input-ids", "1,x"], "pkm-convert: error: --input-ids: '1,x' is not a comma-separated list of integers"),
    ] as [([String], String)])
    func oneLine(arguments: [String], line: String) throws {
        let outcome = try CLITests.run(arguments)
        #expect(outcome.status == 2)
        #expect(outcome.stderr == line + "\n", "\(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/pkm-cli-never.pkmz"))
    }
}

/// Issue 18, item 12: special files named where a regular file or folder is expected are refused for what they
/// are, at once, in one line (never opened: a FIFO would block, /dev/zero never ends).
@Suite("Special files at the command line")
struct SpecialFileArgumentTests {
    @Test("a FIFO or device as config, tokenizer or text file; a device as a folder output")
    func refusedForWhatTheyAre() throws {
        let fifo = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-cli-fifo-\(UUID().uuidString)")
        guard mkfifo(fifo.path, 0o600) == 0 else { Issue.record("mkfifo failed"); return }
        defer { try? FileManager.default.removeItem(at: fifo) }
        let cases: [([String], String)] = [
            (["run", "fixtures/models/bert_base_plain", "--random-inputs", "1x4", "--config", "/dev/zero"],
             "/dev/zero: is a character device, not a regular file; a config file must be a regular file"),
            (["run", "fixtures/models/bert_base_plain", "--text", "hi", "--tokenizer", fifo.path],
             "\(fifo.path): is a FIFO (named pipe), not a regular file; a tokenizer file must be a regular file"),
            (["tokenize", "fixtures/models/bert_base_plain", "--text", "hi", "--tokenizer", fifo.path], "is a FIFO (named pipe)"),
            (["run", "fixtures/models/bert_base_plain", "--text-file", fifo.path, "--tokenizer", "fixtures/tokenizers/minilm/tokenizer.json"],
             "is a FIFO (named pipe), not a regular file; a text file must be a regular file"),
            (["export", "fixtures/models/bert_residual/model.h5", "-o", "/dev/null"], "/dev/null: could not write: it is a character device, not a folder"),
        ]
        for (arguments, message) in cases {
            let start = Date()
            let outcome = try CLITests.run(arguments)
            #expect(outcome.status == 2, "\(arguments)")
            #expect(outcome.stderr.hasPrefix("pkm-convert: error: ") && outcome.stderr.contains(message), "\(arguments): \(outcome.stderr)")
            #expect(outcome.stderr.split(separator: "\n").count == 1, "\(outcome.stderr)")
            #expect(Date().timeIntervalSince(start) < 10)
        }
        var status = stat()
        #expect(stat("/dev/null", &status) == 0 && (status.st_mode & S_IFMT) == S_IFCHR)
    }
}

/// Issue 18, item 8: names from a file are shown with control characters escaped; `--json` keeps them exact.
@Suite("Names from files on the terminal")
struct TerminalNameTests {
    @Test("inspect --tensors escapes a name holding escape sequences; --json keeps it exact")
    func escaped() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-cli-names-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let name = "evil\u{1B}]0;pwned\u{07}\u{1B}[2J\rname"
        var dict = StateDict()
        try dict.insert(try Tensor(float32: [1, 2], shape: [2]), named: name)
        dict.metadata["note\u{1B}[31m"] = "red\u{1B}[0m"
        let file = folder.appendingPathComponent("names.safetensors")
        try Checkpoints.write(dict, to: file, format: .safetensors)
        let text = try CLITests.run(["inspect", file.path, "--tensors"])
        #expect(text.status == 0)
        #expect(!text.stdout.contains("\u{1B}") && !text.stdout.contains("\u{07}") && !text.stdout.contains("\r"), "\(text.stdout)")
        #expect(text.stdout.contains("evil\\x1b]0;pwned\\x07\\x1b[2J\\rname"), "\(text.stdout)")
        let json = try CLITests.run(["inspect", file.path, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let tensors = try #require(object["tensors"] as? [[String: Any]])
        #expect(tensors.first?["name"] as? String == name)
    }
}

/// Issue 19: `inspect` names the class a checkpoint runs as, and `usage` measures the memory of a model with a head.
@Suite("Task heads at the command line")
struct HeadCommandTests {
    @Test("inspect says what each checkpoint runs as; --json has it", arguments: [
        ("fixtures/heads/bert_qa_residual", "runs as: BertForQuestionAnswering (head from config.json architectures)", "BertForQuestionAnswering"),
        ("fixtures/heads/roberta_mlm_residual", "runs as: RobertaForMaskedLM", "RobertaForMaskedLM"),
        ("fixtures/models/bert_residual/model.h5", "runs as: BertModel (no task head)", "BertModel"),
    ])
    func inspectNamesTheHead(path: String, line: String, architecture: String) throws {
        let text = try CLITests.run(["inspect", path])
        #expect(text.status == 0 && text.stdout.contains(line), "\(text.stdout)")
        let json = try CLITests.run(["inspect", path, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["runsAs"] as? String == architecture)
    }

    @Test("usage measures the memory of a model with a masked-LM head")
    func usageOnHeadModel() throws {
        let outcome = try CLITests.run(["usage", "fixtures/heads/bert_mlm_residual", "--random-inputs", "4x8", "--json"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any])
        let layers = try #require(object["layers"] as? [[String: Any]])
        #expect(layers.count == 1 && (layers[0]["tokens"] as? Int) == 32 && ((layers[0]["usagePercent"] as? Double) ?? 0) > 0)
    }
}
