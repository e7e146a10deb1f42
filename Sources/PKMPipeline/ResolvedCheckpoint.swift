import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
import PKMModel
import PKMTensor

/// How one source tensor was mapped on import.
public struct MappedTensor: Sendable, Codable, Equatable {
    /// Name in the source file.
    public var source: String
    /// Canonical name (spec §1).
    public var canonical: String
    /// Rules applied (`strip:bert.`, `layernorm-gamma`, …); empty when the name was already canonical.
    public var rules: [String]
    public var dtype: DType
    /// Canonical shape (after ``transform``).
    public var shape: [Int]
    /// The re-ordering that turns the source tensor into the canonical one (peer memory layouts), if any.
    public var transform: LayoutTransform?
    /// Memory heads H, for ``transform``.
    public var transformHeads: Int?
}

/// A shape (or dtype) disagreement between a checkpoint tensor and the config.
public struct ShapeMismatch: Sendable, Codable, Equatable {
    public var name: String
    public var expected: [Int]
    public var actual: [Int]
    public var dtype: DType?
}

/// What the loader found when mapping a checkpoint onto the model, reported as HF's loader does.
public struct MappingReport: Sendable, Codable {
    /// The checkpoint path.
    public var checkpoint: String
    public var format: CheckpointFormat
    /// Where the config came from (`--config FILE`, `HDF5 attribute 'config'`, …).
    public var configSource: String
    public var modelType: ModelConfig.ModelType
    /// Every tensor the model reads, with its source name.
    public var mapped: [MappedTensor]
    /// Required tensors absent from the checkpoint (an error).
    public var missing: [String]
    /// Tensors the model does not use; kept in outputs and reported (an error under `--strict`).
    public var unexpected: [MappedTensor]
    /// Tensors whose shape disagrees with the config (an error).
    public var shapeMismatches: [ShapeMismatch]
    /// Buffers that are not weights (`embeddings.position_ids`), ignored.
    public var ignored: [MappedTensor]
    /// Other problems (duplicate canonical names, non-float weights, modes implied by names that disagree with the config).
    public var conflicts: [String]
    /// Non-fatal findings.
    public var warnings: [String]
    /// The layout detected (or forced) for each memory, by encoder layer.
    public var memoryLayouts: [String: DetectedMemoryLayout] = [:]

    /// Every problem that makes the checkpoint unusable.
    public func problems(strict: Bool) -> [String] {
        var list = missing.map { "missing tensor '\($0)'" }
        list += shapeMismatches.map { m in
            m.dtype.map { "tensor '\(m.name)' has dtype \($0), a floating-point weight is required" }
                ?? "tensor '\(m.name)' has shape \(m.actual), the config implies \(m.expected)"
        }
        list += conflicts
        if strict { list += unexpected.map { "unexpected tensor '\($0.source)' (--strict)" } }
        return list
    }
}

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

    /// Opens `url` (file, sharded index or HF folder), resolves the config (spec §2 order: `configURL`;
    /// the file's own `config`; `config.json` beside it) and maps tensor names (spec §6).
    /// - Throws: ``FormatError`` for unreadable files, ``PipelineError`` for config problems. Mapping
    ///   problems are recorded in ``report``; call ``requireUsable(strict:)`` to turn them into an error.
    /// `memory` says which memory layout and module attribute to expect (`--memory-layout`, `--memory-attribute`).
    public init(url: URL, configURL: URL? = nil, limits: ReaderLimits = ReaderLimits(),
                memory memoryOptions: MemoryImportOptions = MemoryImportOptions()) throws {
        reader = try Checkpoints.open(url, limits: limits)
        let (configData, configSource) = try ResolvedCheckpoint.findConfig(checkpoint: url, reader: reader, explicit: configURL,
                                                                           maxBytes: limits.maxHeaderBytes)
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

    /// The config JSON and a description of where it came from.
    static func findConfig(checkpoint: URL, reader: any CheckpointReader, explicit: URL?,
                           maxBytes: Int = ReaderLimits().maxHeaderBytes) throws -> (Data, String) {
        if let explicit {
            guard let data = try readConfigFile(explicit, maxBytes: maxBytes) else { throw FormatError.fileNotFound(path: explicit.path) }
            return (data, explicit.path)
        }
        var looked: [String] = []
        if let embedded = reader.metadata["config"] {
            let origin: String
            switch reader.format {
            case .hdf5: origin = "HDF5 root attribute 'config'"
            case .safetensors: origin = "safetensors __metadata__[\"config\"]"
            case .pkmz: origin = "pkmz header config"
            case .pytorch: origin = "PyTorch checkpoint metadata"
            }
            return (Data(embedded.utf8), "\(reader.url.path) (\(origin))")
        }
        looked.append("the file's embedded config")
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: checkpoint.path, isDirectory: &isDirectory)
        let folder = isDirectory.boolValue ? checkpoint : checkpoint.deletingLastPathComponent()
        let beside = folder.appendingPathComponent("config.json")
        if let data = try readConfigFile(beside, maxBytes: maxBytes) { return (data, beside.path) }
        looked.append(beside.path)
        throw PipelineError.configNotFound(checkpoint: checkpoint.path, looked: looked)
    }

    /// Reads a config file after checking its size against `maxBytes` (the header limit), so a
    /// `config.json` that is really a multi-gigabyte file is refused before it is read.
    /// Returns nil when there is no regular file at `url`.
    static func readConfigFile(_ url: URL, maxBytes: Int) throws -> Data? {
        // attributesOfItem does not follow symbolic links (HF caches link config.json into blobs/).
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.resolvingSymlinksInPath().path),
              attributes[.type] as? FileAttributeType == .typeRegular else { return nil }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        if size > maxBytes {
            throw FormatError.limitExceeded(path: url.path, limit: .headerBytes, value: size, maximum: maxBytes)
        }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FormatError.io(path: url.path, operation: "read", message: "cannot read the config file")
        }
        return data
    }

    /// Maps every tensor name (spec §6 aliases, then the peer memory layouts), fills and checks the
    /// memory config against the weights, validates it, and compares against the model's parameter specs.
    /// - Throws: ``PipelineError/unsupportedMemory(layer:reason:)`` for refused memories,
    ///   ``PipelineError/invalidConfig(source:underlying:)`` when the completed config is invalid.
    static func map(reader: any CheckpointReader, config: inout ModelConfig, memory options: MemoryImportOptions = MemoryImportOptions(),
                    configSource: String = "") throws -> (report: MappingReport, sources: [String: MappedTensor]) {
        var report = MappingReport(checkpoint: reader.url.path, format: reader.format, configSource: "", modelType: config.modelType,
                                   mapped: [], missing: [], unexpected: [], shapeMismatches: [], ignored: [], conflicts: [], warnings: [])
        var sources: [String: MappedTensor] = [:]
        var infoByCanonical: [String: MappedTensor] = [:]
        var order: [String] = []
        var impliedTypes = Set<ModelConfig.ModelType>()
        var entries: [MappedTensor] = []
        for info in reader.tensorInfos {
            let mapped = KeyMapping.canonicalName(for: info.name, extraAttribute: options.attribute)
            let entry = MappedTensor(source: info.name, canonical: mapped.canonical, rules: mapped.applied, dtype: info.dtype, shape: info.shape)
            if let type = mapped.impliedModelType { impliedTypes.insert(type) }
            if let (layer, mode) = mapped.impliedMemoryMode {
                if let configured = config.memory?.mode(ofLayer: layer) {
                    if configured != mode {
                        report.conflicts.append("tensor '\(info.name)' implies a \(mode.rawValue) memory at layer \(layer) but the config says \(configured.rawValue)")
                    }
                } else {
                    report.conflicts.append("tensor '\(info.name)' implies a \(mode.rawValue) memory at layer \(layer) that the config's pkm.layers does not list")
                }
            }
            if KeyMapping.isIgnoredBuffer(mapped.canonical) {
                report.ignored.append(entry)
                continue
            }
            entries.append(entry)
        }
        // Peer layouts: per memory, detect, rename leaves and record the re-ordering.
        var memoryLeaves: [Int: [String: [Int]]] = [:]
        for entry in entries {
            if let (layer, leaf) = memoryLeaf(of: entry.canonical) { memoryLeaves[layer, default: [:]][leaf] = entry.shape }
        }
        var layouts: [Int: (DetectedMemoryLayout, Int?)] = [:]
        for (layer, leaves) in memoryLeaves {
            let layout = try MemoryLayouts.detect(layer: layer, leaves: leaves, choice: options.layout)
            layouts[layer] = (layout, MemoryLayouts.heads(layout: layout, leaves: leaves))
            report.memoryLayouts[String(layer)] = layout
        }
        for index in entries.indices {
            guard let (layer, leaf) = memoryLeaf(of: entries[index].canonical), let (layout, heads) = layouts[layer] else { continue }
            var rules = MemoryLayouts.leafRules[layout] ?? []
            if leaf == ParameterNames.Memory.keys, entries[index].shape.count == 2, let keys = MemoryLayouts.keysRule(layout: layout) {
                rules = [keys]
            }
            guard let rule = rules.first(where: { $0.source == leaf }) else { continue }
            let prefix = ParameterNames.layerPrefix(layer) + ParameterNames.Layer.memory + "."
            if let transform = rule.transform {
                guard let heads, let shape = MemoryLayouts.canonicalShape(entries[index].shape, transform: transform, heads: heads) else {
                    report.conflicts.append("tensor '\(entries[index].source)' has shape \(entries[index].shape), which the \(layout.rawValue) memory layout cannot re-order (\(transform.rawValue))")
                    continue
                }
                entries[index].shape = shape
                entries[index].transform = transform
                entries[index].transformHeads = heads
            }
            entries[index].canonical = prefix + rule.canonical
            entries[index].rules.append("\(layout.rawValue):\(rule.source)")
        }
        for entry in entries {
            if let previous = infoByCanonical[entry.canonical] {
                report.conflicts.append("tensors '\(previous.source)' and '\(entry.source)' both map to '\(entry.canonical)'")
                continue
            }
            infoByCanonical[entry.canonical] = entry
            order.append(entry.canonical)
        }
        if impliedTypes.count == 1, let type = impliedTypes.first, type != config.modelType {
            report.warnings.append("tensor prefixes say \(type.rawValue) but the config says \(config.modelType.rawValue); using the config")
        }
        // The weights fill what the config's pkm object leaves out, and must agree with what it states.
        if var memory = config.memory {
            var canonicalLeaves: [Int: [String: (source: String, shape: [Int])]] = [:]
            for entry in infoByCanonical.values {
                if let (layer, leaf) = memoryLeaf(of: entry.canonical), memory.layers.contains(layer) {
                    canonicalLeaves[layer, default: [:]][leaf] = (entry.source, entry.shape)
                }
            }
            let (filled, conflicts) = InferredMemory(layers: canonicalLeaves).reconcile(&memory)
            report.conflicts += conflicts
            if !filled.isEmpty {
                report.warnings.append("the config's pkm object leaves pkm.\(filled.joined(separator: ", pkm.")) to the weights: filled from the memory tensors")
            }
            config.memory = memory
        }
        do { try config.validate() } catch let error as ModelError {
            throw PipelineError.invalidConfig(source: configSource, underlying: error)
        }
        let specs = PKMBertModel.parameterSpecs(for: config)
        var expected = Set<String>()
        for spec in specs {
            expected.insert(spec.name)
            guard let entry = infoByCanonical[spec.name] else {
                if !spec.isOptional { report.missing.append(spec.name) }
                continue
            }
            sources[spec.name] = entry
            if entry.shape != spec.shape {
                report.shapeMismatches.append(ShapeMismatch(name: entry.source, expected: spec.shape, actual: entry.shape, dtype: nil))
            } else if spec.isUsed && spec.isInteger == entry.dtype.isFloatingPoint {
                report.shapeMismatches.append(ShapeMismatch(name: entry.source, expected: spec.shape, actual: entry.shape, dtype: entry.dtype))
            }
            report.mapped.append(entry)
        }
        if (sources[ParameterNames.poolerWeight] == nil) != (sources[ParameterNames.poolerBias] == nil) {
            report.missing.append(sources[ParameterNames.poolerWeight] == nil ? ParameterNames.poolerWeight : ParameterNames.poolerBias)
        }
        for canonical in order where !expected.contains(canonical) {
            if let entry = infoByCanonical[canonical] {
                report.unexpected.append(entry)
                sources[canonical] = entry
            }
        }
        report.modelType = config.modelType
        return (report, sources)
    }

    /// `(layer, leaf)` when `name` is `encoder.layer.{layer}.memory.{leaf}`.
    static func memoryLeaf(of name: String) -> (Int, String)? {
        let head = "encoder.layer."
        guard name.hasPrefix(head) else { return nil }
        let rest = name.dropFirst(head.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let after = rest[rest.index(after: dot)...]
        let memory = ParameterNames.Layer.memory + "."
        guard after.hasPrefix(memory) else { return nil }
        return (layer, String(after.dropFirst(memory.count)))
    }
}
