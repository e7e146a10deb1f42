import Foundation
import PKMCheckpoints
import PKMTestSupport
@testable import PKMFormats
import PKMModel
import PKMTensor
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Fault injection against the built `pkm-convert`: a run killed with SIGKILL at random moments of
// `convert`, `import` and `graft` must leave the destination absent (or the previous file there
// byte for byte, or, when the kill came after the commit, the complete new file), and no temporary
// file in the folder; a file-size limit (`ulimit -f`, SIGXFSZ ignored, as on a full disk) must give
// exit status 2, one error line and no output. RELIABILITY.md records the figures;
// scripts/fault-injection.sh runs the same checks from the shell on larger checkpoints.
//
// PKM_FAULT_TRIALS sets the number of kills per command (default 6).

/// Spawning and killing the CLI.
enum FaultProcess {
    enum Ending: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signalled(Int32)

        var description: String {
            switch self {
            case .exited(let code): return "exit \(code)"
            case .signalled(let signal): return "signal \(signal)"
            }
        }
    }

    /// The built `pkm-convert` next to the test bundle, if any.
    static var cli: URL? {
        var candidates = [Bundle.main.bundleURL.appendingPathComponent("pkm-convert"),
                          Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("pkm-convert")]
        if let executable = Bundle.main.executableURL {
            candidates.append(executable.deletingLastPathComponent().appendingPathComponent("pkm-convert"))
        }
        candidates.append(PipelineFixtures.repositoryRoot.appendingPathComponent(".build/debug/pkm-convert"))
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Whether these tests (and so the CLI built with them) run under ThreadSanitizer, whose runtime
    /// itself faults (SIGBUS) at start-up under a file-size limit of a few dozen KiB.
    static let threadSanitized = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__tsan_init") != nil

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Starts `arguments` with stdout to /dev/null and stderr to `stderrPath`.
    static func spawn(_ arguments: [String], stderrPath: String) throws -> pid_t {
        // Sanitizer options pass through (scripts/sanitizers.sh runs this suite under ASan and TSan).
        let passed = ["ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"].compactMap { name in
            ProcessInfo.processInfo.environment[name].map { "\(name)=\($0)" }
        }
        do {
            return try ChildProcess.spawn(arguments, environment: ["PATH=/usr/bin:/bin", "LANG=C", "SWIFT_BACKTRACE=enable=no"] + passed) { actions in
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            }
        } catch let ChildProcess.SpawnError.failed(code) {
            throw FaultFailure("posix_spawn \(arguments[0]): \(String(cString: strerror(code)))")
        }
    }

    static func wait(_ pid: pid_t) -> Ending {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        switch ChildProcess.ending(ofWaitStatus: status) {
        case .exited(let code): return .exited(code)
        case .signalled(let signal): return .signalled(signal)
        case .timedOut: preconditionFailure("a wait status never reports a deadline")
        }
    }

    /// Runs to completion; returns how it ended, its stderr and the wall time.
    static func run(_ arguments: [String], stderrPath: String) throws -> (ending: Ending, stderr: String, seconds: Double) {
        let start = now()
        let ending = wait(try spawn(arguments, stderrPath: stderrPath))
        return (ending, String(decoding: FileManager.default.contents(atPath: stderrPath) ?? Data(), as: UTF8.self), now() - start)
    }

    /// Starts `arguments`, sends SIGKILL after `delay` seconds (unless it ended before), and reaps it.
    static func kill(_ arguments: [String], after delay: Double, stderrPath: String) throws -> Ending {
        let pid = try spawn(arguments, stderrPath: stderrPath)
        let deadline = now() + delay
        var status: Int32 = 0
        while now() < deadline {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid {
                let signal = status & 0x7F
                return signal == 0 ? .exited((status >> 8) & 0xFF) : .signalled(signal)
            }
            usleep(500)
        }
        Glibc.kill(pid, SIGKILL)
        return wait(pid)
    }
}

struct FaultFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A checkpoint big enough (about 22 MB of float32) that writing it takes a while, with its config embedded.
enum FaultCheckpoint {
    static let config = ModelConfig(modelType: .bert, vocabSize: 8192, hiddenSize: 256, layerCount: 4, attentionHeadCount: 4,
                                    intermediateSize: 1024, maxPositionEmbeddings: 512, typeVocabSize: 2)

    /// Writes the checkpoint as safetensors with random small floats (fast to generate, poorly compressible).
    static func write(to url: URL, seed: UInt64 = 7) throws {
        var dict = StateDict(metadata: ["config": String(decoding: config.encodedJSON(), as: UTF8.self)])
        var state = seed
        for spec in PKMBertModel.parameterSpecs(for: config) {
            let count = spec.shape.reduce(1, *)
            var storage = Data(count: count * 4)
            storage.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt32.self)
                for index in words.indices {
                    state &+= 0x9E37_79B9_7F4A_7C15
                    var z = state
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    // Sign and mantissa random, exponent fixed: magnitudes in [2⁻⁷, 2⁻⁶).
                    words[index] = (UInt32(truncatingIfNeeded: z) & 0x807F_FFFF) | 0x3C00_0000
                }
            }
            try dict.insert(Tensor(dtype: .float32, shape: spec.shape, storage: storage), named: spec.name)
        }
        try Checkpoints.write(dict, to: url, format: .safetensors)
    }

    /// A small valid checkpoint in `format`, used as the "previous file" a run must not damage.
    static func writePrevious(to url: URL, format: CheckpointFormat) throws {
        var dict = StateDict(metadata: ["note": "previous file"])
        try dict.insert(Tensor(float32: [1, 2, 3, 4], shape: [2, 2]), named: "previous.weight")
        try Checkpoints.write(dict, to: url, format: format)
    }
}

@Suite("Fault injection: SIGKILL and a full disk never leave a damaged output", .serialized)
struct FaultInjectionTests {
    static var trials: Int { ProcessInfo.processInfo.environment["PKM_FAULT_TRIALS"].flatMap { Int($0) } ?? 6 }

    /// The folder's entries other than `expected`.
    static func leftovers(in folder: URL, expected: Set<String>) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { !expected.contains($0) }.sorted()
    }

    /// Opens `url` and reads every tensor (pkmz: every frame checksum too), as a complete output must allow.
    static func checkComplete(_ url: URL) throws {
        let reader = try Checkpoints.open(url)
        if let pkmz = reader as? PKMZReader { try pkmz.verifyChecksums() }
        for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
    }

    struct Command: CustomTestStringConvertible, Sendable {
        let label: String
        let output: String
        let arguments: @Sendable (_ source: String, _ output: String) -> [String]
        var testDescription: String { label }
    }

    static let commands: [Command] = [
        Command(label: "convert → pkmz", output: "out.pkmz") { ["convert", $0, "-o", $1, "--threads", "2"] },
        Command(label: "convert → safetensors", output: "out.safetensors") { ["convert", $0, "-o", $1] },
        Command(label: "convert → hdf5", output: "out.h5") { ["convert", $0, "-o", $1] },
        Command(label: "import → pkmz", output: "imported.pkmz") { ["import", $0, "-o", $1] },
        Command(label: "graft → safetensors", output: "grafted.safetensors") {
            ["graft", $0, "-o", $1, "--layers", "1,3", "--n-keys", "64", "--heads", "2", "--knn", "8", "--k-dim", "32"]
        },
    ]

    @Test("SIGKILL at random moments leaves the destination absent, previous or complete, and no temporary files", arguments: commands)
    func sigkill(command: Command) throws {
        let cli = try #require(FaultProcess.cli, "pkm-convert is not built next to the tests (swift test builds it)")
        let folder = try TemporaryFolder()
        let source = folder.file("source.safetensors")
        try FaultCheckpoint.write(to: source)
        let destination = folder.file(command.output)
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-fault-stderr-\(getpid())-\(UUID().uuidString.prefix(6)).txt").path
        defer { unlink(errors) }
        let format = try #require(CheckpointFormat(pathExtension: destination.pathExtension))
        let arguments = [cli.path] + command.arguments(source.path, destination.path)

        // One undisturbed run measures how long the command takes.
        let full = try FaultProcess.run(arguments, stderrPath: errors)
        try #require(full.ending == .exited(0), "the undisturbed run failed: \(full.stderr)")
        try Self.checkComplete(destination)
        try FileManager.default.removeItem(at: destination)

        var random = SplitMix64(seed: 0xFA17 ^ UInt64(command.label.utf8.count))
        var outcomes: [String: Int] = [:]
        var hiddenLeftovers = 0
        for trial in 0..<Self.trials {
            let withPrevious = trial % 2 == 1
            var previous: Data?
            if withPrevious {
                try FaultCheckpoint.writePrevious(to: destination, format: format)
                previous = try Data(contentsOf: destination)
            }
            // Uniform over the run, plus a little beyond its end (to catch the commit itself).
            let delay = full.seconds * 1.1 * Double(random.next() % 10_000) / 10_000
            let ending = try FaultProcess.kill(arguments, after: delay, stderrPath: errors)
            let context = "\(command.label), trial \(trial), kill after \(String(format: "%.3f", delay)) s of \(String(format: "%.3f", full.seconds)) s, \(ending)"
            #expect(ending == .signalled(SIGKILL) || ending == .exited(0), "\(context)")
            let leftovers = Self.leftovers(in: folder.url, expected: ["source.safetensors", command.output])
            if format == .hdf5 {
                // libhdf5 needs a named temporary (it cannot open an anonymous inode), which a SIGKILL
                // can leave behind: only hidden `.out.h5.pkm-tmp-<pid>-…` names, removed by the next run.
                #expect(leftovers.allSatisfy { $0.hasPrefix(".\(command.output).pkm-tmp-") }, "\(context): left \(leftovers)")
                hiddenLeftovers += leftovers.count
            } else {
                #expect(leftovers.isEmpty, "\(context): left \(leftovers)")
            }
            if FileManager.default.fileExists(atPath: destination.path) {
                let now = try Data(contentsOf: destination)
                if let previous, now == previous {
                    outcomes["previous intact", default: 0] += 1
                } else {
                    // Only a committed (complete) file may replace the destination.
                    #expect(throws: Never.self, "\(context): the destination is not a complete checkpoint") { try Self.checkComplete(destination) }
                    #expect(try Checkpoints.open(destination).tensorInfos.count > 1, "\(context)")
                    outcomes["complete new file", default: 0] += 1
                }
                try FileManager.default.removeItem(at: destination)
            } else {
                #expect(previous == nil, "\(context): the previous file disappeared")
                outcomes["absent", default: 0] += 1
            }
        }
        // The next undisturbed run to the same destination removes the temporaries of killed writers.
        let cleanup = try FaultProcess.run(arguments, stderrPath: errors)
        try #require(cleanup.ending == .exited(0), "the clean-up run failed: \(cleanup.stderr)")
        let remaining = Self.leftovers(in: folder.url, expected: ["source.safetensors", command.output])
        #expect(remaining.isEmpty, "\(command.label): the next run left \(remaining)")
        print("FAULT \(command.label): \(Self.trials) kills over \(String(format: "%.2f", full.seconds)) s runs → "
              + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
              + (hiddenLeftovers > 0 ? "; \(hiddenLeftovers) hidden temporaries of killed writers, removed by the next run" : "; no leftovers"))
    }

    @Test("a file-size limit (ulimit -f, SIGXFSZ ignored) gives exit 2, one error line, no output and the previous file intact",
          arguments: [("out.pkmz", false, 4096), ("out.safetensors", true, 4096), ("out.h5", false, 4096), ("imported.pkmz", true, 4096)])
    func fileSizeLimit(output: String, withPrevious: Bool, limitKiB: Int) throws {
        try checkFileSizeLimit(output: output, withPrevious: withPrevious, limitKiB: limitKiB)
    }

    @Test("the same under file-size limits of a few KiB (the write fails at the first bytes)",
          .enabled(if: !FaultProcess.threadSanitized, "ThreadSanitizer's runtime itself faults under a small RLIMIT_FSIZE, even for --version"),
          arguments: [("out.pkmz", true, 1), ("out.safetensors", false, 64), ("out.h5", true, 64), ("out.h5", false, 1)])
    func smallFileSizeLimit(output: String, withPrevious: Bool, limitKiB: Int) throws {
        try checkFileSizeLimit(output: output, withPrevious: withPrevious, limitKiB: limitKiB)
    }

    func checkFileSizeLimit(output: String, withPrevious: Bool, limitKiB: Int) throws {
        let cli = try #require(FaultProcess.cli, "pkm-convert is not built next to the tests (swift test builds it)")
        let folder = try TemporaryFolder()
        let source = folder.file("source.safetensors")
        try FaultCheckpoint.write(to: source)
        let destination = folder.file(output)
        let format = try #require(CheckpointFormat(pathExtension: destination.pathExtension))
        var previous: Data?
        if withPrevious {
            try FaultCheckpoint.writePrevious(to: destination, format: format)
            previous = try Data(contentsOf: destination)
        }
        let command = output.hasPrefix("imported") ? "import" : "convert"
        let errors = folder.url.deletingLastPathComponent().appendingPathComponent("pkm-fault-\(UUID().uuidString.prefix(8)).txt").path
        defer { unlink(errors) }
        // Far below the ~22 MB the output needs (bash counts `ulimit -f` in KiB): 1 KiB fails on the first
        // header or superblock write, 64 KiB early in the data, 4 MiB in the middle of a tensor.
        let script = "trap '' XFSZ; ulimit -f \(limitKiB); exec \"$0\" \"$@\""
        let outcome = try FaultProcess.run(["/bin/bash", "-c", script, cli.path, command, source.path, "-o", destination.path], stderrPath: errors)
        #expect(outcome.ending == .exited(2), "\(output): \(outcome.ending): \(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        #expect(lines.count == 1, "\(output): stderr is not one line: \(outcome.stderr)")
        #expect(lines.first?.hasPrefix("pkm-convert: error: ") == true, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("File too large") || outcome.stderr.contains("could not write"), "\(outcome.stderr)")
        if let previous {
            #expect(try Data(contentsOf: destination) == previous, "\(output): the previous file changed")
        } else {
            #expect(!FileManager.default.fileExists(atPath: destination.path), "\(output): a partial output was left")
        }
        let leftovers = Self.leftovers(in: folder.url, expected: ["source.safetensors", output])
        #expect(leftovers.isEmpty, "\(output): left \(leftovers)")
        print("FAULT file-size limit \(limitKiB) KiB, \(command) → \(output)\(withPrevious ? " (previous file present)" : ""): \(outcome.ending), \(lines.first ?? "")")
    }
}

@Suite("Atomic outputs clean up after writers that were killed")
struct StaleTemporaryTests {
    @Test("a new output removes temporary names left by dead writers of the same destination, and nothing else")
    func sweep() throws {
        let folder = try TemporaryFolder()
        // A process id that is certainly gone: a child that has exited and been reaped.
        let dead = try FaultProcess.spawn(["/bin/true"], stderrPath: "/dev/null")
        _ = FaultProcess.wait(dead)
        let alive = getppid()
        let stale = ".out.pkmz.pkm-tmp-\(dead)-0-12345"
        let live = ".out.pkmz.pkm-tmp-\(alive)-0-67890"
        let otherDestination = ".other.pkmz.pkm-tmp-\(dead)-0-1"
        for name in [stale, live, otherDestination] {
            try Data("partial".utf8).write(to: folder.file(name))
        }
        var dict = StateDict()
        try dict.insert(Tensor(float32: [1, 2], shape: [2]), named: "w")
        try Checkpoints.write(dict, to: folder.file("out.pkmz"), format: .pkmz)
        #expect(folder.contents == [live, otherDestination, "out.pkmz"].sorted())
        // Writing without a previous destination links the file straight to its name: no temporary ever.
        try Checkpoints.write(dict, to: folder.file("fresh.safetensors"), format: .safetensors)
        #expect(folder.contents.filter { $0.contains("fresh") } == ["fresh.safetensors"])
    }
}
