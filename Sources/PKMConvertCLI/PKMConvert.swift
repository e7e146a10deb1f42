import ArgumentParser
import PKMFormats
import PKMModel

@main
struct PKMConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pkm-convert",
        abstract: "Portable, verified Product Key Memory (PKM) BERT/RoBERTa checkpoints.",
        discussion: """
        Formats: HDF5 state dicts (.h5), safetensors (.safetensors, sharded via *.index.json or an HF folder),
        and the native zstd format (.pkmz, specified in schemas/pkmz.md).
        Exit status: 0 success, 1 verification mismatch, 2 error.
        """,
        version: PKMVersion.version,
        subcommands: [Inspect.self, Convert.self, Import.self, Verify.self, Run.self, Graft.self, Usage.self, Diff.self, Tokenize.self, ProbeHDF5.self]
    )

    /// Picks OpenBLAS's AVX2/AVX-512 kernels where its CPU detection fell back to SSE3 (BLASKernels), then runs.
    static func main() {
        BLASKernels.restartWithPreferredKernelsIfNeeded()
        main(nil)
    }
}
