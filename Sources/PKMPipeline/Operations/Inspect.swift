import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// What `inspect` shows about a checkpoint.
public struct CheckpointSummary: Sendable, Codable {
    public struct Entry: Sendable, Codable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var bytes: Int
    }
    public struct DTypeTotal: Sendable, Codable {
        public var count: Int
        public var bytes: Int
    }
    public var path: String
    public var format: CheckpointFormat
    /// Size on disk (the index file plus shards, for sharded checkpoints).
    public var fileBytes: Int
    public var tensorCount: Int
    /// Declared tensor bytes, uncompressed.
    public var tensorBytes: Int
    public var dtypeTotals: [String: DTypeTotal]
    public var tensors: [Entry]
    /// Metadata other than the config.
    public var metadata: [String: String]
    /// The config, pretty-printed JSON, if any.
    public var config: String?
    public var provenance: Provenance?
    /// Whether every tensor's data was read (and, for pkmz, its checksums checked).
    public var dataVerified: Bool
    /// The memory config as the model will run it (the config's `pkm` completed from the weights,
    /// every semantic field explicit: query_norm, score_activation, slot_map, …), when the
    /// checkpoint resolves as a model with memories.
    public var resolvedMemory: MemoryConfig?
    /// The memory layout detected per encoder layer (`lucidrains`, `xlm`, `lingua`, …).
    public var memoryLayouts: [String: DetectedMemoryLayout] = [:]
    /// The class the checkpoint runs as (`BertForMaskedLM`, `BertModel`…) when it is a model, and where its head
    /// was chosen from (nil for a bare encoder).
    public var runsAs: String?
    public var headSource: String?
    /// Elements of the floating-point tensors, in all and per group of canonical names.
    public var parameters = ParameterCounts()
    /// Where the config came from when it is not embedded (`config.json` beside the weights), else nil.
    public var configSource: String?

    /// Parameter counts (elements of floating-point tensors; integer buffers such as
    /// `num_batches_tracked` are not parameters) by group of canonical names (`schemas/pkm-checkpoints.md` §1).
    public struct ParameterCounts: Sendable, Codable, Equatable {
        /// `embeddings.*`.
        public var embeddings = 0
        /// `encoder.*` other than memories.
        public var encoder = 0
        /// `encoder.layer.{i}.memory.*`.
        public var memories = 0
        /// Everything else (pooler, heads, unexpected tensors).
        public var other = 0
        public var total: Int { embeddings + encoder + memories + other }
        public init() {}

        enum CodingKeys: String, CodingKey { case embeddings, encoder, memories, other, total }
        public init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            embeddings = try container.decode(Int.self, forKey: .embeddings)
            encoder = try container.decode(Int.self, forKey: .encoder)
            memories = try container.decode(Int.self, forKey: .memories)
            other = try container.decode(Int.self, forKey: .other)
        }
        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(embeddings, forKey: .embeddings)
            try container.encode(self.encoder, forKey: .encoder)
            try container.encode(memories, forKey: .memories)
            try container.encode(other, forKey: .other)
            try container.encode(total, forKey: .total)
        }

        /// Adds `count` elements of the tensor stored as `name` (mapped to its canonical name first).
        public mutating func add(name: String, count: Int) {
            let canonical = KeyMapping.canonicalName(for: name).canonical
            let parts = canonical.split(separator: ".")
            if canonical.hasPrefix("embeddings.") {
                embeddings += count
            } else if parts.count > 3, parts[0] == "encoder", parts[1] == "layer", parts[3] == "memory" {
                memories += count
            } else if canonical.hasPrefix("encoder.") {
                encoder += count
            } else {
                other += count
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case path, format, fileBytes, tensorCount, tensorBytes, dtypeTotals, tensors, metadata, config, provenance, dataVerified
        case parameters, configSource, resolvedMemory, memoryLayouts, runsAs, headSource
    }

    /// `config` and metadata values holding a JSON object (`pkm_source_provenance`) are written as
    /// JSON objects, not as strings of JSON.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(path, forKey: .path)
        try container.encode(format, forKey: .format)
        try container.encode(fileBytes, forKey: .fileBytes)
        try container.encode(tensorCount, forKey: .tensorCount)
        try container.encode(tensorBytes, forKey: .tensorBytes)
        try container.encode(dtypeTotals, forKey: .dtypeTotals)
        try container.encode(tensors, forKey: .tensors)
        try container.encode(metadata.mapValues { JSONValue(objectText: $0) ?? .string($0) }, forKey: .metadata)
        try container.encodeIfPresent(config.map { JSONValue(objectText: $0) ?? .string($0) }, forKey: .config)
        try container.encodeIfPresent(provenance, forKey: .provenance)
        try container.encode(dataVerified, forKey: .dataVerified)
        try container.encode(parameters, forKey: .parameters)
        try container.encodeIfPresent(configSource, forKey: .configSource)
        try container.encodeIfPresent(resolvedMemory, forKey: .resolvedMemory)
        try container.encode(memoryLayouts, forKey: .memoryLayouts)
        try container.encodeIfPresent(runsAs, forKey: .runsAs)
        try container.encodeIfPresent(headSource, forKey: .headSource)
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        path = try container.decode(String.self, forKey: .path)
        format = try container.decode(CheckpointFormat.self, forKey: .format)
        fileBytes = try container.decode(Int.self, forKey: .fileBytes)
        tensorCount = try container.decode(Int.self, forKey: .tensorCount)
        tensorBytes = try container.decode(Int.self, forKey: .tensorBytes)
        dtypeTotals = try container.decode([String: DTypeTotal].self, forKey: .dtypeTotals)
        tensors = try container.decode([Entry].self, forKey: .tensors)
        metadata = try container.decode([String: JSONValue].self, forKey: .metadata).mapValues(\.text)
        config = try container.decodeIfPresent(JSONValue.self, forKey: .config)?.text
        provenance = try container.decodeIfPresent(Provenance.self, forKey: .provenance)
        dataVerified = try container.decode(Bool.self, forKey: .dataVerified)
        parameters = try container.decodeIfPresent(ParameterCounts.self, forKey: .parameters) ?? ParameterCounts()
        configSource = try container.decodeIfPresent(String.self, forKey: .configSource)
        resolvedMemory = try container.decodeIfPresent(MemoryConfig.self, forKey: .resolvedMemory)
        memoryLayouts = try container.decodeIfPresent([String: DetectedMemoryLayout].self, forKey: .memoryLayouts) ?? [:]
        runsAs = try container.decodeIfPresent(String.self, forKey: .runsAs)
        headSource = try container.decodeIfPresent(String.self, forKey: .headSource)
    }

    public init(path: String, format: CheckpointFormat, fileBytes: Int, tensorCount: Int, tensorBytes: Int,
                dtypeTotals: [String: DTypeTotal], tensors: [Entry], metadata: [String: String], config: String?,
                provenance: Provenance?, dataVerified: Bool) {
        self.path = path
        self.format = format
        self.fileBytes = fileBytes
        self.tensorCount = tensorCount
        self.tensorBytes = tensorBytes
        self.dtypeTotals = dtypeTotals
        self.tensors = tensors
        self.metadata = metadata
        self.config = config
        self.provenance = provenance
        self.dataVerified = dataVerified
    }
}

/// `inspect`.
public enum Inspector {
    static func diskBytes(of reader: any CheckpointReader) -> Int {
        let manager = FileManager.default
        func size(_ path: String) -> Int { (try? manager.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        var total = size(reader.url.path)
        if reader.url.lastPathComponent.hasSuffix(".index.json"),
           let data = manager.contents(atPath: reader.url.path), JSONSyntax.depthExceeded(in: data) == nil,
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let weightMap = object["weight_map"] as? [String: String] {
            let folder = reader.url.deletingLastPathComponent()
            for shard in Set(weightMap.values) { total += size(folder.appendingPathComponent(shard).path) }
        }
        return total
    }

    static func prettyJSON(_ text: String) -> String {
        guard JSONSyntax.depthExceeded(in: Data(text.utf8)) == nil, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)),
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Options of ``LoadedCheckpoint/inspect(options:)``.
public struct InspectOptions: Sendable {
    /// Read (and check) every tensor's data, so damage anywhere is found.
    public var readData = false
    public init(readData: Bool = false) { self.readData = readData }
}

extension LoadedCheckpoint {
    /// `inspect`: summarises the checkpoint (tensors, dtypes, parameters by part, metadata, config, provenance, the
    /// memory as resolved when it is a model); with ``InspectOptions/readData``, reads every tensor.
    /// - Throws: ``FormatError``.
    public func inspect(options: InspectOptions = InspectOptions()) throws -> CheckpointSummary {
        var totals: [String: CheckpointSummary.DTypeTotal] = [:]
        for info in reader.tensorInfos {
            totals[info.dtype.displayName, default: .init(count: 0, bytes: 0)].count += 1
            totals[info.dtype.displayName, default: .init(count: 0, bytes: 0)].bytes += info.byteCount
        }
        if options.readData {
            if let pkmz = reader as? PKMZReader {
                // Every frame checked and decoded, several tensors at once, into reused buffers.
                try pkmz.verifyData()
            } else {
                for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
            }
        }
        var metadata = reader.metadata
        var configText = metadata.removeValue(forKey: "config").map(Inspector.prettyJSON)
        var configSource: String?
        // The carried tokenizer is hundreds of KB of JSON: shown as a summary, exported by `export`.
        if let tokenizer = metadata[TextInputs.metadataKey] {
            metadata[TextInputs.metadataKey] = "tokenizer.json carried in the file (\(tokenizer.utf8.count.formatted()) bytes)"
        }
        if configText == nil {
            // An HF folder (or a file with config.json beside it): show that config, as the pipelines would use it.
            if let (data, source) = try? ResolvedCheckpoint.findConfig(checkpoint: url, reader: reader, explicit: nil,
                                                                       maxBytes: self.options.limits.maxHeaderBytes) {
                configText = Inspector.prettyJSON(String(decoding: data, as: UTF8.self))
                configSource = source
            }
        }
        var summary = CheckpointSummary(path: reader.url.path, format: reader.format, fileBytes: Inspector.diskBytes(of: reader),
                                        tensorCount: reader.tensorInfos.count, tensorBytes: reader.totalBytes, dtypeTotals: totals,
                                        tensors: reader.tensorInfos.map { .init(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: $0.byteCount) },
                                        metadata: metadata, config: configText, provenance: reader.provenance, dataVerified: options.readData)
        summary.configSource = configSource
        for info in reader.tensorInfos where info.dtype.isFloatingPoint {
            summary.parameters.add(name: info.name, count: ShapeMath.elementCount(info.shape) ?? 0)
        }
        // Best effort: a file that is not a model (a reference, a bare state dict) has no resolved memory.
        if let resolved = try? resolved() {
            summary.resolvedMemory = resolved.config.memory
            summary.memoryLayouts = resolved.report.memoryLayouts
            summary.runsAs = resolved.report.architecture.isEmpty ? nil : resolved.report.architecture
            summary.headSource = resolved.report.headSource
        }
        return summary
    }
}
