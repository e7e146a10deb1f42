import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run inputs through the Swift model; write outputs in the reference layout or time forward passes.")

    @Argument(help: "Checkpoint (any format or a model folder).")
    var checkpoint: String

    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and optionally attention_mask, token_type_ids).")
    var inputs: String?

    @Option(name: .long, help: "Quick single-sequence input: comma-separated token ids, e.g. 101,7592,102.")
    var inputIds: String?

    @Option(name: .long, help: "Batch and sequence of random token ids for timing, e.g. 8x128.")
    var randomInputs: String?

    @Option(name: .shortAndLong, help: "Write inputs and outputs (spec §5 layout) to this HDF5 file.")
    var output: String?

    @Option(name: .long, help: "Time this many forward passes (load time excluded) and report the median.")
    var `repeat`: Int = 0

    @Option(name: .long, help: "Config JSON, if the checkpoint carries none.")
    var config: String?

    @OptionGroup var memory: MemoryArguments
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        let given = [inputs != nil, inputIds != nil, randomInputs != nil].filter { $0 }.count
        guard given == 1 else { throw ValidationError("give exactly one of --inputs, --input-ids, --random-inputs") }
        guard `repeat` >= 0 else { throw ValidationError("--repeat must be 0 or more") }
    }

    func modelInputs() throws -> ModelInputs {
        if let inputs {
            let reader = try Checkpoints.open(URL(fileURLWithPath: inputs), limits: global.limits)
            return try ReferenceLayout.readInputs(from: reader)
        }
        if let inputIds {
            let ids = inputIds.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !ids.isEmpty, ids.allSatisfy({ $0 != nil }) else {
                throw PipelineError.invalidArgument(name: "--input-ids", reason: "'\(inputIds)' is not a comma-separated list of integers")
            }
            return try ModelInputs(batchSize: 1, sequenceLength: ids.count, inputIds: ids.compactMap { $0 })
        }
        let parts = (randomInputs ?? "").split(separator: "x").compactMap { Int($0) }
        guard parts.count == 2, parts[0] > 0, parts[1] > 0 else {
            throw PipelineError.invalidArgument(name: "--random-inputs", reason: "expected BATCHxSEQUENCE, e.g. 8x128")
        }
        var generator = SystemRandomNumberGenerator()
        let ids = (0..<(parts[0] * parts[1])).map { _ in Int.random(in: 1000..<20000, using: &generator) }
        return try ModelInputs(batchSize: parts[0], sequenceLength: parts[1], inputIds: ids)
    }

    func run() throws {
        try Console.run(json: global.json) {
            let result = try Runner.run(checkpoint: URL(fileURLWithPath: checkpoint), inputs: try modelInputs(),
                                        outputURL: output.map { URL(fileURLWithPath: $0) }, repeats: `repeat`,
                                        configURL: config.map { URL(fileURLWithPath: $0) }, limits: global.limits, memory: memory.options)
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
