import ArgumentParser
import Foundation
import PKMFormats
import PKMModel
import PKMPipeline

extension ExportMemoryLayout: ExpressibleByArgument {}
extension ExportPrefix: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "none", "": self = .none
        case "bert", "bert.": self = .bert
        case "roberta", "roberta.": self = .roberta
        default: return nil
        }
    }
}

/// The written layout of a model folder: `export`, and `convert`/`graft` into a folder (`--memory-layout` and
/// `--memory-attribute` always describe the source, in every command).
struct ExportArguments: ParsableArguments {
    @Option(name: .customLong("export-memory-layout"), help: "Memory layout written into a model folder: canonical, lucidrains or xlm.")
    var layout: ExportMemoryLayout = .canonical

    @Option(name: .customLong("export-memory-attribute"), help: "Module attribute of each memory in a model folder (default memory).")
    var attribute: String = ParameterNames.Layer.memory

    @Option(name: .long, help: "Prefix of the base model's names in a model folder: bert., roberta. or none.")
    var prefix: ExportPrefix = .none

    @Option(name: .long, help: "Shard a model folder's weights at this size, as HF does (2GB, 500MB).")
    var maxShardSize: String?

    func validate() throws { _ = try maxShardSize.map(ArgumentFormats.size) }

    func options(dtype: DTypePolicy) throws -> ExportOptions {
        var options = ExportOptions()
        options.layout = layout
        options.attribute = attribute
        options.prefix = prefix
        options.dtype = dtype
        options.maxShardBytes = try maxShardSize.map(ArgumentFormats.size)
        options.operation = ExportConsole.operation(options)
        return options
    }
}

enum ExportConsole {
    /// The provenance of an export, as the command that makes it.
    static func operation(_ options: ExportOptions) -> String {
        "export --export-memory-layout \(options.layout.rawValue) --export-memory-attribute \(options.attribute) --prefix \(options.prefix == .none ? "none" : options.prefix.rawValue) --dtype \(options.dtype.rawValue)"
    }

    static func print(_ result: ExportResult, json: Bool) {
        Console.diagnostics(result.diagnostics)
        if json { Console.printJSON(result); return }
        Swift.print("exported \(result.source) -> \(result.destination) (\(result.layout.rawValue) memory layout)")
        Swift.print("  \(result.tensorCount) tensors, \(Console.bytes(result.totalBytes)) in \(result.shards.count == 1 ? result.shards[0] : "\(result.shards.count) shards + model.safetensors.index.json")")
        if !result.tokenizerFiles.isEmpty { Swift.print("  tokenizer files: \(result.tokenizerFiles.joined(separator: ", "))") }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a Hugging Face model folder: config.json, model.safetensors (or HF shards + index), tokenizer files.",
        discussion: """
        The memory can be written in the canonical layout, as lucidrains product-key-memory modules (to_queries, norm,
        keys [H, N, 2, D]; load_state_dict(strict=True) into PKM modules attached under --export-memory-attribute), or
        with XLM's memories.{i}_in / _after names (--export-memory-layout). As in every command, --memory-layout and
        --memory-attribute describe the source. config.json keeps the source config's keys and holds the complete pkm object.
        """)

    @Argument(help: "Source checkpoint (any format or a model folder).")
    var source: String

    @Option(name: .shortAndLong, help: "Destination folder.")
    var output: String

    @Option(name: .long, help: "Storage dtype of floating-point tensors: keep, f32, f16, bf16.")
    var dtype: DTypePolicy = .keep


    @OptionGroup var export: ExportArguments
    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            let result = try model.load(source, global)
                .export(to: URL(fileURLWithPath: output), options: try export.options(dtype: dtype),
                        progress: WriteProgress(tensors: Console.progress("export", enabled: !global.json)))
            ExportConsole.print(result, json: global.json)
        }
    }
}
