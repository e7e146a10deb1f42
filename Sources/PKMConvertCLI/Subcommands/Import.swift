import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMPipeline

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Map a checkpoint onto the PKM-BERT model's canonical names and write it with its config.",
        discussion: """
        Reads HDF5, safetensors (single or sharded), pkmz, or an HF model folder. Applies the aliases of the
        checkpoint spec (prefixes, legacy LayerNorm names, XLM memory names). Missing tensors and shape
        mismatches are errors; unexpected tensors are kept and reported (errors under --strict); position_ids
        buffers are ignored.
        """)

    @Argument(help: "Source checkpoint, sharded index, or model folder.")
    var source: String

    @Option(name: .shortAndLong, help: "Destination (usually .pkmz).")
    var output: String


    @Flag(name: .long, help: "Treat unexpected tensors as errors.")
    var strict = false

    @OptionGroup var out: OutputArguments
    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            var output = out.options
            output.operation = "import\(strict ? " --strict" : "")"
            let result = try model.load(source, global)
                .import(to: URL(fileURLWithPath: self.output), options: ImportOptions(strict: strict, output: output),
                        progress: WriteProgress(bytes: Console.byteProgress("import", enabled: !global.json)))
            Console.diagnostics(result.diagnostics)
            if global.json { Console.printJSON(result); return }
            let report = result.report
            print("imported \(report.checkpoint) (\(report.format.rawValue), \(report.modelType.rawValue)) -> \(result.destination)")
            print("  config: \(report.configSource)")
            if let source = report.headSource { print("  runs as \(report.architecture) (head from \(source))") }
            print("  \(Count.of(report.mapped.count, "model tensor")), \(report.unexpected.count) unexpected (kept), \(Count.of(report.ignored.count, "ignored buffer"))")
            print("  wrote \(Count.of(result.tensorCount, "tensor")), \(Console.bytes(result.fileBytes)), " + String(format: "%.2f s", result.seconds))
        }
    }
}
