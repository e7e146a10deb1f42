import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
import PKMModel
import PKMPipeline
import PKMTensor
#if canImport(Glibc)
import Glibc
#endif

/// Token-id inputs of `run` and `usage`: a file's `/inputs`, ids on the command line, or seeded random ids.
struct TokenInputArguments: ParsableArguments {
    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and optionally attention_mask, token_type_ids), e.g. a reference file.")
    var inputs: String?

    // Unconditional: `--input-ids -1` reaches the validation (an id outside the vocabulary) instead of being taken for an option.
    @Option(name: .long, parsing: .unconditional, help: "One sequence of comma-separated token ids, e.g. 101,7592,102.")
    var inputIds: String?

    @Option(name: .long, help: "BATCHxSEQUENCE random token ids drawn from the model's vocabulary, e.g. 4x24 (see --seed).")
    var randomInputs: String?

    @Option(name: .long, help: "Seed of --random-inputs: the same seed and model give the same ids.")
    var seed: UInt64 = 0

    /// How many of the three were given.
    var givenCount: Int { [inputs != nil, inputIds != nil, randomInputs != nil].filter { $0 }.count }

    /// The inputs named by --inputs, --input-ids or --random-inputs.
    var source: InputSource {
        get throws {
            if let inputs { return .file(URL(fileURLWithPath: inputs)) }
            if let inputIds { return try ArgumentFormats.tokenIds(inputIds) }
            return try ArgumentFormats.randomInputs(randomInputs ?? "", seed: seed)
        }
    }
}

extension MemoryLayoutChoice: ExpressibleByArgument {}

/// How a command reads its model: `--config`, `--memory-layout` and `--memory-attribute` (every command that
/// reads a model; they always describe the source).
struct ModelArguments: ParsableArguments {
    @Option(name: .long, help: "Config JSON (otherwise the file's own config, then config.json beside it).")
    var config: String?

    @Option(name: .long, help: "Memory layout: auto (detect from names and shapes), xlm, lucidrains or lingua (Meta).")
    var memoryLayout: MemoryLayoutChoice = .auto

    @Option(name: .long, help: "Module attribute holding the memory under encoder.layer.{i}. (besides memory, pkm, mem).")
    var memoryAttribute: String?

    var options: MemoryImportOptions { MemoryImportOptions(layout: memoryLayout, attribute: memoryAttribute) }

    /// Opens the checkpoint at `path` once (with `global`'s limits), to hand to the library's operations.
    func load(_ path: String, _ global: GlobalOptions, tokenizer: String? = nil) throws -> LoadedCheckpoint {
        try global.load(path, config: config, tokenizer: tokenizer, memory: self)
    }
}

/// Text inputs of `run` and `usage`: a text file, its tokenizer, truncation.
struct TextArguments: ParsableArguments {
    @Option(name: .long, help: "A text file: one sequence per non-empty line, streamed in batches (any size).")
    var textFile: String?

    @Option(name: .long, help: "tokenizer.json or a tokenizer folder (default: carried in the checkpoint, else beside it).")
    var tokenizer: String?

    @Option(name: .long, help: "Truncate each text to this many tokens (default: the tokenizer's truncation, else the model's positions).")
    var maxLength: Int?

    func validate() throws {
        if let maxLength, maxLength < 2 { throw ValidationError("--max-length must be 2 or more") }
    }
}
