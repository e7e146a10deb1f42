import ArgumentParser
import Foundation
import PKMFormats
#if canImport(Glibc)
import Glibc
#endif

/// The child side of ``HDF5Probe`` (hidden): opens an HDF5 file exactly as the parent would, and
/// with `--data` reads every tensor, then exits 0. A refusal prints the usual one-line error and
/// exits 2; a libhdf5 crash or hang kills only this process, which the parent reports.
struct ProbeHDF5: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: HDF5Probe.subcommand,
        abstract: "Read an HDF5 file in isolation (used by pkm-convert itself).",
        shouldDisplay: false)

    /// This executable, which implements the subcommand.
    static var executable: URL {
        #if os(Linux)
        // Not resolved: /proc/self/exe still runs this program if its file was replaced or deleted
        // since it started (a rebuild, a package upgrade).
        return URL(fileURLWithPath: "/proc/self/exe")
        #else
        return Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        #endif
    }

    @Argument(help: "HDF5 file.")
    var file: String

    @Flag(name: .long, help: "Also read every tensor.")
    var data = false

    @Option(name: .long, help: "The process id of the pkm-convert that started this probe.")
    var parent: Int32?

    /// The reader limits arrive as the usual `--max-…` flags.
    @OptionGroup var global: GlobalOptions

    /// Sets RLIMIT_AS to the current virtual size plus `extra` bytes (Linux; elsewhere a no-op).
    static func limitAddressSpace(extra: Int) {
        #if os(Linux)
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = statm.split(separator: " ").first.flatMap({ Int($0) }) else { return }
        let current = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        let (total, overflow) = current.addingReportingOverflow(extra)
        guard !overflow else { return }
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = min(limit.rlim_cur, rlim_t(total))   // never above the inherited limit
        _ = setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &limit)
        #endif
    }

    func run() throws {
        HDF5Probe.bindToParent(parent)
        // Deliberately no probe here: this process is the one that may crash.
        var limits = global.limits
        limits.hdf5Probe = nil
        do {
            let reader = try HDF5Reader(url: URL(fileURLWithPath: file), limits: limits)
            if data {
                // libhdf5 can allocate without bound while decoding damaged chunk indexes (one
                // regression input grows by 500 MB/s until the OOM killer ends it): cap this process
                // at what it holds now, plus twice the largest declared tensor, plus 512 MiB.
                let largest = reader.tensorInfos.map(\.byteCount).max() ?? 0
                Self.limitAddressSpace(extra: 2 * largest + (512 << 20))
                for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
            }
        } catch {
            Console.error(String(describing: error))
            throw ExitCode(HDF5Probe.refusedStatus)
        }
    }
}
