import ArgumentParser
import Foundation
import PKMFormats
import PKMModel
import PKMPipeline

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarise a checkpoint: format, tensors, bytes, parameters per group, dtypes, config, provenance.",
        discussion: "The tensor table and the full config are printed with --tensors; --json always holds everything.")

    @Argument(help: "Checkpoint file, sharded index, or model folder.")
    var checkpoint: String

    @Flag(name: [.customLong("tensors"), .customLong("full")], help: "Also print the tensor table, all metadata and the full config.")
    var tensors = false

    @Flag(name: .long, help: "Also read every tensor, checking checksums and compressed frames.")
    var verifyData = false

    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            let summary = try model.load(checkpoint, global).inspect(options: InspectOptions(readData: verifyData))
            if global.json { Console.printJSON(summary); return }
            Console.show("\(summary.path)")
            var sizes = "format: \(summary.format.rawValue)   file: \(Console.bytes(summary.fileBytes))   \(Count.of(summary.tensorCount, "tensor"))   data: \(Console.bytes(summary.tensorBytes))"
            if summary.fileBytes > 0, summary.tensorBytes > 0 {
                sizes += String(format: " (file / raw %.4f)", Double(summary.fileBytes) / Double(summary.tensorBytes))
            }
            Console.show(sizes)
            let p = summary.parameters
            Console.show("parameters: \(Console.number(p.total)) (embeddings \(Console.number(p.embeddings)), encoder \(Console.number(p.encoder)), "
                  + "memories \(Console.number(p.memories)), other \(Console.number(p.other)))")
            let dtypes = summary.dtypeTotals.sorted { $0.value.bytes > $1.value.bytes }
                .map { "\($0.key) \(Count.of($0.value.count, "tensor")), \(Console.bytes($0.value.bytes))" }
            Console.show("dtypes: \(dtypes.isEmpty ? "none" : dtypes.joined(separator: "; "))")
            if let config = summary.config {
                Console.show("config: \(Self.configSummary(config))" + (summary.configSource.map { " (from \($0))" } ?? ""))
            } else {
                Console.show("config: none (import needs one: --config FILE, or config.json beside the checkpoint)")
            }
            if let runsAs = summary.runsAs {
                Console.show("runs as: \(runsAs)" + (summary.headSource.map { " (head from \($0))" } ?? " (no task head)"))
            }
            if let provenance = summary.provenance {
                Console.show("provenance: \(provenance.tool), created \(provenance.created)"
                      + (provenance.operation.map { ", operation: \($0)" } ?? ""))
                if let file = provenance.sourceFile { Console.show("  source: \(file) sha256 \(provenance.sourceSHA256 ?? "?")") }
            }
            if !summary.metadata.isEmpty {
                Console.show("metadata:")
                for (key, value) in summary.metadata.sorted(by: { $0.key < $1.key }) {
                    let oneLine = value.replacingOccurrences(of: "\n", with: " ")
                    Console.show("  \(key): " + (tensors || oneLine.count <= 100 ? oneLine : String(oneLine.prefix(97)) + "…"))
                }
            }
            if tensors {
                let nameWidth = min(80, summary.tensors.map(\.name.count).max() ?? 4)
                Console.show("")
                Console.show("name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  dtype     shape                       bytes")
                for tensor in summary.tensors {
                    let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
                    let size = Console.bytes(tensor.bytes)
                    Console.show(tensor.name.padding(toLength: max(nameWidth, tensor.name.count), withPad: " ", startingAt: 0) + "  "
                          + tensor.dtype.displayName.padding(toLength: 8, withPad: " ", startingAt: 0) + "  "
                          + shape.padding(toLength: 20, withPad: " ", startingAt: 0) + "  "
                          + String(repeating: " ", count: max(0, 10 - size.count)) + size)
                }
                if let config = summary.config { Console.show("\nconfig:\n\(config)") }
                if let memory = summary.resolvedMemory {
                    let layouts = summary.memoryLayouts.sorted { $0.key < $1.key }.map { "layer \($0.key): \($0.value.rawValue)" }
                    Console.show("\nmemory as run (\(layouts.isEmpty ? "canonical" : layouts.joined(separator: ", "))):")
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    if let data = try? encoder.encode(memory) { Console.show(String(decoding: data, as: UTF8.self)) }
                }
            } else {
                if !summary.memoryLayouts.isEmpty {
                    Console.show("memory layouts: " + summary.memoryLayouts.sorted { $0.key < $1.key }.map { "layer \($0.key): \($0.value.rawValue)" }.joined(separator: ", "))
                }
                Console.show("(tensor table and full config: --tensors; everything: --json)")
            }
            if verifyData { print("all tensor data read and checked") }
        }
    }

    /// One line: `bert, 2 layers, hidden 32, …; memories: residual at 1, n_keys 16 (256 slots), …`.
    static func configSummary(_ json: String) -> String {
        guard let config = try? ModelConfig.decode(json: Data(json.utf8)) else {
            return "present but not a valid model config (see --tensors or --json)"
        }
        var text = "\(config.modelType.rawValue), \(Count.of(config.layerCount, "layer")), hidden \(config.hiddenSize), "
            + "\(Count.of(config.attentionHeadCount, "attention head")), intermediate \(config.intermediateSize), "
            + "vocabulary \(Console.number(config.vocabSize)), \(Console.number(config.maxPositionEmbeddings)) positions"
        if let memory = config.memory {
            let placements = zip(memory.layers, memory.modes).map { "\($0.1.rawValue) at \($0.0)" }.joined(separator: ", ")
            text += "; memories: \(placements); n_keys \(memory.keyCount) (\(Console.number(memory.slotCount)) slots), "
                + "\(Count.of(memory.headCount, "head")), knn \(memory.knn), k_dim \(memory.keyDimension)"
        } else {
            text += "; no memories"
        }
        return text
    }
}
