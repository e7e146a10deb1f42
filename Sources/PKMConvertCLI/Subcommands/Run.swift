import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run inputs through the Swift model; write outputs in the reference layout or time forward passes.",
        discussion: "run CHECKPOINT --random-inputs 4x24 --seed 0 -o base.h5 writes a reference file (spec §5: /inputs and /outputs) of the model's own outputs, for verify --reference and usage --inputs.")

    @Argument(help: "Checkpoint (any format or a model folder).")
    var checkpoint: String

    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and optionally attention_mask, token_type_ids).")
    var inputs: String?

    @Option(name: .long, help: "Quick single-sequence input: comma-separated token ids, e.g. 101,7592,102.")
    var inputIds: String?

    @Option(name: .long, help: "BATCHxSEQUENCE random token ids drawn from the model's vocabulary, e.g. 4x24 (see --seed).")
    var randomInputs: String?

    @Option(name: .long, help: "Seed of --random-inputs: the same seed and model give the same ids.")
    var seed: UInt64 = 0

    @Option(name: .shortAndLong, help: "Write inputs and outputs (spec §5 layout) to this HDF5 file.")
    var output: String?

    @Option(name: .long, help: "Time this many forward passes (load time excluded) and report the median.")
    var `repeat`: Int = 0

    @Option(name: .long, help: "Config JSON, if the checkpoint carries none.")
    var config: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let given = [inputs != nil, inputIds != nil, randomInputs != nil].filter { $0 }.count
        guard given == 1 else { throw ValidationError("give exactly one of --inputs, --input-ids, --random-inputs") }
        guard `repeat` >= 0 else { throw ValidationError("--repeat must be 0 or more") }
    }

    /// The inputs named by --inputs, --input-ids or --random-inputs.
    var source: InputSource {
        get throws {
            if let inputs { return .file(URL(fileURLWithPath: inputs)) }
            if let inputIds { return try .ids(inputIds) }
            return try .random(randomInputs ?? "", seed: seed)
        }
    }

    func run() throws {
        try Console.run(json: global.json) {
            let result = try Runner.run(checkpoint: URL(fileURLWithPath: checkpoint), source: try source,
                                        outputURL: output.map { URL(fileURLWithPath: $0) }, repeats: `repeat`,
                                        configURL: config.map { URL(fileURLWithPath: $0) }, limits: global.limits,
                                        loadProgress: Console.byteProgress("load", enabled: !global.json))
            if global.json { Console.printJSON(result); return }
            print("ran \(result.checkpoint): batch \(result.batchSize), sequence \(result.sequenceLength), hidden \(result.hiddenSize)"
                  + String(format: " (load %.2f s)", result.loadSeconds))
            for (b, row) in result.firstTokenPreview.enumerated() {
                print("  sequence \(b) token 0: " + row.map { String(format: "%.5f", $0) }.joined(separator: " ") + " …")
            }
            if let output = result.output { print("  outputs written to \(output)") }
            if let timing = result.timing {
                print(String(format: "  forward: median %.4f s over %d runs (min %.4f s), %.0f tokens/s, %d threads",
                             timing.medianSeconds, timing.repeats, timing.minimumSeconds, timing.tokensPerSecond, timing.threads))
                let parts = timing.componentSeconds.sorted { $0.value > $1.value }.map { String(format: "%@ %.4f s", $0.key, $0.value) }
                print("  per forward: " + parts.joined(separator: ", "))
            }
        }
    }
}
