import CSystemShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A child process with a wall-clock deadline and captured stderr, spawned with `posix_spawn`
/// (package-internal: the HDF5 probe and the test runners use it).
package enum ChildProcess {
    package enum Ending: Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
    }

    package struct Outcome {
        package var ending: Ending
        /// stderr, at most 64 KiB kept.
        package var stderr: String
        /// The last non-empty stderr line.
        package var lastLine: String {
            stderr.split(separator: "\n").last.map(String.init) ?? ""
        }
    }

    package enum SpawnError: Error, CustomStringConvertible {
        case failed(Int32)
        package var description: String {
            switch self { case .failed(let code): return String(cString: strerror(code)) }
        }
    }

    package static func signalName(_ signal: Int32) -> String {
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
    /// The child gets this process's environment plus `environment`, and `SWIFT_BACKTRACE=enable=no`
    /// (a crash report would only slow the refusal down).
    package static func run(executable: String, arguments: [String], deadlineSeconds: Double,
                            environment extra: [String: String] = [:]) throws(SpawnError) -> Outcome {
        var pipe: [Int32] = [-1, -1]
        guard Glibc.pipe(&pipe) == 0 else { throw .failed(errno) }
        defer { close(pipe[0]) }
        // Not inherited by other programs this process starts; the read end never blocks.
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[0], F_SETFL, O_NONBLOCK)

        var environment = ProcessInfo.processInfo.environment.merging(extra) { _, new in new }
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
            if reaped < 0, errno != EINTR { throw .failed(errno) }
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
    package static func spawn(_ argv: [String], environment: [String],
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
    package static func ending(ofWaitStatus status: Int32) -> Ending {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
    }
}
