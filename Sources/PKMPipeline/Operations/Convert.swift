import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor

/// Result of a conversion.
public struct ConvertResult: Sendable, Codable {
    public var source: String
    public var destination: String
    public var sourceFormat: CheckpointFormat
    public var destinationFormat: CheckpointFormat
    public var tensorCount: Int
    /// Tensor bytes as stored in the destination (before compression).
    public var tensorBytes: Int
    /// Size of the destination file.
    public var fileBytes: Int
    public var seconds: Double
    public var diagnostics: [Diagnostic]
}

extension LoadedCheckpoint {
    /// Tensors of at least this many bytes (kept in their dtype) are streamed through a ``TensorSource`` by `convert`.
    public static let streamedTensorBytes = 16 << 20

    /// `convert`: writes every tensor under its own name, values exactly (unless ``OutputOptions/dtype`` narrows),
    /// with the metadata, the config (an HF folder's `config.json` travels into the file) and the tokenizer.
    /// Memory stays bounded by the largest tensor: large tensors are streamed chunk by chunk from the mapping.
    /// A folder destination (``ModelFolder/isFolderDestination(_:)``) is not a file: use ``export(to:options:progress:)``.
    /// - Throws: ``FormatError``, ``PipelineError``; nothing is left at `destination` on failure.
    public func convert(to destination: URL, options: OutputOptions = OutputOptions(),
                        progress: WriteProgress = WriteProgress()) throws -> ConvertResult {
        let start = Date()
        let target = try options.resolvedFormat(for: destination)
        let writer = try OutputWriter(source: self, destination: destination, output: options,
                                      operation: "convert to \(target.rawValue), dtype \(options.dtype.rawValue)")
        let format = writer.format
        let infos = reader.tensorInfos.map { TensorInfo(name: $0.name, dtype: options.dtype.target(for: $0.dtype), shape: $0.shape) }
        var diagnostics = DTypePolicy.conversionDiagnostics(from: reader.tensorInfos.map(\.dtype), to: infos.map(\.dtype))
        var metadata = reader.metadata
        if metadata["config"] == nil,
           let (data, origin) = try? ResolvedCheckpoint.findConfig(checkpoint: url, reader: reader, explicit: nil, maxBytes: self.options.limits.maxHeaderBytes) {
            // An HF folder's config.json (or one beside the file) travels with the weights, every key kept.
            let text = String(decoding: data, as: UTF8.self)
            if JSONValue(objectText: text) != nil {
                metadata["config"] = text.trimmingCharacters(in: .whitespacesAndNewlines)
                diagnostics.append(Diagnostic(.note, "config embedded from \(origin)"))
            } else {
                diagnostics.append(Diagnostic(.warning, "\(origin) is not a JSON object; the output carries no config"))
            }
        }
        if format != .pkmz, let provenance = reader.provenance, metadata["pkm_provenance"] == nil,
           let json = try? JSONEncoder().encode(provenance) {
            metadata["pkm_source_provenance"] = String(decoding: json, as: UTF8.self)
        }
        let reader = self.reader
        let fileBytes = try writer.write(infos, metadata: metadata, progress: progress) { info in
            let tensor = try reader.tensor(named: info.name)
            guard tensor.dtype == info.dtype, tensor.storage.count >= Self.streamedTensorBytes else {
                return .init(data: .tensor(try tensor.converted(to: info.dtype)), releasing: info.name)
            }
            // Large tensors kept in their dtype are streamed: the writer copies them chunk by chunk from the mapped
            // source, and the pages consumed are released as it goes, so resident memory stays at a few chunks.
            let name = info.name, storage = tensor.storage
            return .init(data: .source(TensorSource(fill: { offset, buffer in
                storage.withUnsafeBytes { bytes in
                    guard let base = bytes.baseAddress, let target = buffer.baseAddress else { return }
                    target.copyMemory(from: base + offset, byteCount: min(buffer.count, bytes.count - offset))
                }
            }, consumed: { upTo in reader.releasePages(ofTensor: name, upTo: upTo) })), releasing: info.name)
        }
        return ConvertResult(source: url.path, destination: destination.path, sourceFormat: reader.format,
                             destinationFormat: format, tensorCount: infos.count, tensorBytes: infos.reduce(0) { $0 + $1.byteCount },
                             fileBytes: fileBytes, seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
