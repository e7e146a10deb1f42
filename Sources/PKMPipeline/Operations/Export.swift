import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// The memory layout an export writes.
public enum ExportMemoryLayout: String, Sendable, Codable, CaseIterable {
    /// Canonical names (spec §1) under the memory attribute.
    case canonical
    /// lucidrains `product-key-memory` names and orders (`to_queries`, `norm`, `keys` `[H, N, 2, D]`): loads with
    /// `load_state_dict(strict=True)` into `PKM` modules attached under the memory attribute.
    case lucidrains
    /// XLM names: `memories.{i}_in` (replace) / `memories.{i}_after` (after) at the top level.
    case xlm
}

/// The base-model prefix of exported names (`--prefix`).
public enum ExportPrefix: String, Sendable, Codable, CaseIterable {
    /// No prefix, as `BertModel.save_pretrained` writes.
    case none
    case bert = "bert."
    case roberta = "roberta."

    var text: String { self == .none ? "" : rawValue }
}

/// Options of ``Exporter/run(source:destination:options:configURL:limits:memory:progress:)``.
public struct ExportOptions: Sendable, Codable {
    public var layout: ExportMemoryLayout = .canonical
    /// Module attribute of each memory under `encoder.layer.{i}.` (canonical and lucidrains layouts).
    public var attribute = ParameterNames.Layer.memory
    public var dtype: DTypePolicy = .keep
    public var prefix: ExportPrefix = .none
    /// Largest shard in bytes (`--max-shard-size`); nil writes one `model.safetensors`.
    public var maxShardBytes: Int?
    /// Folder whose tokenizer files are copied (default: the source's folder).
    public var tokenizerSource: URL?
    public init() {}

    /// Parses `--max-shard-size` as Hugging Face does: `2GB` = 2·10⁹ bytes (KB, MB, GB, TB decimal), plus
    /// `KiB`/`MiB`/`GiB` (binary) and plain byte counts.
    /// - Throws: ``PipelineError/invalidArgument(name:reason:)``.
    public static func parseSize(_ text: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
        let upper = trimmed.uppercased()
        for (unit, factor) in units where upper.hasSuffix(unit) {
            if let value = Double(upper.dropLast(unit.count).trimmingCharacters(in: .whitespaces)), value > 0,
               let bytes = Int(exactly: (value * factor).rounded(.down)), bytes > 0 { return bytes }
            break
        }
        if let bytes = Int(trimmed), bytes > 0 { return bytes }
        throw PipelineError.invalidArgument(name: "--max-shard-size", reason: "'\(text)' is not a size such as 2GB, 500MB or 1000000")
    }
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
    /// Files copied from the source folder when present.
    public static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                                        "vocab.json", "merges.txt", "added_tokens.json"]

    /// Exports `source` as an HF model folder at `destination` (created if needed).
    /// - Throws: ``PipelineError`` for unusable checkpoints or layouts the memory cannot be written in,
    ///   ``FormatError`` for I/O.
    public static func run(source: URL, destination: URL, options: ExportOptions = ExportOptions(), configURL: URL? = nil,
                           limits: ReaderLimits = ReaderLimits(), memory: MemoryImportOptions = MemoryImportOptions(),
                           progress: ((Int, Int) -> Void)? = nil) throws -> ExportResult {
        let start = Date()
        let checkpoint = try ResolvedCheckpoint(url: source, configURL: configURL, limits: limits, memory: memory)
        try checkpoint.requireUsable()
        let config = checkpoint.config
        if options.layout == .lucidrains, let memoryConfig = config.memory {
            let problems = lucidrainsIncompatibilities(memoryConfig, hiddenSize: config.hiddenSize)
            if !problems.isEmpty {
                throw PipelineError.invalidArgument(name: "--memory-layout lucidrains", reason: "a lucidrains PKM cannot express this memory: \(problems.joined(separator: "; ")); export --memory-layout canonical")
            }
        }
        // Names: the model's tensors under the prefix (memories renamed per layout), unused ones as they were.
        struct Planned { var name: String; var canonical: String; var transform: LayoutTransform?; var info: TensorInfo }
        var planned: [Planned] = []
        for entry in checkpoint.report.mapped {
            var name = options.prefix.text + entry.canonical
            var transform: LayoutTransform?
            var shape = entry.shape
            if let memoryConfig = config.memory, let (layer, leaf) = ResolvedCheckpoint.memoryLeaf(of: entry.canonical),
               let mode = memoryConfig.mode(ofLayer: layer) {
                let exported = try memoryName(layer: layer, leaf: leaf, mode: mode, memory: memoryConfig, options: options)
                name = options.prefix.text + exported.name
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
            throw PipelineError.invalidArgument(name: "export", reason: "two tensors would be written as '\(item.name)'")
        }
        // Shards exactly as huggingface_hub splits: in order; a tensor larger than the limit gets a shard of its own.
        var shards: [[Int]] = [], current: [Int] = [], currentBytes = 0
        for (index, item) in planned.enumerated() {
            let bytes = item.info.byteCount
            if let limit = options.maxShardBytes {
                if bytes > limit { shards.append([index]); continue }
                if currentBytes + bytes > limit { shards.append(current); current = []; currentBytes = 0 }
            }
            current.append(index)
            currentBytes += bytes
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }
        let names = shards.count == 1 ? ["model.safetensors"]
            : (1...shards.count).map { String(format: "model-%05d-of-%05d.safetensors", $0, shards.count) }

        try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
        let digest = PendingSHA256(file: checkpoint.reader.url)
        var write = WriteOptions()
        write.provenance = Provenance(sourceFile: checkpoint.reader.url.lastPathComponent, sourceSHA256: nil,
                                      operation: "export --memory-layout \(options.layout.rawValue) --memory-attribute \(options.attribute) --prefix \(options.prefix.text.isEmpty ? "none" : options.prefix.text) --dtype \(options.dtype.rawValue)")
        write.pendingSourceDigest = digest
        var done = 0
        for (shard, indices) in shards.enumerated() {
            let infos = indices.map { planned[$0].info }
            let byName = Dictionary(uniqueKeysWithValues: indices.map { (planned[$0].name, planned[$0]) })
            try Checkpoints.write(to: destination.appendingPathComponent(names[shard]), format: .safetensors, tensorInfos: infos,
                                  metadata: ["format": "pt"], options: write) { info in
                guard let item = byName[info.name] else { throw FormatError.tensorNotFound(path: source.path, tensor: info.name) }
                var tensor = try checkpoint.tensor(canonical: item.canonical)
                if let transform = item.transform {
                    tensor = try transform.apply(to: tensor, heads: config.memory?.headCount ?? 1, canonicalShape: item.info.shape)
                }
                done += 1
                progress?(done, planned.count)
                return try tensor.converted(to: info.dtype)
            }
        }
        let totalBytes = planned.reduce(0) { $0 + $1.info.byteCount }
        if shards.count > 1 {
            var weightMap: [String: String] = [:]
            for (shard, indices) in shards.enumerated() { for index in indices { weightMap[planned[index].name] = names[shard] } }
            let parameters = planned.filter { $0.info.dtype.isFloatingPoint }.reduce(0) { $0 + (ShapeMath.elementCount($1.info.shape) ?? 0) }
            try Data(indexJSON(weightMap: weightMap, totalSize: totalBytes, totalParameters: parameters).utf8)
                .write(to: destination.appendingPathComponent("model.safetensors.index.json"), options: .atomic)
        }
        try exportedConfig(checkpoint: checkpoint).write(to: destination.appendingPathComponent("config.json"), options: .atomic)
        var copied: [String] = []
        var isDirectory: ObjCBool = false
        let sourceFolder = options.tokenizerSource
            ?? (FileManager.default.fileExists(atPath: source.path, isDirectory: &isDirectory) && isDirectory.boolValue ? source : source.deletingLastPathComponent())
        for file in tokenizerFiles {
            let from = sourceFolder.appendingPathComponent(file), to = destination.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: from.path), from.standardizedFileURL != to.standardizedFileURL else { continue }
            try? FileManager.default.removeItem(at: to)
            try FileManager.default.copyItem(at: from, to: to)
            copied.append(file)
        }
        // A tokenizer carried inside the checkpoint (import, graft and convert carry it) is written back out.
        if !copied.contains("tokenizer.json"), let carried = checkpoint.reader.metadata[TextInputs.metadataKey] {
            try Data(carried.utf8).write(to: destination.appendingPathComponent("tokenizer.json"), options: .atomic)
            copied.append("tokenizer.json")
        }
        var diagnostics = checkpoint.report.warnings.map { Diagnostic(.warning, $0) }
        diagnostics += checkpoint.report.unexpected.map { Diagnostic(.note, "unused tensor '\($0.source)' exported as '\($0.canonical)'") }
        return ExportResult(source: source.path, destination: destination.path, layout: options.layout, shards: names,
                            tensorCount: planned.count, totalBytes: totalBytes, tokenizerFiles: copied,
                            seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }

    /// The source config's keys, with `model_type`, `architectures` (when absent) and the completed `pkm` object.
    static func exportedConfig(checkpoint: ResolvedCheckpoint) throws -> Data {
        var object = (try? JSONSerialization.jsonObject(with: checkpoint.sourceConfigJSON)) as? [String: Any] ?? [:]
        let config = checkpoint.config
        object["model_type"] = config.modelType.rawValue
        if object["architectures"] == nil { object["architectures"] = [config.modelType == .bert ? "BertModel" : "RobertaModel"] }
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

    /// A JSON string literal as Python's `json.dumps` writes it (`ensure_ascii=True`).
    static func pythonJSONString(_ text: String) -> String {
        var output = "\""
        for unit in text.utf16 {
            switch unit {
            case 0x22: output += "\\\""
            case 0x5C: output += "\\\\"
            case 0x0A: output += "\\n"
            case 0x0D: output += "\\r"
            case 0x09: output += "\\t"
            case 0x08: output += "\\b"
            case 0x0C: output += "\\f"
            case 0x20..<0x7F: output.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
            default: output += String(format: "\\u%04x", unit)
            }
        }
        return output + "\""
    }

    /// `model.safetensors.index.json` as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
    static func indexJSON(weightMap: [String: String], totalSize: Int, totalParameters: Int) -> String {
        var text = "{\n  \"metadata\": {\n    \"total_parameters\": \(totalParameters),\n    \"total_size\": \(totalSize)\n  },\n  \"weight_map\": {\n"
        let entries = weightMap.sorted { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
        text += entries.map { "    \(pythonJSONString($0.key)): \(pythonJSONString($0.value))" }.joined(separator: ",\n")
        text += "\n  }\n}\n"
        return text
    }
}
