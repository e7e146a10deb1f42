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

/// Conversions between HDF5, safetensors and pkmz that keep names and values exactly.
public enum Converter {
    /// Tensors of at least this many bytes (kept in their dtype) are streamed through a ``TensorSource``.
    static let streamedTensorBytes = 16 << 20

    /// Converts `source` to `destination`, tensor by tensor (memory bounded by the largest tensor).
    /// - Parameter byteProgress: called after each tensor with (tensor bytes written, total), for a progress line that
    ///   does not stall on a few huge tensors among many small ones.
    /// - Throws: ``FormatError``; nothing is left at `destination` on failure.
    public static func convert(_ source: URL, to destination: URL, options: OutputOptions = OutputOptions(),
                               limits: ReaderLimits = ReaderLimits(),
                               progress: ((Int, Int) -> Void)? = nil,
                           byteProgress: ((Int, Int) -> Void)? = nil) throws -> ConvertResult {
        let start = Date()
        let reader = try Checkpoints.open(source, limits: limits)
        let format = try options.resolvedFormat(for: destination)
        var write = options.write
        if write.provenance == nil {
            // The source is hashed on another thread while it is converted (pkmz records it last).
            write.provenance = Provenance(sourceFile: reader.url.lastPathComponent, sourceSHA256: nil,
                                          operation: "convert --to \(format.rawValue) --dtype \(options.dtype.rawValue)")
            write.pendingSourceDigest = PendingSHA256(file: reader.url)
        }
        let infos = reader.tensorInfos.map { TensorInfo(name: $0.name, dtype: options.dtype.target(for: $0.dtype), shape: $0.shape) }
        var diagnostics = DTypePolicy.conversionDiagnostics(from: reader.tensorInfos.map(\.dtype), to: infos.map(\.dtype))
        var metadata = reader.metadata
        if metadata["config"] == nil,
           let (data, origin) = try? ResolvedCheckpoint.findConfig(checkpoint: source, reader: reader, explicit: nil, maxBytes: limits.maxHeaderBytes) {
            // An HF folder's config.json (or one beside the file) travels with the weights, every key kept.
            let text = String(decoding: data, as: UTF8.self)
            if JSONValue(objectText: text) != nil {
                metadata["config"] = text.trimmingCharacters(in: .whitespacesAndNewlines)
                diagnostics.append(Diagnostic(.note, "config embedded from \(origin)"))
            } else {
                diagnostics.append(Diagnostic(.warning, "\(origin) is not a JSON object; the output carries no config"))
            }
        }
        if metadata[TextInputs.metadataKey] == nil {
            metadata[TextInputs.metadataKey] = TextInputs.carriedTokenizer(for: source, reader: reader)
        }
        if format != .pkmz, let provenance = reader.provenance, metadata["pkm_provenance"] == nil,
           let json = try? JSONEncoder().encode(provenance) {
            metadata["pkm_source_provenance"] = String(decoding: json, as: UTF8.self)
        }
        // Large tensors kept in their dtype are streamed: the writer copies them chunk by chunk from the mapped
        // source, and the pages consumed are released as it goes, so resident memory stays at a few chunks.
        var previousTensor: String?
        defer { if let previousTensor { reader.releasePages(ofTensor: previousTensor) } }
        try Checkpoints.writeStreaming(to: destination, format: format, tensorInfos: infos, metadata: metadata, options: write,
                                       progress: ByteProgress.perTensor(infos, perTensor: progress, bytes: byteProgress), data: { info in
            // Every writer is done with a tensor once it asks for the next: drop the previous one's pages.
            if let previous = previousTensor { reader.releasePages(ofTensor: previous) }
            previousTensor = info.name
            let tensor = try reader.tensor(named: info.name)
            guard tensor.dtype == info.dtype, tensor.storage.count >= streamedTensorBytes else {
                return .tensor(try tensor.converted(to: info.dtype))
            }
            let name = info.name, storage = tensor.storage
            return .source(TensorSource(fill: { offset, buffer in
                storage.withUnsafeBytes { bytes in
                    guard let base = bytes.baseAddress, let target = buffer.baseAddress else { return }
                    target.copyMemory(from: base + offset, byteCount: min(buffer.count, bytes.count - offset))
                }
            }, consumed: { upTo in reader.releasePages(ofTensor: name, upTo: upTo) }))
        })
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: destination.path)[.size] as? Int) ?? 0
        return ConvertResult(source: source.path, destination: destination.path, sourceFormat: reader.format,
                             destinationFormat: format, tensorCount: infos.count, tensorBytes: infos.reduce(0) { $0 + $1.byteCount },
                             fileBytes: fileBytes, seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}
