import CSystemShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Vets an HDF5 file in a separate process before libhdf5 parses it in this one.
///
/// libhdf5 (1.10.8 on Debian 12, and the CVEs of the 1.10–1.14 series) can crash, loop or corrupt
/// its heap on damaged metadata — in the global heap behind variable-length string attributes, in
/// link and attribute table cleanup, on error paths — before our validation ever sees a value
/// (RELIABILITY.md §3). No in-process check can prevent that: the public API gives no raw access to
/// that metadata, and a signal handler cannot restore libhdf5's state. So the file is first read
/// by a child process: `executable __probe-hdf5 FILE` (the hidden `pkm-convert` subcommand, spawned
/// with `posix_spawn`, never `fork`, since this process is multi-threaded), which opens it with
/// ``HDF5Reader`` exactly as this process would, and in ``Depth/data`` mode also reads every tensor.
/// Only when the child exits 0 does this process open the file itself. A child that crashes,
/// outlives its deadline, or refuses the file becomes
/// ``FormatError/isolatedReadFailed(path:reason:)`` and this process never hands the file to
/// libhdf5.
///
/// Cost: one extra process start and metadata walk (a few milliseconds for real checkpoints); in
/// ``Depth/data`` mode one extra read of the data, mostly from the page cache afterwards.
public struct HDF5Probe: Sendable, Equatable {
    /// How much of the file the child reads.
    public enum Depth: String, Sendable, CaseIterable {
        /// Structure only: superblock, groups, links, dataset types and shapes, every attribute
        /// (where every libhdf5 fault found so far happened).
        case metadata
        /// Structure and every tensor's data (chunk indexes and filters too).
        case data
    }

    /// The program to run; it must implement `__probe-hdf5` (the `pkm-convert` executable does).
    public var executable: URL
    /// What the child reads.
    public var depth: Depth
    /// Wall-clock deadline for the child, in seconds; nil picks 20 s plus 1 s per 50 MB of file in
    /// ``Depth/data`` mode. A child still running at the deadline is killed.
    public var timeoutSeconds: Double?

    public init(executable: URL, depth: Depth = .metadata, timeoutSeconds: Double? = nil) {
        self.executable = executable
        self.depth = depth
        self.timeoutSeconds = timeoutSeconds
    }

    /// The name of the hidden subcommand the child runs.
    public static let subcommand = "__probe-hdf5"

    /// Exit status of a child that refused the file with a typed error (its one-line message is
    /// on stderr). Any other non-zero status, or a signal, means the child did not finish.
    public static let refusedStatus: Int32 = 2

    /// Called first thing in the child: it is killed if the parent dies (a SIGKILLed `pkm-convert`
    /// must not leave a probe spinning in a libhdf5 loop), and exits at once if the parent is
    /// already gone. (PR_SET_PDEATHSIG fires when the spawning *thread* ends; ``vet(path:fileSize:limits:)``
    /// waits for the child on that thread, so the child always ends first.)
    /// - Parameter parent: the parent's pid as the parent passed it.
    public static func bindToParent(_ parent: Int32?) {
        _ = pkm_die_with_parent()
        if let parent, getppid() != parent { exit(3) }
    }

    /// The child's arguments for `path` under `limits` (the limits travel, the probe does not).
    func arguments(path: String, limits: ReaderLimits) -> [String] {
        var arguments = [Self.subcommand, path, "--parent", String(getpid()),
                         "--max-header-bytes", String(limits.maxHeaderBytes),
                         "--max-total-bytes", String(limits.maxTotalBytes),
                         "--max-tensor-count", String(limits.maxTensorCount),
                         "--max-rank", String(limits.maxRank)]
        if depth == .data { arguments.append("--data") }
        return arguments
    }

    func deadline(fileSize: Int) -> Double {
        if let timeoutSeconds { return timeoutSeconds }
        return depth == .data ? 20 + Double(fileSize) / 50e6 : 20
    }

    /// Runs the child on `path`; returns when it read the file cleanly.
    /// - Throws: ``FormatError/isolatedReadFailed(path:reason:)`` when the child refused the file,
    ///   crashed or was killed at the deadline; ``FormatError/io(path:operation:message:)`` when it
    ///   could not be started.
    func vet(path: String, fileSize: Int, limits: ReaderLimits) throws {
        let seconds = deadline(fileSize: fileSize)
        let outcome: ChildProcess.Outcome
        do {
            outcome = try ChildProcess.run(executable: executable.path, arguments: arguments(path: path, limits: limits),
                                           deadlineSeconds: seconds)
        } catch let ChildProcess.SpawnError.failed(code) {
            throw FormatError.io(path: path, operation: "start the isolated HDF5 reader \(executable.path)",
                                 message: String(cString: strerror(code)) + "; pass --hdf5-probe off to read it in this process only")
        }
        switch outcome.ending {
        case .exited(0):
            return
        case .exited(Self.refusedStatus) where !outcome.lastLine.isEmpty:
            throw FormatError.isolatedReadFailed(path: path, reason: outcome.lastLine)
        case .exited(let status):
            throw FormatError.isolatedReadFailed(
                path: path, reason: "the isolated HDF5 reader ended with status \(status)\(outcome.lastLine.isEmpty ? "" : " (\(outcome.lastLine))"); the file is damaged or not an HDF5 checkpoint")
        case .signalled(let signal):
            throw FormatError.isolatedReadFailed(
                path: path, reason: "the isolated HDF5 reader crashed (signal \(signal), \(ChildProcess.signalName(signal))) on this file: libhdf5 cannot read it safely, it is damaged; re-export it (nothing was read in this process)")
        case .timedOut:
            throw FormatError.isolatedReadFailed(
                path: path, reason: "the isolated HDF5 reader did not finish within \(String(format: "%g", seconds)) s (killed): libhdf5 loops on damaged metadata, or the disk is very slow (then raise --hdf5-probe-timeout)")
        }
    }
}

/// A child process with a wall-clock deadline and captured stderr, spawned with `posix_spawn`.
enum ChildProcess {
    enum Ending: Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
    }

    struct Outcome {
        var ending: Ending
        /// stderr, at most 64 KiB kept.
        var stderr: String
        /// The last non-empty stderr line, without a `pkm-convert: error: ` prefix.
        var lastLine: String {
            let line = stderr.split(separator: "\n").last.map(String.init) ?? ""
            let prefix = "pkm-convert: error: "
            return line.hasPrefix(prefix) ? String(line.dropFirst(prefix.count)) : line
        }
    }

    enum SpawnError: Error, CustomStringConvertible {
        case failed(Int32)
        var description: String {
            switch self { case .failed(let code): return String(cString: strerror(code)) }
        }
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGBUS: return "SIGBUS"
        case SIGFPE: return "SIGFPE"
        case SIGILL: return "SIGILL"
        case SIGKILL: return "SIGKILL"
        case SIGXCPU: return "SIGXCPU"
        default: return "signal \(signal)"
        }
    }

    /// Runs `executable` with `arguments`; stdout goes to /dev/null, stdin is /dev/null.
    /// The child gets `SWIFT_BACKTRACE=enable=no` (a crash report would only slow the refusal down).
    static func run(executable: String, arguments: [String], deadlineSeconds: Double) throws -> Outcome {
        var pipe: [Int32] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else { throw SpawnError.failed(errno) }
        defer { close(pipe[0]) }
        // Not inherited by other programs this process starts; the read end never blocks.
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[0], F_SETFL, O_NONBLOCK)

        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        let spawned = Result { () throws(SpawnError) -> pid_t in
            try spawn([executable] + arguments, environment: environment.map { "\($0.key)=\($0.value)" }) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
            }
        }
        close(pipe[1])
        let pid = try spawned.get()

        // Collect stderr and watch the child until it ends or the deadline passes. The child's end
        // is decided by waitpid, not by EOF on the pipe: another thread's child could hold a copy
        // of the write end for a moment.
        let start = DispatchTime.now().uptimeNanoseconds
        var captured = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        func drain() {
            while true {
                let count = read(pipe[0], &buffer, buffer.count)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return }
                if captured.count < 65536 { captured.append(contentsOf: buffer[0..<count]) }
            }
        }
        var waitStatus: Int32 = 0
        var timedOut = false
        while true {
            drain()
            let reaped = waitpid(pid, &waitStatus, WNOHANG)
            if reaped == pid { break }
            if reaped < 0, errno != EINTR { throw SpawnError.failed(errno) }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if elapsed >= deadlineSeconds {
                timedOut = true
                kill(pid, SIGKILL)
                while waitpid(pid, &waitStatus, 0) < 0, errno == EINTR {}
                break
            }
            var poller = pollfd(fd: pipe[0], events: Int16(POLLIN), revents: 0)
            _ = poll(&poller, 1, Int32(max(1, min(20, (deadlineSeconds - elapsed) * 1000))))
        }
        drain()
        let stderr = String(decoding: captured, as: UTF8.self)
        if timedOut { return Outcome(ending: .timedOut, stderr: stderr) }
        return Outcome(ending: ending(ofWaitStatus: waitStatus), stderr: stderr)
    }

    /// Starts `argv` (`argv[0]` is the program's path; no shell, no PATH search) with `environment`
    /// (`NAME=value` strings) and the descriptors `configure` sets up on 0, 1 and 2; every other
    /// descriptor of this process is closed in the child. The child starts with no blocked signals
    /// and default dispositions: the spawning thread may be a libdispatch worker, which blocks
    /// every signal, and a child inheriting that mask can hang or miss its own faults.
    static func spawn(_ argv: [String], environment: [String],
                      configure: (inout posix_spawn_file_actions_t) -> Void) throws(SpawnError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        configure(&actions)
        // Nothing else of this process leaks into the child (a caller's pipes stay closable).
        _ = pkm_spawn_close_from(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argvPointers: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var environmentPointers: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { (argvPointers + environmentPointers).forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, argv[0], &actions, &attributes, &argvPointers, &environmentPointers)
        guard status == 0 else { throw .failed(status) }
        return pid
    }

    /// How a `waitpid` status ended (WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import).
    static func ending(ofWaitStatus status: Int32) -> Ending {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
    }
}
