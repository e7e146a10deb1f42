import ArgumentParser
import PKMFormats

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
        subcommands: [Inspect.self, Convert.self, Import.self, Verify.self, Run.self, Graft.self, Export.self, Usage.self, ProbeHDF5.self]
    )
}
