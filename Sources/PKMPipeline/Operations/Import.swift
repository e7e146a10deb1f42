import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// Result of `import`.
public struct ImportResult: Sendable, Codable {
    /// How the names were mapped.
    public var report: MappingReport
    public var destination: String
    public var destinationFormat: CheckpointFormat
    public var tensorCount: Int
    public var fileBytes: Int
    public var seconds: Double
    public var diagnostics: [Diagnostic]
}

/// `import`: maps a checkpoint onto the model's canonical names and writes it with its config.
public enum Importer {
    /// Options for ``run(source:destination:configURL:strict:output:limits:progress:)``.
    ///
    /// Reads any format (or an HF folder), applies the spec §6 aliases, checks every tensor against
    /// the config, and writes canonical names (model order first, then unexpected tensors in
    /// source order), the config and provenance.
    /// - Parameter byteProgress: called after each tensor with (tensor bytes written, total), for a progress line that
    ///   does not stall on a few huge tensors among many small ones.
    /// - Throws: ``PipelineError/mappingFailed(checkpoint:problems:)`` for missing or mis-shaped
    ///   tensors (or unexpected ones under `strict`); ``FormatError`` for unreadable input or a failed write.
    public static func run(source: URL, destination: URL, configURL: URL? = nil, strict: Bool = false,
                           output: OutputOptions = OutputOptions(), limits: ReaderLimits = ReaderLimits(),
                           memory: MemoryImportOptions = MemoryImportOptions(),
                           progress: ((Int, Int) -> Void)? = nil,
                           byteProgress: ((Int, Int) -> Void)? = nil) throws -> ImportResult {
        let start = Date()
        let checkpoint = try ResolvedCheckpoint(url: source, configURL: configURL, limits: limits, memory: memory)
        try checkpoint.requireUsable(strict: strict)
        let format = try output.resolvedFormat(for: destination)
        var write = output.write
        // The source is hashed on another thread while it is written (pkmz records it last).
        write.provenance = Provenance(sourceFile: checkpoint.reader.url.lastPathComponent, sourceSHA256: nil,
                                      operation: "import\(strict ? " --strict" : "")")
        write.pendingSourceDigest = PendingSHA256(file: checkpoint.reader.url)
        let report = checkpoint.report
        let entries = report.mapped + report.unexpected
        let infos = entries.map { TensorInfo(name: $0.canonical, dtype: output.dtype.target(for: $0.dtype), shape: $0.shape) }
        var metadata: [String: String] = [:]
        metadata["config"] = String(decoding: checkpoint.config.encodedJSON(), as: UTF8.self)
        metadata[TextInputs.metadataKey] = TextInputs.carriedTokenizer(for: source, reader: checkpoint.reader)
        try Checkpoints.write(to: destination, format: format, tensorInfos: infos, metadata: metadata, options: write,
                              progress: ByteProgress.perTensor(infos, perTensor: progress, bytes: byteProgress)) { info in
            try checkpoint.tensor(canonical: info.name).converted(to: info.dtype)
        }
        var diagnostics = report.warnings.map { Diagnostic(.warning, $0) }
        diagnostics += report.unexpected.map { Diagnostic(.warning, "unexpected tensor '\($0.source)' kept as '\($0.canonical)' (the model does not use it)") }
        diagnostics += report.ignored.map { Diagnostic(.note, "ignored buffer '\($0.source)' (not a weight)") }
        let renamed = report.mapped.filter { !$0.rules.isEmpty }.count
        if renamed > 0 { diagnostics.append(Diagnostic(.note, "\(renamed) tensor names mapped to canonical names")) }
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: destination.path)[.size] as? Int) ?? 0
        return ImportResult(report: report, destination: destination.path, destinationFormat: format, tensorCount: infos.count,
                            fileBytes: fileBytes, seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
