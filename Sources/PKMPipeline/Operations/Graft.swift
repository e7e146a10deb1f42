import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// How grafted value rows start.
public enum ValueInit: String, Sendable, Codable, CaseIterable {
    /// Normal with standard deviation V^−0.5 (XLM's initialisation).
    case normal
    /// All zeros: the grafted model then computes exactly the base model in `residual` and `after` modes.
    case zero
}

/// What to graft (`schemas/pkm-checkpoints.md` §7; CLI defaults are the paper's sizes).
public struct GraftOptions: Sendable, Codable {
    public var layers: [Int]
    public var mode: MemoryMode = .residual
    public var keyCount = 512
    public var headCount = 4
    public var knn = 32
    public var keyDimension = 256
    /// Query normalisation of the grafted memories (``queryBatchNorm`` is the batchnorm-or-none view of it).
    public var queryNorm: QueryNorm = .batchnorm
    /// Whether the grafted memories use query batchnorm.
    public var queryBatchNorm: Bool {
        get { queryNorm == .batchnorm }
        set { queryNorm = newValue ? .batchnorm : .none }
    }
    public var queryBias = true
    public var valueInit: ValueInit = .normal
    public var seed: UInt64 = 0
    public var batchNormEpsilon = 1e-5

    public init(layers: [Int]) { self.layers = layers }
}

/// One tensor created by a graft.
public struct GraftedTensor: Sendable, Codable {
    public var name: String
    public var shape: [Int]
    /// How it was initialised.
    public var initialisation: String
}

/// Result of `graft`.
public struct GraftResult: Sendable, Codable {
    public var base: String
    public var baseSHA256: String
    public var destination: String
    public var destinationFormat: CheckpointFormat
    public var options: GraftOptions
    /// Tensors copied unchanged from the base.
    public var copiedCount: Int
    public var created: [GraftedTensor]
    /// FFN tensors removed from `replace` layers.
    public var dropped: [String]
    public var fileBytes: Int
    public var seconds: Double
    public var diagnostics: [Diagnostic]
    /// The model folder written, when the destination was a folder (the graft then went through a temporary pkmz).
    public var export: ExportResult?
}

/// `graft`: adds freshly initialised product-key memories to a (memory-free) checkpoint.
public enum Grafter {
    /// The config after grafting.
    /// - Throws: ``PipelineError/invalidGraft(reason:)`` for out-of-range layers, layers that already have a
    ///   memory, or hyper-parameters that differ from the memories already present.
    public static func graftedConfig(base: ModelConfig, options: GraftOptions) throws -> ModelConfig {
        guard !options.layers.isEmpty else { throw PipelineError.invalidGraft(reason: "no layers given; use \(setting: .graftLayers, "4,8")") }
        for layer in options.layers where layer < 0 || layer >= base.layerCount {
            throw PipelineError.invalidGraft(reason: "layer \(layer) is out of range: the model has layers 0..\(base.layerCount - 1)")
        }
        var memory = MemoryConfig(layers: [], modes: [], keyCount: options.keyCount, headCount: options.headCount, knn: options.knn,
                                  keyDimension: options.keyDimension, valueDimension: base.hiddenSize, queryBatchNorm: options.queryBatchNorm,
                                  queryBias: options.queryBias, batchNormEpsilon: options.batchNormEpsilon)
        memory.queryNorm = options.queryNorm
        if let existing = base.memory {
            for layer in options.layers where existing.layers.contains(layer) {
                throw PipelineError.invalidGraft(reason: "layer \(layer) already has a memory (\(existing.mode(ofLayer: layer)?.rawValue ?? "?") mode)")
            }
            var same = existing
            same.layers = []; same.modes = []
            guard same == memory else {
                throw PipelineError.invalidGraft(reason: "the checkpoint already has memories at layers \(existing.layers) with other hyper-parameters; one config describes all memories, so graft with the same \(setting: .graftHyperParameters) options")
            }
            memory.layers = existing.layers
            memory.modes = existing.modes
        }
        for layer in options.layers {
            memory.layers.append(layer)
            memory.modes.append(options.mode)
        }
        let pairs = zip(memory.layers, memory.modes).sorted { $0.0 < $1.0 }
        memory.layers = pairs.map(\.0)
        memory.modes = pairs.map(\.1)
        var config = base
        config.memory = memory
        do {
            try config.validate()
        } catch let error as ModelError {
            throw PipelineError.invalidGraft(reason: "\(error.description)")
        }
        return config
    }

    /// The layer index when `name` is one of its feed-forward tensors.
    static func ffnLayer(of name: String) -> Int? {
        let parts = name.split(separator: ".")
        guard parts.count > 3, parts[0] == "encoder", parts[1] == "layer", let layer = Int(parts[2]) else { return nil }
        let suffix = parts.dropFirst(3).joined(separator: ".")
        let ffn = [ParameterNames.Layer.intermediate, ParameterNames.Layer.output].flatMap { [$0 + ".weight", $0 + ".bias"] }
        return ffn.contains(suffix) ? layer : nil
    }
}

extension LoadedCheckpoint {
    /// `graft`: adds freshly initialised memories (``GraftOptions``) and writes the result to `destination`, streaming:
    /// each tensor is read or generated only when the writer asks for it. A folder destination
    /// (``ModelFolder/isFolderDestination(_:)``) gets an HF model folder (``export(to:options:progress:)`` with
    /// `export`, the tokenizer files taken from this checkpoint's folder) through a temporary pkmz.
    /// - Throws: ``PipelineError`` for invalid requests or checkpoints, ``FormatError`` for I/O.
    public func graft(_ options: GraftOptions, to destination: URL, output: OutputOptions = OutputOptions(),
                      export: ExportOptions = ExportOptions(), progress: WriteProgress = WriteProgress()) throws -> GraftResult {
        if ModelFolder.isFolderDestination(destination) {
            let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-graft-\(UUID().uuidString)")
            try ModelFolder(temporary).create()
            defer { try? FileManager.default.removeItem(at: temporary) }
            var pkmz = output
            pkmz.format = .pkmz
            var result = try graft(options, to: temporary.appendingPathComponent("grafted.pkmz"), output: pkmz)
            var exportOptions = export
            exportOptions.dtype = output.dtype
            if exportOptions.tokenizerSource == nil { exportOptions.tokenizerSource = folder.url }
            let grafted = try LoadedCheckpoint(temporary.appendingPathComponent("grafted.pkmz"), options: OpenOptions(limits: self.options.limits))
            result.export = try grafted.export(to: destination, options: exportOptions, progress: progress)
            return result
        }
        let start = Date()
        let checkpoint = try resolved()
        try checkpoint.requireUsable()
        let config = try Grafter.graftedConfig(base: checkpoint.config, options: options)
        let base = url
        let d = config.hiddenSize
        let random = GraftRandom(seed: options.seed)

        // Base tensors, canonical names, minus the FFN of replace layers.
        var dropped: [String] = []
        var infos: [TensorInfo] = []
        var sources: [String: String] = [:]
        let replaced = Set(options.layers.filter { _ in options.mode == .replace })
        for entry in checkpoint.report.mapped + checkpoint.report.unexpected {
            if let layer = Grafter.ffnLayer(of: entry.canonical), replaced.contains(layer) {
                dropped.append(entry.canonical)
                continue
            }
            infos.append(TensorInfo(name: entry.canonical, dtype: entry.dtype, shape: entry.shape))
            sources[entry.canonical] = entry.source
        }
        // New memory tensors, in spec order per layer.
        var created: [GraftedTensor] = []
        // Large tensors (keys, values, query weights) are sources generated chunk by chunk inside the writer;
        // the small constant ones are whole tensors.
        var generators: [String: () throws -> TensorData] = [:]
        let h = options.headCount, n = options.keyCount, k = options.keyDimension
        let weightDtype = output.dtype.target(for: checkpoint.report.mapped.first { $0.canonical == ParameterNames.wordEmbeddings }?.dtype ?? .float32)
        for layer in options.layers.sorted() {
            let prefix = ParameterNames.layerPrefix(layer) + ParameterNames.Layer.memory + "."
            for spec in ProductKeyMemory.parameterSpecs(prefix: prefix, config: config.memory!, inputWidth: d) {
                let leaf = String(spec.name.dropFirst(prefix.count))
                let count = ShapeMath.elementCount(spec.shape) ?? 0
                let name = spec.name, shape = spec.shape
                let initialisation: String
                let make: () throws -> TensorData
                switch leaf {
                case ParameterNames.Memory.keys:
                    let bound = 1 / Float(k / 2).squareRoot()
                    initialisation = "uniform ±1/sqrt(k_dim/2) = ±\(bound)"
                    make = { .source(TensorSource(fill: GraftRandom.source { random.fillUniform(name: name, bound: bound, start: $0, into: $1) })) }
                case ParameterNames.Memory.values:
                    if options.valueInit == .zero {
                        initialisation = "zeros"
                        make = { .source(TensorSource(fill: GraftRandom.source { _, buffer in buffer.update(repeating: 0) })) }
                    } else {
                        let std = 1 / Float(d).squareRoot()
                        initialisation = "normal, std v_dim^-0.5 = \(std)"
                        make = { .source(TensorSource(fill: GraftRandom.source { random.fillNormal(name: name, std: std, start: $0, into: $1) })) }
                    }
                case ParameterNames.Memory.queryWeight, ParameterNames.Memory.queryBias:
                    let bound = 1 / Float(d).squareRoot()
                    initialisation = "uniform ±1/sqrt(hidden) = ±\(bound) (nn.Linear default)"
                    make = { .source(TensorSource(fill: GraftRandom.source { random.fillUniform(name: name, bound: bound, start: $0, into: $1) })) }
                case ParameterNames.Memory.batchNormWeight, ParameterNames.Memory.batchNormVariance,
                     ParameterNames.Memory.queryNorm + ".weight":
                    initialisation = "ones"
                    make = { .tensor(try Tensor(float32: [Float](repeating: 1, count: count), shape: shape)) }
                case ParameterNames.Memory.batchNormBatchesTracked:
                    initialisation = "0 (int64)"
                    make = { .tensor(try Tensor(int64: [0], shape: [])) }
                default:
                    initialisation = "zeros"
                    make = { .tensor(try Tensor(zeros: .float32, shape: shape)) }
                }
                let dtype: DType = leaf == ParameterNames.Memory.batchNormBatchesTracked ? .int64 : weightDtype
                infos.append(TensorInfo(name: spec.name, dtype: dtype, shape: spec.shape))
                generators[spec.name] = make
                created.append(GraftedTensor(name: spec.name, shape: spec.shape, initialisation: initialisation))
            }
        }
        let description = "graft layers \(options.layers.map(String.init).joined(separator: ",")), mode \(options.mode.rawValue), n_keys \(n), heads \(h), knn \(options.knn), k_dim \(k), query_norm \(options.queryNorm.rawValue), query_bias \(options.queryBias), value_init \(options.valueInit.rawValue), seed \(options.seed)"
        let writer = try OutputWriter(source: self, destination: destination, output: output, operation: description)
        let format = writer.format
        let digest = digest
        let metadata = ["config": String(decoding: config.encodedJSON(), as: UTF8.self)]
        let path = checkpoint.reader.url.path
        let fileBytes = try writer.write(infos, metadata: metadata, progress: progress) { info in
            if let make = generators[info.name] {
                let data = try make()
                // Sources produce float32; another output dtype is generated whole and narrowed.
                if case .tensor(let tensor) = data { return .init(data: .tensor(try tensor.converted(to: info.dtype))) }
                if info.dtype == .float32 { return .init(data: data) }
                return .init(data: .tensor(try data.materialized(info: TensorInfo(name: info.name, dtype: .float32, shape: info.shape)).converted(to: info.dtype)))
            }
            guard let source = sources[info.name] else { throw FormatError.tensorNotFound(path: path, tensor: info.name) }
            return .init(data: .tensor(try checkpoint.tensor(canonical: info.name).converted(to: info.dtype)), releasing: source)
        }
        var diagnostics = created.map { Diagnostic(.note, "created \($0.name) \($0.shape): \($0.initialisation)", topic: .createdTensor) }
        diagnostics += dropped.map { Diagnostic(.note, "dropped \($0) (replace mode has no feed-forward block)", topic: .droppedTensor) }
        return GraftResult(base: base.path, baseSHA256: try digest.hex(), destination: destination.path, destinationFormat: format, options: options,
                           copiedCount: infos.count - created.count, created: created, dropped: dropped, fileBytes: fileBytes,
                           seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
