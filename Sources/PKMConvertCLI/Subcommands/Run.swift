import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run inputs through the Swift model; write outputs in the reference layout or time forward passes.",
        discussion: "run CHECKPOINT --random-inputs 4x24 --seed 0 -o base.h5 writes a reference file (schemas/pkm-checkpoints.md §5: /inputs and /outputs) of the model's own outputs, for verify --reference and usage --inputs.")

    @Argument(help: "Checkpoint (any format or a model folder).")
    var checkpoint: String

    @OptionGroup var tokens: TokenInputArguments

    @Option(name: .long, help: "Text to run (repeat for several sequences); tokenized with the checkpoint's tokenizer.")
    var text: [String] = []

    @Option(name: .long, help: "A second sequence encoded with every --text ([CLS] text [SEP] pair [SEP]); for question answering the text is the question and the pair the context.")
    var pair: String?



    @Option(name: .long, help: "Sequences per forward pass for --text/--text-file (each padded to its batch's longest).")
    var batchSize: Int = 8


    @Option(name: .shortAndLong, help: "Write inputs and outputs (schemas/pkm-checkpoints.md §5 layout) to this HDF5 file.")
    var output: String?

    @Option(name: .long, help: "Time this many forward passes (load time excluded) and report the median.")
    var `repeat`: Int = 0


    @OptionGroup var corpus: TextArguments
    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let given = tokens.givenCount + (!text.isEmpty || corpus.textFile != nil ? 1 : 0)
        guard given == 1 else { throw ValidationError("give exactly one of --inputs, --input-ids, --random-inputs, --text/--text-file") }
        guard `repeat` >= 0 else { throw ValidationError("--repeat must be 0 or more") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be 1 or more") }
        if pair != nil, text.isEmpty, corpus.textFile == nil { throw ValidationError("--pair goes with --text or --text-file") }
        if (!text.isEmpty || corpus.textFile != nil), `repeat` > 0 { throw ValidationError("--repeat times token-id inputs; text runs report their own tokens/s") }
    }

    /// The inputs named by --inputs, --input-ids or --random-inputs.

    func runText() throws {
        try Console.run(json: global.json) {
            var texts = text
            if let textFile = corpus.textFile { texts += try TextLines.all(URL(fileURLWithPath: textFile)) }
            let result = try model.load(checkpoint, global, tokenizer: corpus.tokenizer)
                .run(texts: texts, options: TextOptions(batchSize: batchSize, maxLength: corpus.maxLength, outputURL: output.map { URL(fileURLWithPath: $0) },
                                                        pair: pair))
            if global.json { Console.printJSON(result); return }
            print("ran \(result.checkpoint) on \(Console.number(result.sequences.count)) \(result.sequences.count == 1 ? "sequence" : "sequences"), "
                  + "\(Console.number(result.tokens)) tokens (tokenizer: \(result.tokenizer)); "
                  + String(format: "%.2f s, %.0f tokens/s, batches of %d", result.seconds, result.tokensPerSecond, result.batchSize))
            for (index, sequence) in result.sequences.prefix(20).enumerated() {
                let shown = sequence.tokens.count > 16 ? sequence.tokens.prefix(16).joined(separator: " ") + " …" : sequence.tokens.joined(separator: " ")
                print("  \(index): \(sequence.ids.count) tokens [\(shown)]; pooled norm " + String(format: "%.4f", sequence.pooledNorm)
                      + ", first values " + sequence.pooledFirstValues.prefix(4).map { String(format: "%.4f", $0) }.joined(separator: " "))
                if let head = sequence.head { for line in Self.describe(head) { Console.show("     \(line)") } }
            }
            if result.sequences.count > 20 { print("  … \(result.sequences.count - 20) more (see --json)") }
            if let output = result.output { print("  outputs written to \(output)") }
        }
    }

    func run() throws {
        if !text.isEmpty || corpus.textFile != nil { return try runText() }
        try Console.run(json: global.json) {
            let source = try tokens.source
            let result = try model.load(checkpoint, global)
                .run(source, options: RunOptions(outputURL: output.map { URL(fileURLWithPath: $0) }, repeats: `repeat`),
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

    /// What a head says, as lines: fill-mask candidates, the label, per-token labels, the answer span.
    static func describe(_ head: HeadReading) -> [String] {
        func candidates(_ list: [HeadReading.Candidate]) -> String {
            list.map { "\($0.label) " + String(format: "%.3f", $0.probability) }.joined(separator: ", ")
        }
        var lines: [String] = []
        for masked in head.masked ?? [] { lines.append("mask at token \(masked.position): \(candidates(masked.candidates))") }
        if let labels = head.labels { lines.append("label: \(candidates(labels))") }
        if let tokenLabels = head.tokenLabels { lines.append("token labels: \(tokenLabels.joined(separator: " "))") }
        if let answer = head.answer {
            lines.append("answer: tokens \(answer.start)…\(answer.end) [\(answer.tokens.joined(separator: " "))], score " + String(format: "%.3f", answer.score))
        }
        return lines
    }
}
