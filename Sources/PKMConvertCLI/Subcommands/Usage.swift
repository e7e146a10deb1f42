import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMPipeline

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Memory usage per memory layer over inputs: usage %, KL to uniform, slots holding 50/90/99 % of the weight.")

    @Argument(help: "Checkpoint with memory layers.")
    var checkpoint: String

    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and attention_mask), e.g. a reference file.")
    var inputs: String?

    @Option(name: .long, help: "One sequence of comma-separated token ids, e.g. 101,7592,102.")
    var inputIds: String?

    @Option(name: .long, help: "BATCHxSEQUENCE random token ids drawn from the model's vocabulary, e.g. 64x128 (see --seed).")
    var randomInputs: String?

    @Option(name: .long, help: "Seed of --random-inputs.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Config JSON, if the checkpoint carries none.")
    var config: String?

    @Option(name: .long, help: "Sequences per forward pass (memory grows with it, not with the number of inputs).")
    var batchSize: Int = UsageAnalyzer.defaultBatchSize

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let given = [inputs != nil, inputIds != nil, randomInputs != nil].filter { $0 }.count
        guard given == 1 else { throw ValidationError("give exactly one of --inputs, --input-ids, --random-inputs") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be 1 or more") }
    }

    var source: InputSource {
        get throws {
            if let inputs { return .file(URL(fileURLWithPath: inputs)) }
            if let inputIds { return try .ids(inputIds) }
            return try .random(randomInputs ?? "", seed: seed)
        }
    }

    func run() throws {
        try Console.run(json: global.json) {
            let report = try UsageAnalyzer.run(checkpoint: URL(fileURLWithPath: checkpoint), source: try source,
                                               configURL: config.map { URL(fileURLWithPath: $0) }, batchSize: batchSize,
                                               limits: global.limits, progress: Console.progress("usage", unit: "sequences", enabled: !global.json),
                                               loadProgress: Console.byteProgress("load", enabled: !global.json))
            if global.json { Console.printJSON(report); return }
            print("memory usage of \(report.checkpoint) over \(report.inputs) [\(report.batchSize), \(report.sequenceLength)]")
            for layer in report.layers {
                print(String(format: "  layer %d (%@): %.2f %% of %d slots used over %d tokens; KL weights %.4f, KL counts %.4f; slots for 50/90/99 %% of weight: %d/%d/%d",
                             layer.layer, layer.mode.rawValue, layer.usagePercent, layer.slots, layer.tokens, layer.klWeights, layer.klCounts,
                             layer.slotsFor50Percent, layer.slotsFor90Percent, layer.slotsFor99Percent))
            }
        }
    }
}
