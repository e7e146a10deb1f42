import CBLAS
import Foundation

/// Which OpenBLAS kernels the forward pass's GEMMs run on, and the better choice when OpenBLAS
/// guessed wrong.
///
/// Why: Debian's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels from the CPUID
/// family and model. Under virtual machines that report a generic Xeon (Firecracker, some
/// clouds) it does not recognise the model and falls back to `Prescott`, its SSE3 kernels, even
/// on CPUs with AVX2/FMA or AVX-512: BERT-base's forward then takes 3.1 s instead of 0.97 s
/// (BENCHMARKS.md §2). The kernels are chosen when libopenblas loads, before `main`, from the
/// environment variable `OPENBLAS_CORETYPE`; so a program that finds the fallback sets it and
/// starts itself again (``restartWithPreferredKernelsIfNeeded(arguments:)``).
public enum BLASKernels {
    /// OpenBLAS's name of the kernels in use (`Prescott`, `Haswell`, `SkylakeX`, …).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Kernel sets OpenBLAS falls back to when it does not recognise the CPU.
    public static let fallbacks: Set<String> = ["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "unknown"]

    /// The kernel set this CPU's features allow, best first: `SkylakeX` needs AVX-512 F/BW/DQ/VL,
    /// `Haswell` AVX2 and FMA (the same tests OpenBLAS's own detection makes); nil otherwise.
    /// `flags` is the `flags` line of /proc/cpuinfo.
    public static func preferredCoreType(cpuFlags flags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    /// This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere).
    public static var cpuFlags: Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// The `OPENBLAS_CORETYPE` to start again with, or nil when the kernels in use are fine, the
    /// user chose them (`OPENBLAS_CORETYPE` set), or a restart already happened.
    public static func restartCoreType(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, environment[restartMarker] == nil,
              fallbacks.contains(coreName) else { return nil }
        return preferredCoreType(cpuFlags: cpuFlags)
    }

    /// Set in the restarted process so it never restarts twice.
    public static let restartMarker = "PKM_OPENBLAS_RESTARTED"

    /// When OpenBLAS fell back to generic kernels on a CPU with AVX2 or AVX-512, starts this
    /// program again (execve of /proc/self/exe with the same arguments) with `OPENBLAS_CORETYPE`
    /// set; returns only when no restart is needed or it failed. Call it first thing in `main`.
    public static func restartWithPreferredKernelsIfNeeded(arguments: [String] = CommandLine.arguments) {
        #if os(Linux)
        guard let core = restartCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv(restartMarker, "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        // execv returned: the restart failed; carry on with the kernels in use.
        argv.forEach { free($0) }
        #endif
    }
}
