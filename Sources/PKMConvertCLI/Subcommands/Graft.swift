import ArgumentParser
import Foundation
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

    @Option(name: .long, help: "Encoder layers to add memories to, e.g. 4,8.")
    var layers: String

    @Option(name: .long, help: "replace, residual or after.")
    var mode: MemoryMode = .residual

    @Option(name: .long, help: "Sub-keys per half (the memory has n-keys² slots).")
    var nKeys = 512

    @Option(name: .long, help: "Memory heads.")
    var heads = 4

    @Option(name: .long, help: "Slots selected per head.")
    var knn = 32

    @Option(name: .long, help: "Query width per head (even).")
    var kDim = 256

    @Flag(name: .long, inversion: .prefixedNo, help: "BatchNorm on the queries.")
    var queryBatchnorm = true

    @Flag(name: .long, inversion: .prefixedNo, help: "Bias in the query linear.")
    var queryBias = true

    @Option(name: .long, help: "normal (std v_dim^-0.5) or zero.")
    var valueInit: ValueInit = .normal

    @Option(name: .long, help: "Seed of the initialisation.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Config JSON, if the base carries none.")
    var config: String?

    @Option(name: .long, help: "Query normalisation: none, batchnorm or layernorm (overrides --query-batchnorm).")
    var queryNorm: QueryNorm?

    @OptionGroup var out: OutputArguments
    @OptionGroup var export: ExportArguments
    @OptionGroup var memory: MemoryArguments
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try Console.run(json: global.json) {
            var options = GraftOptions(layers: try GraftOptions.parseLayers(layers))
            options.mode = mode
            options.keyCount = nKeys
            options.headCount = heads
            options.knn = knn
            options.keyDimension = kDim
            options.queryNorm = queryNorm ?? (queryBatchnorm ? .batchnorm : .none)
            options.queryBias = queryBias
            options.valueInit = valueInit
            options.seed = seed
            if ExportConsole.isFolder(output) {
                // A folder means `export`: graft into a temporary pkmz, then write the HF folder from it.
                let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-graft-\(UUID().uuidString)")
                try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(at: temporary) }
                let grafted = temporary.appendingPathComponent("grafted.pkmz")
                let result = try Grafter.run(base: URL(fileURLWithPath: base), destination: grafted, options: options,
                                             configURL: config.map { URL(fileURLWithPath: $0) }, output: out.options, limits: global.limits,
                                             memory: memory.options)
                Console.diagnostics(result.diagnostics)
                var exportOptions = try export.options(dtype: out.dtype)
                let baseURL = URL(fileURLWithPath: base)
                var isDirectory: ObjCBool = false
                exportOptions.tokenizerSource = FileManager.default.fileExists(atPath: base, isDirectory: &isDirectory) && isDirectory.boolValue
                    ? baseURL : baseURL.deletingLastPathComponent()
                let exported = try Exporter.run(source: grafted, destination: URL(fileURLWithPath: output), options: exportOptions,
                                                limits: global.limits)
                ExportConsole.print(exported, json: global.json)
                return
            }
            let result = try Grafter.run(base: URL(fileURLWithPath: base), destination: URL(fileURLWithPath: output), options: options,
                                         configURL: config.map { URL(fileURLWithPath: $0) }, output: out.options, limits: global.limits, memory: memory.options,
                                         progress: Console.progress("graft", enabled: !global.json))
            if global.json { Console.printJSON(result); return }
            Console.diagnostics(result.diagnostics)
            print("grafted \(result.options.mode.rawValue) memories at layers \(result.options.layers) into \(result.base) -> \(result.destination)")
            print("  copied \(result.copiedCount) base tensors unchanged, created \(result.created.count), dropped \(result.dropped.count)")
            print("  file \(Console.bytes(result.fileBytes)), " + String(format: "%.2f s", result.seconds) + ", base sha256 \(result.baseSHA256)")
        }
    }
}
