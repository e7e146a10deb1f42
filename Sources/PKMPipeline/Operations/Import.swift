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

/// Options of ``LoadedCheckpoint/import(to:options:progress:)``.
public struct ImportOptions: Sendable {
    /// Refuse tensors the model does not use (they are kept and reported otherwise).
    public var strict = false
    /// Format, dtype and writer settings of the output.
    public var output = OutputOptions()
    public init(strict: Bool = false, output: OutputOptions = OutputOptions()) {
        self.strict = strict
        self.output = output
    }
}

extension LoadedCheckpoint {
    /// `import`: maps the checkpoint onto the model's canonical names (`schemas/pkm-checkpoints.md` §6 aliases and the peer layouts),
    /// checks every tensor against the config, and writes canonical names (model order first, then unexpected
    /// tensors in source order), the completed config, the tokenizer and provenance.
    /// - Throws: ``PipelineError/mappingFailed(checkpoint:problems:)`` for missing or mis-shaped tensors (or
    ///   unexpected ones under ``ImportOptions/strict``); ``FormatError`` for unreadable input or a failed write.
    public func `import`(to destination: URL, options: ImportOptions = ImportOptions(),
                         progress: WriteProgress = WriteProgress()) throws -> ImportResult {
        let start = Date()
        let checkpoint = try resolved()
        try checkpoint.requireUsable(strict: options.strict)
        let output = options.output
        let writer = try OutputWriter(source: self, destination: destination, output: output,
                                      operation: "import\(options.strict ? " (strict)" : "")")
        let report = checkpoint.report
        let entries = report.mapped + report.unexpected
        let infos = entries.map { TensorInfo(name: $0.canonical, dtype: output.dtype.target(for: $0.dtype), shape: $0.shape) }
        let metadata = ["config": String(decoding: checkpoint.config.encodedJSON(), as: UTF8.self)]
        let fileBytes = try writer.write(infos, metadata: metadata, progress: progress) { info in
            .init(data: .tensor(try checkpoint.tensor(canonical: info.name).converted(to: info.dtype)),
                  releasing: checkpoint.sourceName(ofCanonical: info.name))
        }
        var diagnostics = report.warnings.map { Diagnostic(.warning, $0) }
        diagnostics += report.unexpected.map { Diagnostic(.warning, "unexpected tensor '\($0.source)' kept as '\($0.canonical)' (the model does not use it)") }
        diagnostics += report.ignored.map { Diagnostic(.note, "ignored buffer '\($0.source)' (not a weight)") }
        let renamed = report.mapped.filter { !$0.rules.isEmpty }.count
        if renamed > 0 { diagnostics.append(Diagnostic(.note, "\(renamed) tensor names mapped to canonical names")) }
        return ImportResult(report: report, destination: destination.path, destinationFormat: writer.format, tensorCount: infos.count,
                            fileBytes: fileBytes, seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
