import ArgumentParser
import Foundation
import PKMFormats
import PKMPipeline

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a checkpoint's format, tensor table, totals, metadata and config.")

    @Argument(help: "Checkpoint file, sharded index, or model folder.")
    var checkpoint: String

    @Flag(name: .long, help: "Also read every tensor, checking checksums and compressed frames.")
    var verifyData = false

    @OptionGroup var memory: MemoryArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            let summary = try Inspector.inspect(URL(fileURLWithPath: checkpoint), readData: verifyData, limits: global.limits, memory: memory.options)
            if global.json { Console.printJSON(summary); return }
            print("\(summary.path)")
            print("format: \(summary.format.rawValue)   file: \(Console.bytes(summary.fileBytes))   tensors: \(summary.tensorCount)   data: \(Console.bytes(summary.tensorBytes))")
            if summary.fileBytes > 0, summary.tensorBytes > 0 {
                print(String(format: "file / raw tensor bytes: %.4f", Double(summary.fileBytes) / Double(summary.tensorBytes)))
            }
            let dtypes = summary.dtypeTotals.map { "\($0.key): \($0.value.count) tensors, \(Console.bytes($0.value.bytes))" }.sorted()
            print("dtypes: \(dtypes.joined(separator: "; "))")
            let nameWidth = min(80, summary.tensors.map(\.name.count).max() ?? 4)
            print("")
            print("name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  dtype     shape                 bytes")
            for tensor in summary.tensors {
                let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
                print(tensor.name.padding(toLength: max(nameWidth, tensor.name.count), withPad: " ", startingAt: 0) + "  "
                      + tensor.dtype.displayName.padding(toLength: 8, withPad: " ", startingAt: 0) + "  "
                      + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + String(tensor.bytes))
            }
            if !summary.metadata.isEmpty {
                print("\nmetadata:")
                for (key, value) in summary.metadata.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
            }
            if let provenance = summary.provenance {
                print("\nprovenance: \(provenance.tool), created \(provenance.created)")
                if let file = provenance.sourceFile { print("  source: \(file) sha256 \(provenance.sourceSHA256 ?? "?")") }
                if let operation = provenance.operation { print("  operation: \(operation)") }
            }
            if let config = summary.config { print("\nconfig:\n\(config)") }
            if let memory = summary.resolvedMemory {
                let layouts = summary.memoryLayouts.sorted { $0.key < $1.key }.map { "layer \($0.key): \($0.value.rawValue)" }
                print("\nmemory as run (\(layouts.isEmpty ? "canonical" : layouts.joined(separator: ", "))):")
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                if let data = try? encoder.encode(memory) { print(String(decoding: data, as: UTF8.self)) }
            }
            if verifyData { print("\nall tensor data read and checked") }
        }
    }
}
