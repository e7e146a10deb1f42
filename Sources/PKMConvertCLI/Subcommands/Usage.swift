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

    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and attention_mask).")
    var inputs: String

    @Option(name: .long, help: "Config JSON, if the checkpoint carries none.")
    var config: String?

    @Option(name: .long, help: "Sequences per forward pass (memory grows with it, not with the number of inputs).")
    var batchSize: Int = UsageAnalyzer.defaultBatchSize

    @OptionGroup var memory: MemoryArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            let report = try UsageAnalyzer.run(checkpoint: URL(fileURLWithPath: checkpoint), inputs: URL(fileURLWithPath: inputs),
                                               configURL: config.map { URL(fileURLWithPath: $0) }, batchSize: batchSize,
                                               limits: global.limits, memory: memory.options, progress: Console.progress("usage", unit: "sequences"))
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
