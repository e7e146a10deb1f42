import Foundation
@testable import PKMHDF5
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats
#if canImport(Glibc)
import Glibc
#endif

@Suite("HDF5 probe: damaged HDF5 files are read in a child process first")
struct HDF5ProbeTests {
    static let regressions = TestPaths.repositoryRoot.appendingPathComponent("Tests/PKMFormatsTests/Regressions/Inputs")

    @Test("the child runner reports exit status, signal, deadline and the last stderr line")
    func childProcess() throws {
        let exited = try ChildProcess.run(executable: "/bin/sh", arguments: ["-c", "echo first >&2; echo 'x: broken' >&2; exit 2"],
                                          deadlineSeconds: 5)
        #expect(exited.ending == .exited(2))
        #expect(exited.lastLine == "x: broken")
        let crashed = try ChildProcess.run(executable: "/bin/sh", arguments: ["-c", "kill -SEGV $$"], deadlineSeconds: 5)
        #expect(crashed.ending == .signalled(SIGSEGV))
        let start = Date()
        let hung = try ChildProcess.run(executable: "/bin/sh", arguments: ["-c", "while :; do :; done"], deadlineSeconds: 0.5)
        #expect(hung.ending == .timedOut)
        #expect(Date().timeIntervalSince(start) < 5)
        // A child that closes stderr early is still waited for, not mistaken for finished.
        let quiet = try ChildProcess.run(executable: "/bin/sh", arguments: ["-c", "exec 2>&-; sleep 0.3; exit 7"], deadlineSeconds: 5)
        #expect(quiet.ending == .exited(7))
        #expect(throws: ChildProcess.SpawnError.self) {
            _ = try ChildProcess.run(executable: "/nonexistent/pkm-probe", arguments: [], deadlineSeconds: 1)
        }
    }

    @Test("the probe passes every limit to the child, scales its deadline, and a missing probe program is an I/O error")
    func arguments() throws {
        let fixture = TestPaths.repositoryRoot.appendingPathComponent("fixtures/hdf5/flat.h5")
        // The request the child receives: depth, parent, every limit (in its environment).
        var custom = ReaderLimits()
        custom.maxRank = 5
        let environment = HDF5Probe(command: ["/x"], depth: .data).requestEnvironment(limits: custom)
        let text = try #require(environment[HDF5Probe.requestVariable])
        let request = try JSONDecoder().decode(HDF5Probe.Request.self, from: Data(text.utf8))
        #expect(request.depth == .data && request.parent == getpid())
        #expect(request.limits == custom)
        #expect(HDF5Probe(command: ["/x"]).deadline(fileSize: 1 << 30) == 20)
        #expect(HDF5Probe(command: ["/x"], depth: .data).deadline(fileSize: 500_000_000) == 30)

        // A missing probe program is an I/O error naming it.
        let missing = HDF5Probe(command: ["/nonexistent/pkm-convert", "__probe-hdf5"])
        #expect(throws: FormatError.self) { _ = try HDF5Reader(url: fixture, isolation: missing) }
        do {
            _ = try HDF5Reader(url: fixture, isolation: missing)
        } catch let FormatError.isolatedReaderUnavailable(path, command, _) {
            #expect(path == fixture.path && command.contains("/nonexistent/pkm-convert"))
        }
    }

    @Test("with the real CLI as probe: a good file opens, libhdf5-crashing and looping files are refused without touching this process")
    func withCLI() throws {
        let cli = try #require(TestPaths.cli, "pkm-convert is not built next to the tests (swift test builds it)")
        var limits = ReaderLimits()
        let probe = HDF5Probe(command: [cli.path, "__probe-hdf5"], depth: .data, timeoutSeconds: 2)
        let good = try HDF5Reader(url: TestPaths.repositoryRoot.appendingPathComponent("fixtures/hdf5/flat.h5"), limits: limits, isolation: probe)
        #expect(!good.tensorInfos.isEmpty)
        for info in good.tensorInfos { _ = try good.tensor(named: info.name) }

        // Each of these crashes or hangs libhdf5 1.10.8 (Regressions/README.md); in this process
        // only the verdict arrives. A libhdf5 that no longer fails still refuses them with its own error.
        for name in ["libhdf5-crash-H5HG_read-vlen-attribute-2999.h5", "libhdf5-hang-global-heap-1056.h5",
                     "libhdf5-hang-then-crash-7578.h5"] {
            let url = Self.regressions.appendingPathComponent(name)
            do {
                _ = try HDF5Reader(url: url, limits: limits, isolation: probe)
                Issue.record("\(name) opened")
            } catch let FormatError.isolatedReadFailed(path, reason) {
                #expect(path == url.path)
                print("HDF5 PROBE \(name): contained as expected: \(reason)")
                #expect(!reason.isEmpty)
            } catch let FormatError.isolatedReadTimedOut(path, seconds) {
                #expect(path == url.path && seconds == 2)
                print("HDF5 PROBE \(name): contained as expected: the probe was killed at its \(seconds) s deadline")
            }
        }
        // The limits travel to the child: a rank limit of 0 is enforced there, and comes back as the same typed
        // error this process would throw (so a front end names its own way of raising it).
        limits.maxRank = 0
        do {
            _ = try HDF5Reader(url: TestPaths.repositoryRoot.appendingPathComponent("fixtures/hdf5/flat.h5"), limits: limits, isolation: probe)
            Issue.record("expected the rank limit")
        } catch let FormatError.limitExceeded(path, limit, _, maximum) {
            #expect(path.hasSuffix("flat.h5") && limit == .rank && maximum == 0)
        }
        // So does an amplification refusal (a gzip bomb), with the tensor it names.
        do {
            _ = try HDF5Reader(url: Self.regressions.appendingPathComponent("hdf5-gzip-bomb-96mib.h5"), isolation: probe)
            Issue.record("the gzip bomb opened")
        } catch let FormatError.amplificationExceeded(path, tensor, logical, stored, _) {
            #expect(path.hasSuffix("hdf5-gzip-bomb-96mib.h5") && tensor == "w" && logical == 100_663_296 && stored < logical)
        }
    }

    /// Pids whose command line contains `needle`.
    static func processes(containing needle: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(needle)
        }
    }

    @Test("a probe never outlives its parent: SIGKILL the CLI while its probe loops in libhdf5, the probe dies too")
    func probeDiesWithParent() throws {
        let cli = try #require(TestPaths.cli, "pkm-convert is not built next to the tests (swift test builds it)")
        let folder = try TemporaryFolder(prefix: "pkm-probe-parent")
        let input = folder.file("loops-\(UUID().uuidString).h5")
        try FileManager.default.copyItem(at: Self.regressions.appendingPathComponent("libhdf5-hang-global-heap-1056.h5"), to: input)
        let parent = Process()
        parent.executableURL = cli
        parent.arguments = ["inspect", input.path, "--hdf5-probe-timeout", "120"]
        parent.standardError = FileHandle.nullDevice
        parent.standardOutput = FileHandle.nullDevice
        try parent.run()
        // Wait for the probe to start (it then loops: libhdf5 never finishes this file).
        var probes: [Int32] = []
        for _ in 0..<100 where probes.isEmpty {
            usleep(50_000)
            probes = Self.processes(containing: "__probe-hdf5 \(input.path)")
        }
        try #require(!probes.isEmpty, "the probe did not start")
        usleep(500_000)   // well past its start-up: it is inside libhdf5's loop now
        kill(parent.processIdentifier, SIGKILL)
        parent.waitUntilExit()
        var left = probes
        for _ in 0..<100 where !left.isEmpty {
            usleep(50_000)
            left = Self.processes(containing: "__probe-hdf5 \(input.path)")
        }
        print("HDF5 PROBE parent \(parent.processIdentifier): probes \(probes) before the kill, \(left) after")
        #expect(left.isEmpty, "probe processes \(left) outlived their parent")
        for pid in left { kill(pid, SIGKILL) }
    }
}
