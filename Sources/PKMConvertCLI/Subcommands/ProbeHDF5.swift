import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5

/// The child side of ``HDF5Probe`` (hidden): `HDF5Probe.serveChild(path:)` opens the file exactly
/// as the parent would and exits 0, or prints the one-line refusal and exits 2; a libhdf5 crash or
/// hang kills only this process, which the parent reports.
struct ProbeHDF5: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "__probe-hdf5",
        abstract: "Read an HDF5 file in isolation (used by pkm-convert itself).",
        shouldDisplay: false)

    /// How the parent starts this subcommand: this executable and the subcommand's name.
    static var command: [String] {
        #if os(Linux)
        // Not resolved: /proc/self/exe still runs this program if its file was replaced or deleted
        // since it started (a rebuild, a package upgrade).
        let executable = "/proc/self/exe"
        #else
        let executable = Bundle.main.executablePath ?? CommandLine.arguments[0]
        #endif
        return [executable, configuration.commandName ?? "__probe-hdf5"]
    }

    @Argument(help: "HDF5 file.")
    var file: String

    func run() throws {
        let status = HDF5Probe.serveChild(path: file)
        if status != 0 { throw ExitCode(status) }
    }
}
