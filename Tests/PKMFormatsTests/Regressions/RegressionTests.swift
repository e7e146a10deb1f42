import Foundation
import PKMCheckpoints
import PKMHDF5
import PKMTensor
import Testing
@testable import PKMFormats
#if canImport(Glibc)
import Glibc
#endif

// Replays every input that ever broke something, kept in Inputs/ (README.md says where each came
// from). safetensors and pkmz inputs run in process and must be refused with a FormatError. HDF5
// inputs crash or hang libhdf5 1.10.8 itself, so they run through `pkm-convert inspect --verify-data`
// in a subprocess: with the default HDF5 probe (HDF5Probe.swift) each must end in a one-line error;
// with the probe off, a crash or hang is recorded as the known libhdf5 issue (intermittent, so a
// fixed libhdf5 passes) and only a Swift trap fails.

@Suite("Regression inputs")
struct RegressionTests {
    /// `Regressions/Inputs/`, next to this file.
    static var folder: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Inputs") }

    static func inputs(_ fileExtension: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".\(fileExtension)") }.sorted()
    }

    @Test("safetensors and pkmz regression inputs are refused with a FormatError",
          arguments: inputs("safetensors") + inputs("pkmz"))
    func inProcess(name: String) throws {
        let url = Self.folder.appendingPathComponent(name)
        #expect(throws: FormatError.self, "\(name)") { _ = try Checkpoints.open(url).readAll() }
    }

    /// Issue 18's PyTorch inputs: what each must be refused for (a substring of the error line).
    static let refusedPickles: [String: String] = [
        "pickle-stride0-expand-64gib.pt": "above the allowance",
        "pickle-stride0-64-views-of-1gib.pt": "above the allowance",
        "zip64-entry-declares-64gib.pt": "more than deflate can expand",
        "zip-200-records-one-entry.pt": "zip container: entry 'archive/data/1'",
        "zip-stored-sizes-differ.pt": "stored (uncompressed) entry",
        "zip-eocd-count-65535.pt": "no ZIP64 record",
        "zip-cd-size-fffffff0.pt": "central directory's size",
        "zip64-count-2e62.pt": "more than its 246 bytes can hold",
        "zip64-locator-past-end.pt": "ZIP64 locator points at byte",
        "zip-entry-names-dotdot.pt": "climbs out with '..'",
        "pickle-name-with-escape-sequences.pt": "tensor '\\x1b]0;pwned\\x07\\x1b[2J\\rw'",
        "pickle-billion-laughs.pt": "billion laughs",
    ]

    @Test("every .pt regression input is listed with what it must be refused for, or read as its own test says")
    func picklesListed() {
        #expect(Set(Self.inputs("pt")) == Set(Self.refusedPickles.keys).union(["pickle-tensors-in-tuple-and-list.pt"]))
    }

    @Test("PyTorch regression inputs (issue 18) are refused in process with the right FormatError, quickly",
          arguments: inputs("pt").filter { refusedPickles[$0] != nil })
    func pickleInProcess(name: String) throws {
        let url = Self.folder.appendingPathComponent(name)
        let clock = ContinuousClock()
        let start = clock.now
        let error = #expect(throws: FormatError.self, "\(name)") { _ = try Checkpoints.open(url).readAll() }
        #expect(clock.now - start < .seconds(5), "\(name) took \(clock.now - start)")
        let expected = try #require(Self.refusedPickles[name])
        #expect(error?.description.contains(expected) == true, "\(name): \(String(describing: error))")
        #expect(error?.description.unicodeScalars.contains { $0.value < 0x20 } == false, "\(name): raw control characters")
    }

    @Test("PyTorch regression inputs through the CLI: exit 2, one error line, nothing written, under a 2 GiB address-space cap",
          arguments: inputs("pt").filter { refusedPickles[$0] != nil })
    func pickleCLI(name: String) throws {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-regression-out-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: output) }
        let cap = FuzzSettings.sanitized ? "" : "ulimit -v 2097152; "
        let (input, outcome) = try Self.runCLI(on: name, deadline: 20, { cli, input in
            ["/bin/sh", "-c", cap + "exec \"$0\" convert \"$1\" -o \"$2\"", cli, input, output.appendingPathComponent("out.safetensors").path]
        })
        let lines = outcome.stderr.split(separator: "\n")
        #expect(outcome.ending == .exited(2) && lines.count == 1 && lines[0].hasPrefix("pkm-convert: error: \(input): "),
                "\(name): \(outcome.ending): \(outcome.stderr.prefix(2000))")
        #expect((try? FileManager.default.contentsOfDirectory(atPath: output.path)) == [], "\(name) left an output")
        print("REGRESSION \(name): \(outcome.ending), \(lines.first ?? "")")
    }

    @Test("tensors under tuple and list values are read under dotted index names, not dropped")
    func tuplesFlattened() throws {
        let reader = try TorchCheckpointReader(url: Self.folder.appendingPathComponent("pickle-tensors-in-tuple-and-list.pt"))
        #expect(reader.tensorInfos.map(\.name) == ["pair.0", "pair.1", "stack.0.0"])
        #expect(try reader.tensor(named: "pair.1").floatValues() == [2])
        #expect(reader.diagnostics.contains { $0.contains("'step'") })
    }

    @Test("the regression folder holds the inputs its README lists")
    func present() {
        #expect(Self.inputs("h5").count >= 8)
        #expect(Self.inputs("safetensors").contains("empty.safetensors"))
        #expect(Self.inputs("pkmz").contains("empty.pkmz"))
    }

    /// Runs `command(cli, input)` on the regression input `name` with a `deadline`.
    /// - Throws: when the CLI is not built next to the tests (`swift test` builds it).
    static func runCLI(on name: String, deadline: Double, _ command: (_ cli: String, _ input: String) -> [String])
        throws -> (input: String, outcome: FuzzProcess.Outcome) {
        let cli = try #require(FuzzProcess.cli, "pkm-convert is not built next to the tests (swift test builds it)")
        let input = folder.appendingPathComponent(name).path
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-regression-\(getpid())-\(UUID().uuidString).txt").path
        defer { unlink(errors) }
        return (input, FuzzProcess.run(command(cli.path, input), stderrPath: errors, environment: FuzzSettings.childEnvironment, deadline: deadline))
    }

    @Test("HDF5 regression inputs: the CLI's isolated probe turns every libhdf5 crash or hang into a one-line error",
          arguments: inputs("h5"))
    func hdf5(name: String) throws {
        // The probe's deadline (2 s) is well inside the test's (20 s): a hang costs 2 s.
        let (input, outcome) = try Self.runCLI(on: name, deadline: 20, { cli, input in
            [cli, "inspect", "--verify-data", "--hdf5-probe-timeout", "2", input]
        })
        let lines = outcome.stderr.split(separator: "\n")
        #expect(outcome.ending == .exited(2) && lines.count == 1 && lines[0].hasPrefix("pkm-convert: error: \(input): "),
                "\(name): \(outcome.ending): \(outcome.stderr.prefix(2000))")
        print("REGRESSION \(name): \(outcome.ending), \(lines.first ?? "")")
    }

    @Test("HDF5 regression inputs with the probe off: a one-line error, or the known libhdf5 crash or hang — never a Swift trap",
          arguments: inputs("h5"))
    func hdf5Unprobed(name: String) throws {
        // A 1 GiB address-space cap (not under a sanitizer) ends libhdf5's runaway allocation quickly.
        let cap = FuzzSettings.sanitized ? "" : "ulimit -v 1048576; "
        var command: [String] = []
        let (_, outcome) = try Self.runCLI(on: name, deadline: 3, { cli, input in
            command = ["/bin/sh", "-c", cap + "exec \"$0\" inspect --verify-data --hdf5-probe off \"$1\"", cli, input]
            return command
        })
        switch outcome.ending {
        case .exited(let code) where FuzzProcess.isSanitizerCrash(outcome.stderr):
            // Under AddressSanitizer the fault is reported with its stack instead of killing the process.
            let place = FuzzProcess.locate("crash", in: outcome.stderr)
            #expect(place.contains("in libhdf5"), "\(name): exit \(code), \(place): \(outcome.stderr.prefix(2000))")
            withKnownIssue("expected: with the probe off, libhdf5 1.10.8 itself faults on \(name) (\(place)); the default probe contains it", isIntermittent: true) {
                Issue.record("expected libhdf5 fault under a sanitizer, probe off: \(place)")
            }
        case .exited(let code):
            let lines = outcome.stderr.split(separator: "\n")
            #expect(code == 2 && lines.count == 1 && lines[0].hasPrefix("pkm-convert: error: "), "\(name): exit \(code): \(outcome.stderr)")
        case .signalled(let signal):
            #expect(!outcome.stderr.contains("Fatal error"), "\(name): signal \(signal), a Swift runtime error: \(outcome.stderr.prefix(2000))")
            if signal == SIGILL || signal == SIGTRAP {
                // A trap without a Swift error message: a bare trap in our code (an overflow check) or a libhdf5 fault
                // (this input exhausts the 1 GiB cap and corrupts libhdf5's own state; seen intermittently). The frame
                // decides: re-run under gdb (which follows the shell's exec) and look where it stopped.
                let scratch = FileManager.default.temporaryDirectory
                let place = FuzzProcess.diagnose(command, scratch: scratch, environment: FuzzSettings.childEnvironment, seconds: 5)
                print("REGRESSION \(name): signal \(signal) with the probe off; gdb: \(place)")
                // Seen: the trap is in Foundation's logging (libFoundation `_logToStderr`), which halts when it cannot
                // allocate after libhdf5 used up the cap. A trap in pkm-convert's own code names one of its modules.
                let inOurCode = ["PKM", "pkm-convert", "pkm_"].contains { place.contains($0) } && !place.contains("libhdf5")
                #expect(!inOurCode, "\(name): signal \(signal), a trap in pkm-convert's own code: \(place); stderr: \(outcome.stderr.prefix(2000))")
            }
            withKnownIssue("expected: with the probe off, libhdf5 1.10.8 itself crashes on \(name) (signal \(signal)); the default probe turns this into a one-line error", isIntermittent: true) {
                Issue.record("expected libhdf5 crash with the probe off (signal \(signal)), contained by the default probe")
            }
        case .timedOut:
            withKnownIssue("expected: with the probe off, libhdf5 1.10.8 itself loops on \(name); the default probe's deadline contains it", isIntermittent: true) {
                Issue.record("expected libhdf5 hang with the probe off (killed after 3 s), contained by the default probe")
            }
        }
    }
}
