import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// A checkpoint opened, its config resolved and its names mapped onto the model.
///
/// Tensor data is read lazily through the reader, so opening a large checkpoint is cheap.
public final class ResolvedCheckpoint: @unchecked Sendable {
    /// The underlying reader.
    public let reader: any CheckpointReader
    /// The validated config.
    public let config: ModelConfig
    /// The mapping report.
    public let report: MappingReport
    /// The config JSON as found (before the memory fields were completed), so exports keep its other keys.
    public let sourceConfigJSON: Data
    private let sourceByCanonical: [String: MappedTensor]

    /// Resolves the config of an open checkpoint (`schemas/pkm-checkpoints.md` §2 order: `configURL`; the file's own `config`;
    /// `config.json` beside `location`) and maps its tensor names (`schemas/pkm-checkpoints.md` §6 and the peer layouts of `memory`).
    /// Usually reached through ``LoadedCheckpoint/resolved()``.
    /// - Throws: ``PipelineError`` for config problems and refused memories. Mapping problems are recorded in
    ///   ``report``; call ``requireUsable(strict:)`` to turn them into an error.
    public init(reader: any CheckpointReader, location: URL, configURL: URL? = nil, maxHeaderBytes: Int = ReaderLimits().maxHeaderBytes,
                memory memoryOptions: MemoryImportOptions = MemoryImportOptions()) throws {
        self.reader = reader
        let url = location
        let (configData, configSource) = try ResolvedCheckpoint.findConfig(checkpoint: url, reader: reader, explicit: configURL,
                                                                           maxBytes: maxHeaderBytes)
        var config: ModelConfig
        do {
            config = try ModelConfig.decode(json: configData, validating: false)
        } catch let error as ModelError {
            throw PipelineError.invalidConfig(source: configSource, underlying: error)
        }
        sourceConfigJSON = configData
        var notes: [String] = []
        if config.memory == nil, let params = reader.metadata["xlm_params"],
           let (memory, filled) = try XLMParams.memoryConfig(fromJSON: params, hiddenSize: config.hiddenSize, source: "\(url.path) (XLM params)") {
            config.memory = memory
            notes.append("the config has no pkm object: filled pkm.\(filled.joined(separator: ", pkm.")) from the checkpoint's XLM params")
        }
        if let torch = reader as? TorchCheckpointReader {
            notes += torch.sharedStorages.map { "tensors \($0.map { "'\($0)'" }.joined(separator: ", ")) share one storage (tied weights): each is kept under its own name" }
            notes += torch.diagnostics
        }
        let mapping = try ResolvedCheckpoint.map(reader: reader, config: &config, memory: memoryOptions, configSource: configSource)
        self.config = config
        var report = mapping.report
        report.configSource = configSource
        report.warnings = notes + report.warnings
        self.report = report
        sourceByCanonical = mapping.sources
    }

    /// Throws when the mapping found missing tensors, shape mismatches or conflicts (and unexpected
    /// tensors when `strict`).
    /// - Throws: ``PipelineError/mappingFailed(checkpoint:problems:)``.
    public func requireUsable(strict: Bool = false) throws {
        let problems = report.problems(strict: strict)
        if !problems.isEmpty { throw PipelineError.mappingFailed(checkpoint: reader.url.path, problems: problems) }
    }

    /// The source name of a canonical tensor, if the checkpoint has it.
    public func sourceName(ofCanonical name: String) -> String? { sourceByCanonical[name]?.source }

    /// Reads a tensor by canonical name, re-ordered into the canonical layout when it comes from a peer layout.
    /// - Throws: ``FormatError`` when it is absent or damaged.
    public func tensor(canonical name: String) throws -> Tensor {
        guard let entry = sourceByCanonical[name] else { throw FormatError.tensorNotFound(path: reader.url.path, tensor: name) }
        let tensor = try reader.tensor(named: entry.source)
        guard let transform = entry.transform else { return tensor }
        do {
            return try transform.apply(to: tensor, heads: entry.transformHeads ?? 1, canonicalShape: entry.shape)
        } catch {
            throw FormatError.io(path: reader.url.path, operation: "re-order '\(entry.source)'", message: "\(error)")
        }
    }

    /// Builds the Swift model (float32) from the checkpoint.
    /// - Throws: ``PipelineError`` for mapping problems, ``FormatError`` for damaged data.
    public func makeModel() throws -> PKMBertModel { try makeModel(byteProgress: nil) }

    /// Builds the Swift model (float32), reporting the tensor bytes read so far.
    /// - Parameter byteProgress: called after each tensor with (stored bytes read, total).
    /// - Throws: ``PipelineError`` for mapping problems, ``FormatError`` for damaged data.
    public func makeModel(byteProgress: ((Int, Int) -> Void)?) throws -> PKMBertModel {
        try requireUsable(strict: false)
        var loaded: [String: Tensor] = [:]
        let used = PKMBertModel.parameterSpecs(for: config).filter { $0.isUsed && sourceByCanonical[$0.name] != nil }
        let bytesByName = Dictionary(report.mapped.map { ($0.canonical, ShapeMath.byteCount($0.shape, dtype: $0.dtype) ?? 0) },
                                     uniquingKeysWith: { first, _ in first })
        let total = used.reduce(0) { $0 + (bytesByName[$1.name] ?? 0) }
        var done = 0
        for spec in used {
            loaded[spec.name] = try tensor(canonical: spec.name)
            done += bytesByName[spec.name] ?? 0
            byteProgress?(done, total)
        }
        do {
            return try PKMBertModel(config: config) { loaded[$0] }
        } catch let error as ModelError {
            throw PipelineError.model(checkpoint: reader.url.path, underlying: error)
        }
    }
}
