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

    @OptionGroup var tokens: TokenInputArguments


    @Option(name: .long, help: "Sequences per forward pass (memory grows with it, not with the number of inputs).")
    var batchSize: Int = UsageOptions().batchSize




    @Option(name: .long, help: "Also draw the sorted slot-weight curve and per-head usage of every memory layer as an SVG file.")
    var plot: String?

    @OptionGroup var corpus: TextArguments
    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let given = tokens.givenCount + (corpus.textFile != nil ? 1 : 0)
        guard given == 1 else { throw ValidationError("give exactly one of --inputs, --input-ids, --random-inputs, --text-file") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be 1 or more") }
        if let plot, !plot.lowercased().hasSuffix(".svg") { throw ValidationError("--plot writes an SVG file: name it FILE.svg") }
    }


    func run() throws {
        try Console.run(json: global.json) {
            let report: UsageReport
            let checkpoint = try model.load(self.checkpoint, global, tokenizer: corpus.tokenizer)
            let options = UsageOptions(batchSize: batchSize, maxLength: corpus.maxLength)
            if let textFile = corpus.textFile {
                report = try checkpoint.usage(textFile: URL(fileURLWithPath: textFile), options: options,
                                         progress: Console.corpusProgress("usage", enabled: !global.json))
            } else {
                report = try checkpoint.usage(try tokens.source, options: options,
                                         progress: Console.progress("usage", unit: "sequences", enabled: !global.json),
                                         loadProgress: Console.byteProgress("load", enabled: !global.json))
            }
            if let plot {
                try AtomicOutputFile.write(to: URL(fileURLWithPath: plot)) { try $0.write(Data(UsagePlot.svg(report).utf8)) }
            }
            if global.json { Console.printJSON(report); return }
            print("memory usage of \(report.checkpoint) over \(report.inputs) [\(report.batchSize), \(report.sequenceLength)]")
            for layer in report.layers {
                print(String(format: "  layer %d (%@): %.2f %% of %d slots used over %d tokens; KL weights %.4f, KL counts %.4f; slots for 50/90/99 %% of weight: %d/%d/%d",
                             layer.layer, layer.mode.rawValue, layer.usagePercent, layer.slots, layer.tokens, layer.klWeights, layer.klCounts,
                             layer.slotsFor50Percent, layer.slotsFor90Percent, layer.slotsFor99Percent))
                print("    per head: " + layer.headUsagePercent.enumerated().map { String(format: "head %d %.2f %%", $0.offset, $0.element) }.joined(separator: ", "))
            }
            if let plot { print("  plot written to \(plot)") }
        }
    }
}
