import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
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
}

/// `inspect`.
public enum Inspector {
    /// Summarises a checkpoint; with `readData`, reads every tensor so damage anywhere is found.
    /// - Throws: ``FormatError``.
    public static func inspect(_ url: URL, readData: Bool = false, limits: ReaderLimits = ReaderLimits(),
                               memory: MemoryImportOptions = MemoryImportOptions()) throws -> CheckpointSummary {
        let reader = try Checkpoints.open(url, limits: limits)
        var totals: [String: CheckpointSummary.DTypeTotal] = [:]
        for info in reader.tensorInfos {
            totals[info.dtype.displayName, default: .init(count: 0, bytes: 0)].count += 1
            totals[info.dtype.displayName, default: .init(count: 0, bytes: 0)].bytes += info.byteCount
        }
        if readData {
            for info in reader.tensorInfos { _ = try reader.tensor(named: info.name) }
        }
        var metadata = reader.metadata
        let configText = metadata.removeValue(forKey: "config").map(prettyJSON)
        var summary = CheckpointSummary(path: reader.url.path, format: reader.format, fileBytes: diskBytes(of: reader),
                                        tensorCount: reader.tensorInfos.count, tensorBytes: reader.totalBytes, dtypeTotals: totals,
                                        tensors: reader.tensorInfos.map { .init(name: $0.name, dtype: $0.dtype, shape: $0.shape, bytes: $0.byteCount) },
                                        metadata: metadata, config: configText, provenance: reader.provenance, dataVerified: readData)
        // Best effort: a file that is not a model (a reference, a bare state dict) has no resolved memory.
        if let resolved = try? ResolvedCheckpoint(url: url, limits: limits, memory: memory) {
            summary.resolvedMemory = resolved.config.memory
            summary.memoryLayouts = resolved.report.memoryLayouts
        }
        return summary
    }

    static func diskBytes(of reader: any CheckpointReader) -> Int {
        let manager = FileManager.default
        func size(_ path: String) -> Int { (try? manager.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        var total = size(reader.url.path)
        if reader.url.lastPathComponent.hasSuffix(".index.json"),
           let data = manager.contents(atPath: reader.url.path),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let weightMap = object["weight_map"] as? [String: String] {
            let folder = reader.url.deletingLastPathComponent()
            for shard in Set(weightMap.values) { total += size(folder.appendingPathComponent(shard).path) }
        }
        return total
    }

    static func prettyJSON(_ text: String) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)),
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}
