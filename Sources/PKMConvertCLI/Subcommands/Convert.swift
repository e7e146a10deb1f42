import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMPipeline

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert between HDF5, safetensors and pkmz, keeping names and values exactly (unless --dtype narrows).")

    @Argument(help: "Source checkpoint.")
    var source: String

    @Option(name: .shortAndLong, help: "Destination file (format from the extension, or --to); a folder (or a path without extension) writes an HF model folder, as export.")
    var output: String

    @OptionGroup var out: OutputArguments
    @OptionGroup var export: ExportArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            let checkpoint = try global.load(source)
            let destination = URL(fileURLWithPath: output)
            if ModelFolder.isFolderDestination(destination) {
                // A folder (existing, or a path without extension) means `export`.
                let result = try checkpoint.export(to: destination, options: try export.options(dtype: out.dtype),
                                                   progress: WriteProgress(tensors: Console.progress("export", enabled: !global.json)))
                ExportConsole.print(result, json: global.json)
                return
            }
            var options = out.options
            options.operation = "convert --to \(try options.resolvedFormat(for: destination).rawValue) --dtype \(options.dtype.rawValue)"
            let result = try checkpoint.convert(to: destination, options: options,
                                                progress: WriteProgress(bytes: Console.byteProgress("convert", enabled: !global.json)))
            Console.diagnostics(result.diagnostics)
            if global.json { Console.printJSON(result); return }
            let ratio = result.tensorBytes > 0 ? Double(result.fileBytes) / Double(result.tensorBytes) : 0
            print("\(result.source) (\(result.sourceFormat.rawValue)) -> \(result.destination) (\(result.destinationFormat.rawValue)): "
                  + "\(Count.of(result.tensorCount, "tensor")), \(Console.bytes(result.tensorBytes)) of tensor data, file \(Console.bytes(result.fileBytes)) "
                  + String(format: "(%.4f of raw), %.2f s", ratio, result.seconds))
        }
    }
}
