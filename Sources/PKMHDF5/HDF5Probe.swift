import CSystemShims
import Foundation
import PKMFormats
#if canImport(Glibc)
import Glibc
#endif

/// Running ``HDF5Probe`` (its settings are declared in `PKMFormats`): the parent's vetting and the
/// child's side.
///
/// Why a child process: libhdf5 can crash, loop or corrupt its heap on damaged metadata — in the
/// global heap behind variable-length string attributes, in link and attribute table cleanup, on
/// error paths — before our validation ever sees a value (RELIABILITY.md §3). No in-process check
/// can prevent that: the public API gives no raw access to that metadata, and a signal handler
/// cannot restore libhdf5's state. So the file is first read by a child (spawned with
/// `posix_spawn`, never `fork`, since this process is multi-threaded), which opens it with
/// ``HDF5Reader`` exactly as this process would, and in ``HDF5Probe/Depth/data`` mode also reads
/// every tensor. Only when the child exits 0 does this process open the file itself.
///
/// The child is `command + [path]`; the rest of the request (depth, limits, the parent's pid)
/// travels as JSON in the environment variable ``HDF5Probe/requestVariable``, so the program that
/// serves it needs no knowledge of the request's fields: it calls ``HDF5Probe/serveChild(path:)``.
///
/// Cost: one extra process start and metadata walk (a few milliseconds for real checkpoints); in
/// data mode one extra read of the data, mostly from the page cache afterwards.
extension HDF5Probe {
    /// The environment variable carrying the request to the child.
    public static let requestVariable = "PKM_HDF5_PROBE_REQUEST"

    /// Exit status of a child that refused the file with a typed error (its one-line message is
    /// the last line on stderr). Any other non-zero status, or a signal, means the child did not finish.
    public static let refusedStatus: Int32 = 2

    /// What the child is asked to do.
    struct Request: Codable, Equatable {
        var depth: Depth
        var parent: Int32
        var maxHeaderBytes: Int
        var maxTotalBytes: Int
        var maxTensorCount: Int
        var maxRank: Int

        init(depth: Depth, parent: Int32, limits: ReaderLimits) {
            self.depth = depth
            self.parent = parent
            maxHeaderBytes = limits.maxHeaderBytes
            maxTotalBytes = limits.maxTotalBytes
            maxTensorCount = limits.maxTensorCount
            maxRank = limits.maxRank
        }

        /// The limits the child reads with: the parent's (it reads without a probe of its own: it is the
        /// process that may crash).
        var limits: ReaderLimits {
            var limits = ReaderLimits()
            limits.maxHeaderBytes = maxHeaderBytes
            limits.maxTotalBytes = maxTotalBytes
            limits.maxTensorCount = maxTensorCount
            limits.maxRank = maxRank
            return limits
        }
    }

    /// The request for `limits`, as the child's environment entry.
    func requestEnvironment(limits: ReaderLimits) -> [String: String] {
        let request = Request(depth: depth, parent: getpid(), limits: limits)
        let json = (try? JSONEncoder().encode(request)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return [Self.requestVariable: json]
    }

    /// Runs the child on `path`; returns when it read the file cleanly.
    /// - Throws: ``FormatError/isolatedReadFailed(path:reason:)`` when the child refused the file
    ///   or crashed; ``FormatError/isolatedReadTimedOut(path:seconds:)`` when it was killed at the
    ///   deadline; ``FormatError/isolatedReaderUnavailable(path:command:message:)`` when it could
    ///   not be started.
    func vet(path: String, fileSize: Int, limits: ReaderLimits) throws(FormatError) {
        let seconds = deadline(fileSize: fileSize)
        guard let program = command.first else {
            throw .isolatedReaderUnavailable(path: path, command: "(empty command)", message: "HDF5Probe.command is empty")
        }
        let outcome: ChildProcess.Outcome
        do {
            outcome = try ChildProcess.run(executable: program, arguments: Array(command.dropFirst()) + [path],
                                           deadlineSeconds: seconds, environment: requestEnvironment(limits: limits))
        } catch {
            throw .isolatedReaderUnavailable(path: path, command: command.joined(separator: " "), message: error.description)
        }
        switch outcome.ending {
        case .exited(0):
            return
        case .exited(Self.refusedStatus) where Self.limitRefusal(inChildOutput: outcome.stderr, path: path) != nil:
            // A limit the child hit comes back as the same typed error this process would throw, so the caller
            // names its own way of raising it.
            throw Self.limitRefusal(inChildOutput: outcome.stderr, path: path)!
        case .exited(Self.refusedStatus) where !outcome.lastLine.isEmpty && Self.memoryCap(inChildOutput: outcome.lastLine) == nil:
            throw .isolatedReadFailed(path: path, reason: outcome.lastLine)
        case .exited(let status):
            throw .isolatedReadFailed(
                path: path, reason: "the isolated HDF5 reader ended with status \(status)\(outcome.lastLine.isEmpty ? "" : " (\(outcome.lastLine))"); the file is damaged or not an HDF5 checkpoint")
        case .signalled(let signal):
            throw .isolatedReadFailed(
                path: path, reason: "the isolated HDF5 reader crashed (signal \(signal), \(ChildProcess.signalName(signal))) on this file\(Self.capExplanation(Self.memoryCap(inChildOutput: outcome.stderr)) + (Self.memoryCap(inChildOutput: outcome.stderr) == nil ? ": libhdf5 cannot read it safely, it is damaged" : "")); re-export it (nothing was read in this process)")
        case .timedOut:
            if let cap = Self.memoryCap(inChildOutput: outcome.stderr) {
                throw .isolatedReadFailed(path: path, reason: "the isolated HDF5 reader did not finish within \(String(format: "%g", seconds)) s (killed) while reading tensor data under its memory cap of \(cap >> 20) MiB: libhdf5 either loops on damaged chunks or is stuck after exhausting the cap; re-export the file (nothing was read in this process)")
            }
            throw .isolatedReadTimedOut(path: path, seconds: seconds)
        }
    }

    /// The child's side: reads `path` as the request in ``requestVariable`` asks, and returns the
    /// exit status the process must end with (0 read cleanly, ``refusedStatus`` refused; the
    /// refusal's one-line message is written to stderr). A libhdf5 crash or hang ends only this
    /// process, which the parent reports.
    ///
    /// First of all the child binds itself to its parent: it is killed if the parent dies (a
    /// SIGKILLed parent must not leave a probe spinning in a libhdf5 loop), and exits at once if
    /// the parent is already gone. (PR_SET_PDEATHSIG fires when the spawning *thread* ends; the
    /// parent waits for the child on that thread, so the child always ends first.)
    public static func serveChild(path: String) -> Int32 {
        _ = pkm_die_with_parent()
        let environment = ProcessInfo.processInfo.environment[requestVariable]
        guard let text = environment, let request = try? JSONDecoder().decode(Request.self, from: Data(text.utf8)) else {
            FileHandle.standardError.write(Data("\(path): the HDF5 probe was started without a valid \(requestVariable) request\n".utf8))
            return refusedStatus
        }
        if getppid() != request.parent { return 3 }
        do {
            let reader = try HDF5Reader(url: URL(fileURLWithPath: path), limits: request.limits)
            if request.depth == .data {
                // libhdf5 can allocate without bound while decoding damaged chunk indexes (one
                // regression input grows by 500 MB/s until the OOM killer ends it): cap this process
                // at what it holds now, plus twice the largest declared tensor, plus 512 MiB.
                let largest = reader.tensorInfos.map(\.byteCount).max() ?? 0
                if let cap = limitAddressSpace(extra: 2 * largest + (512 << 20)) {
                    // Read by the parent when this process dies or hangs, to say what the cap was.
                    FileHandle.standardError.write(Data("\(memoryCapMarker)\(cap)\n".utf8))
                }
                for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
            }
            return 0
        } catch {
            if let refusal = LimitRefusal(error), let json = try? JSONEncoder().encode(refusal) {
                FileHandle.standardError.write(Data(limitMarker.utf8) + json + Data("\n".utf8))
            }
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            return refusedStatus
        }
    }

    /// The stderr line the child writes before refusing a file for a reader limit: the refusal as JSON.
    static let limitMarker = "pkm-convert probe: limit exceeded="

    /// A refusal for a reader limit, as it crosses from the child to the parent.
    struct LimitRefusal: Codable {
        var limit: String
        var value: Int
        var maximum: Int
        /// The tensor and stored bytes of an amplification refusal.
        var tensor: String?
        var stored: Int?

        init?(_ error: Error) {
            switch error as? FormatError {
            case .limitExceeded(_, let limit, let value, let maximum)?:
                self.limit = limit.propertyName; self.value = value; self.maximum = maximum
            case .amplificationExceeded(_, let tensor, let logical, let stored, let maximum)?:
                limit = ReaderLimit.amplifiedBytes.propertyName; value = logical; self.maximum = maximum
                self.tensor = tensor; self.stored = stored
            default:
                return nil
            }
        }

        /// The typed error the child threw, for the file at `path`.
        func error(path: String) -> FormatError? {
            guard let kind = ReaderLimit.allCases.first(where: { $0.propertyName == limit }) else { return nil }
            if kind == .amplifiedBytes, let tensor, let stored {
                return .amplificationExceeded(path: path, tensor: tensor, logicalBytes: value, storedBytes: stored, maximum: maximum)
            }
            return .limitExceeded(path: path, limit: kind, value: value, maximum: maximum)
        }
    }

    /// The limit error the child reported, if it refused for one.
    static func limitRefusal(inChildOutput text: String, path: String) -> FormatError? {
        guard let range = text.range(of: limitMarker) else { return nil }
        let json = text[range.upperBound...].prefix { $0 != "\n" }
        return (try? JSONDecoder().decode(LimitRefusal.self, from: Data(json.utf8)))?.error(path: path)
    }

    /// The stderr line the child writes with its address-space cap, before reading data.
    static let memoryCapMarker = "pkm-convert probe: address space capped at bytes="

    /// The cap the child reported, if it got that far.
    static func memoryCap(inChildOutput text: String) -> Int? {
        guard let range = text.range(of: memoryCapMarker) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    /// What a cap means, for messages.
    static func capExplanation(_ cap: Int?) -> String {
        guard let cap else { return "" }
        return "; it was reading tensor data under its memory cap of \(cap >> 20) MiB (its own size + 2 × the largest tensor + 512 MiB), so libhdf5 most likely exhausted that cap: the data decompresses to more than the file declares, or libhdf5 allocates without bound on damaged chunks"
    }

    /// Sets RLIMIT_AS to the current virtual size plus `extra` bytes (Linux; elsewhere a no-op).
    /// - Returns: the cap set, or nil when none was.
    @discardableResult
    static func limitAddressSpace(extra: Int) -> Int? {
        #if os(Linux)
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = statm.split(separator: " ").first.flatMap({ Int($0) }) else { return nil }
        let current = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        let (total, overflow) = current.addingReportingOverflow(extra)
        guard !overflow else { return nil }
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { return nil }
        limit.rlim_cur = min(limit.rlim_cur, rlim_t(total))   // never above the inherited limit
        guard setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { return nil }
        return Int(clamping: limit.rlim_cur)
        #else
        return nil
        #endif
    }
}
