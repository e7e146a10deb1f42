import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// The memory layout an export writes.
public enum ExportMemoryLayout: String, Sendable, Codable, CaseIterable {
    /// Canonical names (`schemas/pkm-checkpoints.md` §1) under the memory attribute.
    case canonical
    /// lucidrains `product-key-memory` names and orders (`to_queries`, `norm`, `keys` `[H, N, 2, D]`): loads with
    /// `load_state_dict(strict=True)` into `PKM` modules attached under the memory attribute.
    case lucidrains
    /// XLM names: `memories.{i}_in` (replace) / `memories.{i}_after` (after) at the top level.
    case xlm
}

/// The base-model prefix of exported names.
public enum ExportPrefix: String, Sendable, Codable, CaseIterable {
    /// No prefix, as `BertModel.save_pretrained` writes.
    case none
    case bert = "bert."
    case roberta = "roberta."

    var text: String { self == .none ? "" : rawValue }
}

/// Options of ``LoadedCheckpoint/export(to:options:progress:)``.
public struct ExportOptions: Sendable, Codable {
    public var layout: ExportMemoryLayout = .canonical
    /// Module attribute of each memory under `encoder.layer.{i}.` (canonical and lucidrains layouts).
    public var attribute = ParameterNames.Layer.memory
    public var dtype: DTypePolicy = .keep
    public var prefix: ExportPrefix = .none
    /// Largest shard in bytes (as huggingface_hub splits); nil writes one `model.safetensors`.
    public var maxShardBytes: Int?
    /// Folder whose tokenizer files are copied (default: the source's folder).
    public var tokenizerSource: URL?
    /// How the provenance of each shard describes the operation; nil: the operation's own description.
    public var operation: String?
    public init() {}
}

/// Result of `export`.
public struct ExportResult: Sendable, Codable {
    public var source: String
    public var destination: String
    public var layout: ExportMemoryLayout
    /// Shard file names in order (one `model.safetensors` when unsharded).
    public var shards: [String]
    public var tensorCount: Int
    public var totalBytes: Int
    /// Tokenizer files copied.
    public var tokenizerFiles: [String]
    public var seconds: Double
    public var diagnostics: [Diagnostic]
}

/// `export`: a Hugging Face model folder (`config.json`, `model.safetensors` or shards + index, tokenizer files).
public enum Exporter {
    /// The source config's keys, with `model_type`, `architectures`, the head's labels and the completed `pkm` object.
    ///
    /// `architectures` names the class the checkpoint runs as (``ModelConfig/architectureName``), so transformers'
    /// `AutoModel…` loads the head: the source's list is kept when its first entry means the same (`BertForPreTraining`
    /// for a masked-LM head), and written when absent or when it names a head the checkpoint does not hold.
    static func exportedConfig(checkpoint: ResolvedCheckpoint) throws -> Data {
        var object = (try? JSONSerialization.jsonObject(with: checkpoint.sourceConfigJSON)) as? [String: Any] ?? [:]
        let config = checkpoint.config
        object["model_type"] = config.modelType.rawValue
        let stated = (object["architectures"] as? [String])?.first.flatMap(ModelConfig.architecture(named:))
        if object["architectures"] == nil || (stated != nil && (stated?.type != config.modelType || stated?.head != config.head)) {
            object["architectures"] = [config.architectureName]
        }
        if config.head != nil, let encoded = try JSONSerialization.jsonObject(with: config.encodedJSON()) as? [String: Any] {
            for key in ["id2label", "label2id", "problem_type", "tie_word_embeddings"] where object[key] == nil { object[key] = encoded[key] }
        }
        for (key, value) in [("vocab_size", config.vocabSize), ("hidden_size", config.hiddenSize), ("num_hidden_layers", config.layerCount),
                             ("num_attention_heads", config.attentionHeadCount), ("intermediate_size", config.intermediateSize),
                             ("max_position_embeddings", config.maxPositionEmbeddings), ("type_vocab_size", config.typeVocabSize),
                             ("pad_token_id", config.padTokenId)] where object[key] == nil {
            object[key] = value
        }
        if object["layer_norm_eps"] == nil { object["layer_norm_eps"] = config.layerNormEpsilon }
        if let memory = config.memory {
            object["pkm"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(memory))
        }
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }
}

extension LoadedCheckpoint {
    /// `export`: writes the checkpoint as an HF model folder at `destination` (created if needed): the model's tensors
    /// under ``ExportOptions/prefix`` with the memories in ``ExportOptions/layout``, unused tensors as they were,
    /// shards + index as huggingface_hub splits them, `config.json` (the source config's keys and the complete `pkm`
    /// object) and the tokenizer files (the source folder's, else the one carried in the file).
    /// - Parameter progress: (tensors written, total).
    /// - Throws: ``PipelineError`` for unusable checkpoints or layouts the memory cannot be written in,
    ///   ``FormatError`` for I/O.
    public func export(to destination: URL, options: ExportOptions = ExportOptions(), progress: WriteProgress = WriteProgress()) throws -> ExportResult {
        let start = Date()
        let checkpoint = try resolved()
        try checkpoint.requireUsable()
        let config = checkpoint.config
        if options.layout == .lucidrains, let memoryConfig = config.memory {
            let problems = Exporter.lucidrainsIncompatibilities(memoryConfig, hiddenSize: config.hiddenSize)
            if !problems.isEmpty {
                throw PipelineError.invalidSetting(.exportLayout, value: "lucidrains", reason: "a lucidrains PKM cannot express this memory: \(problems.joined(separator: "; ")); export \(setting: .exportLayout, "canonical")")
            }
        }
        // Names: the encoder's tensors under the prefix (memories renamed per layout), the head's at the top level as
        // transformers names them, unused ones as they were. Beside a head, transformers finds the encoder only under
        // its family prefix, so a head model's encoder gets `bert.`/`roberta.` even when no prefix was asked for.
        var diagnostics: [Diagnostic] = []
        var prefix = options.prefix
        if config.head != nil, prefix == .none {
            prefix = config.modelType == .bert ? .bert : .roberta
            diagnostics.append(Diagnostic(.note, "\(config.architectureName): the encoder's tensors are written under '\(prefix.text)', where transformers looks for them beside the head's"))
        }
        let headNames = Set(TaskHead.parameterSpecs(config).map(\.name))
        struct Planned { var name: String; var canonical: String; var transform: LayoutTransform?; var info: TensorInfo }
        var planned: [Planned] = []
        for entry in checkpoint.report.mapped {
            if headNames.contains(entry.canonical) {
                planned.append(Planned(name: entry.canonical, canonical: entry.canonical, transform: nil,
                                       info: TensorInfo(name: entry.canonical, dtype: options.dtype.target(for: entry.dtype), shape: entry.shape)))
                continue
            }
            var name = prefix.text + entry.canonical
            var transform: LayoutTransform?
            var shape = entry.shape
            if let memoryConfig = config.memory, let (layer, leaf) = ResolvedCheckpoint.memoryLeaf(of: entry.canonical),
               let mode = memoryConfig.mode(ofLayer: layer) {
                let exported = try Exporter.memoryName(layer: layer, leaf: leaf, mode: mode, memory: memoryConfig, options: options)
                name = prefix.text + exported.name
                transform = exported.transform
                if let transform { shape = MemoryLayouts.canonicalShape(shape, transform: transform, heads: memoryConfig.headCount) ?? shape }
            }
            planned.append(Planned(name: name, canonical: entry.canonical, transform: transform,
                                   info: TensorInfo(name: name, dtype: options.dtype.target(for: entry.dtype), shape: shape)))
        }
        for entry in checkpoint.report.unexpected {
            planned.append(Planned(name: entry.canonical, canonical: entry.canonical, transform: nil,
                                   info: TensorInfo(name: entry.canonical, dtype: options.dtype.target(for: entry.dtype), shape: entry.shape)))
        }
        var seen = Set<String>()
        for item in planned where !seen.insert(item.name).inserted {
            throw PipelineError.unusableInput(path: "export", reason: "two tensors would be written as '\(item.name)'")
        }
        let shards = ModelFolder.shardPlan(byteCounts: planned.map(\.info.byteCount), maxShardBytes: options.maxShardBytes)
        let names = ModelFolder.shardNames(count: shards.count)
        let folder = ModelFolder(destination)
        try folder.create()
        var output = OutputOptions()
        output.format = .safetensors
        output.operation = options.operation ?? "export memory layout \(options.layout.rawValue), memory attribute \(options.attribute), prefix \(options.prefix.text.isEmpty ? "none" : options.prefix.text), dtype \(options.dtype.rawValue)"
        var done = 0
        for (shard, indices) in shards.enumerated() {
            let infos = indices.map { planned[$0].info }
            let byName = Dictionary(uniqueKeysWithValues: indices.map { (planned[$0].name, planned[$0]) })
            let writer = try OutputWriter(source: self, destination: destination.appendingPathComponent(names[shard]), output: output, operation: "")
            _ = try writer.write(infos, metadata: ["format": "pt"], carryTokenizer: false, progress: WriteProgress()) { info in
                guard let item = byName[info.name] else { throw FormatError.tensorNotFound(path: url.path, tensor: info.name) }
                var tensor = try checkpoint.tensor(canonical: item.canonical)
                if let transform = item.transform {
                    tensor = try transform.apply(to: tensor, heads: config.memory?.headCount ?? 1, canonicalShape: item.info.shape)
                }
                done += 1
                progress.tensors?(done, planned.count)
                return .init(data: .tensor(try tensor.converted(to: info.dtype)), releasing: checkpoint.sourceName(ofCanonical: item.canonical))
            }
        }
        let totalBytes = planned.reduce(0) { $0 + $1.info.byteCount }
        if shards.count > 1 {
            var weightMap: [String: String] = [:]
            for (shard, indices) in shards.enumerated() { for index in indices { weightMap[planned[index].name] = names[shard] } }
            let parameters = planned.filter { $0.info.dtype.isFloatingPoint }.reduce(0) { $0 + (ShapeMath.elementCount($1.info.shape) ?? 0) }
            try folder.write(Data(ModelFolder.shardIndexJSON(weightMap: weightMap, totalSize: totalBytes, totalParameters: parameters).utf8),
                             as: ModelFolder.shardIndexFileName)
        }
        try folder.write(try Exporter.exportedConfig(checkpoint: checkpoint), as: ModelFolder.configFileName)
        var copied = try folder.copyTokenizerFiles(from: options.tokenizerSource.map { ModelFolder($0) } ?? self.folder)
        // A tokenizer carried inside the checkpoint (import, graft and convert carry it) is written back out.
        if !copied.contains("tokenizer.json"), let carried = reader.metadata[TextInputs.metadataKey] {
            try folder.write(Data(carried.utf8), as: "tokenizer.json")
            copied.append("tokenizer.json")
        }
        diagnostics = checkpoint.report.warnings.map { Diagnostic(.warning, $0) } + diagnostics
        diagnostics += checkpoint.report.unexpected.map { Diagnostic(.note, "unused tensor '\($0.source)' exported as '\($0.canonical)'") }
        return ExportResult(source: url.path, destination: destination.path, layout: options.layout, shards: names,
                            tensorCount: planned.count, totalBytes: totalBytes, tokenizerFiles: copied,
                            seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
