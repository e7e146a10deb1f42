import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline

extension MemoryMode: ExpressibleByArgument {}
extension ValueInit: ExpressibleByArgument {}
extension QueryNorm: ExpressibleByArgument {}

struct Graft: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add freshly initialised product-key memories to a memory-free checkpoint (every base tensor copied unchanged).")

    @Argument(help: "Base checkpoint (any format or a model folder).")
    var base: String

    @Option(name: .shortAndLong, help: "Destination (format from the extension, or --to).")
    var output: String

    // Unconditional: `--layers -1` reaches the validation (a negative layer) instead of being taken for an option.
    @Option(name: .long, parsing: .unconditional, help: "Encoder layers to add memories to, e.g. 4,8 (counted from 0).")
    var layers: String

    @Option(name: .long, help: "replace, residual or after.")
    var mode: MemoryMode = .residual

    @Option(name: .long, parsing: .unconditional, help: "Sub-keys per half (the memory has n-keys² slots).")
    var nKeys = 512

    @Option(name: .long, parsing: .unconditional, help: "Memory heads.")
    var heads = 4

    @Option(name: .long, parsing: .unconditional, help: "Slots selected per head, at most --n-keys (default: 32).")
    var knn: Int?

    @Option(name: .long, parsing: .unconditional, help: "Query width per head (even).")
    var kDim = 256

    @Flag(name: .long, help: "List every created and dropped tensor (default: a one-line summary).")
    var verbose = false

    /// `--knn`, or its default, 32.
    var effectiveKnn: Int { knn ?? 32 }

    /// Cross-option rules, named by the flags the user typed (the library's config validation
    /// would name config fields such as `pkm.knn`).
    func validate() throws {
        for (flag, value) in [("--n-keys", nKeys), ("--heads", heads), ("--k-dim", kDim)] where value < 1 {
            throw ValidationError("\(flag) must be 1 or more, is \(value)")
        }
        guard effectiveKnn >= 1 else { throw ValidationError("--knn must be 1 or more, is \(effectiveKnn)") }
        guard effectiveKnn <= nKeys else {
            let given = knn == nil ? "--knn (default \(effectiveKnn))" : "--knn \(effectiveKnn)"
            throw ValidationError("\(given) exceeds --n-keys \(nKeys): each head picks --knn of the --n-keys sub-keys per half; pass --knn \(nKeys) or less, or raise --n-keys")
        }
        guard kDim % 2 == 0 else { throw ValidationError("--k-dim \(kDim) must be even (each query is split into two halves)") }
    }

    @Flag(name: .long, inversion: .prefixedNo, help: "BatchNorm on the queries.")
    var queryBatchnorm = true

    @Flag(name: .long, inversion: .prefixedNo, help: "Bias in the query linear.")
    var queryBias = true

    @Option(name: .long, help: "normal (std v_dim^-0.5) or zero.")
    var valueInit: ValueInit = .normal

    @Option(name: .long, help: "Seed of the initialisation.")
    var seed: UInt64 = 0


    @Option(name: .long, help: "Query normalisation: none, batchnorm or layernorm (overrides --query-batchnorm).")
    var queryNorm: QueryNorm?

    @OptionGroup var out: OutputArguments
    @OptionGroup var export: ExportArguments
    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            var options = GraftOptions(layers: try ArgumentFormats.layers(layers))
            options.mode = mode
            options.keyCount = nKeys
            options.headCount = heads
            options.knn = effectiveKnn
            options.keyDimension = kDim
            options.queryNorm = queryNorm ?? (queryBatchnorm ? .batchnorm : .none)
            options.queryBias = queryBias
            options.valueInit = valueInit
            options.seed = seed
            var output = out.options
            output.operation = "graft --layers \(options.layers.map(String.init).joined(separator: ",")) --mode \(options.mode.rawValue) --n-keys \(options.keyCount) --heads \(options.headCount) --knn \(options.knn) --k-dim \(options.keyDimension) --query-norm \(options.queryNorm.rawValue) --\(options.queryBias ? "" : "no-")query-bias --value-init \(options.valueInit.rawValue) --seed \(options.seed)"
            let destination = URL(fileURLWithPath: self.output)
            let folder = ModelFolder.isFolderDestination(destination)
            let result = try model.load(base, global)
                .graft(options, to: destination, output: output, export: try export.options(dtype: out.dtype),
                       progress: folder ? WriteProgress() : WriteProgress(bytes: Console.byteProgress("graft", enabled: !global.json)))
            if let exported = result.export {
                // A folder: the graft went through a temporary pkmz, then `export`; report as export does.
                Console.diagnostics(result.diagnostics)
                ExportConsole.print(exported, json: global.json)
                return
            }
            if global.json { Console.printJSON(result); return }
            Console.diagnostics(verbose ? result.diagnostics : GraftSummary.diagnostics(of: result))
            print("grafted \(result.options.mode.rawValue) memories at \(result.options.layers.count == 1 ? "layer" : "layers") \(result.options.layers.map(String.init).joined(separator: ",")) into \(result.base) -> \(result.destination)")
            print("  copied \(Count.of(result.copiedCount, "base tensor")) unchanged, created \(result.created.count), dropped \(result.dropped.count)")
            print("  file \(Console.bytes(result.fileBytes)), " + String(format: "%.2f s", result.seconds) + ", base sha256 \(result.baseSHA256)")
        }
    }
}

/// The one-line notes `graft` prints without `--verbose` (the per-tensor notes otherwise).
enum GraftSummary {
    static func diagnostics(of result: GraftResult) -> [Diagnostic] {
        var notes = result.diagnostics.filter { $0.topic == nil }
        let layers = result.options.layers.sorted().map(String.init).joined(separator: ",")
        if !result.created.isEmpty {
            notes.append(Diagnostic(.note, "created \(Count.of(result.created.count, "memory tensor")) at \(result.options.layers.count == 1 ? "layer" : "layers") \(layers) (keys, values, query network; --verbose lists each with its initialisation)"))
        }
        if !result.dropped.isEmpty {
            notes.append(Diagnostic(.note, "dropped \(Count.of(result.dropped.count, "feed-forward tensor")) of the replace \(result.options.layers.count == 1 ? "layer" : "layers") (--verbose lists them)"))
        }
        return notes
    }
}
