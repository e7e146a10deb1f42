import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
import PKMTensor

/// What `--dtype` asks for: keep each tensor's dtype, or store floating-point tensors as one type.
public enum DTypePolicy: String, Sendable, Codable, CaseIterable {
    case keep, f32, f16, bf16

    /// The target for a tensor currently stored as `dtype` (integers and bools are never changed).
    public func target(for dtype: DType) -> DType {
        guard dtype.isFloatingPoint else { return dtype }
        switch self {
        case .keep: return dtype
        case .f32: return .float32
        case .f16: return .float16
        case .bf16: return .bfloat16
        }
    }
}

/// A recoverable finding to show the user (printed by the CLI, never by the library).
public struct Diagnostic: Sendable, Codable, Equatable {
    public enum Severity: String, Sendable, Codable { case note, warning }
    public var severity: Severity
    public var message: String
    public init(_ severity: Severity, _ message: String) {
        self.severity = severity
        self.message = message
    }
}

/// Options shared by the pipelines that write a checkpoint.
public struct OutputOptions: Sendable {
    /// Output format; inferred from the destination's extension when nil.
    public var format: CheckpointFormat?
    /// Storage dtype of floating-point tensors.
    public var dtype: DTypePolicy = .keep
    /// Writer options (zstd level, frame size, threads).
    public var write = WriteOptions()
    public init() {}

    /// The destination format: explicit, or from the extension.
    /// - Throws: ``FormatError/unknownFormat(path:reason:)``.
    public func resolvedFormat(for destination: URL) throws -> CheckpointFormat {
        if let format { return format }
        guard let inferred = CheckpointFormat(pathExtension: destination.pathExtension) else {
            throw FormatError.unknownFormat(path: destination.path, reason: "the extension '.\(destination.pathExtension)' names no format")
        }
        return inferred
    }
}

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
    /// Converts `source` to `destination`, tensor by tensor (memory bounded by the largest tensor).
    /// - Throws: ``FormatError``; nothing is left at `destination` on failure.
    public static func convert(_ source: URL, to destination: URL, options: OutputOptions = OutputOptions(),
                               limits: ReaderLimits = ReaderLimits(),
                               progress: ((Int, Int) -> Void)? = nil) throws -> ConvertResult {
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
        var diagnostics: [Diagnostic] = []
        let infos = reader.tensorInfos.map { TensorInfo(name: $0.name, dtype: options.dtype.target(for: $0.dtype), shape: $0.shape) }
        let narrowed = zip(reader.tensorInfos, infos).filter { $0.0.dtype.byteSize > $0.1.dtype.byteSize }.count
        if narrowed > 0 {
            diagnostics.append(Diagnostic(.warning, "\(narrowed) tensors narrowed to \(options.dtype.rawValue) (round to nearest even); values change"))
        }
        var metadata = reader.metadata
        if format != .pkmz, let provenance = reader.provenance, metadata["pkm_provenance"] == nil,
           let json = try? JSONEncoder().encode(provenance) {
            metadata["pkm_source_provenance"] = String(decoding: json, as: UTF8.self)
        }
        try Checkpoints.write(to: destination, format: format, tensorInfos: infos, metadata: metadata, options: write,
                              progress: progress) { info in
            try reader.tensor(named: info.name).converted(to: info.dtype)
        }
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: destination.path)[.size] as? Int) ?? 0
        return ConvertResult(source: source.path, destination: destination.path, sourceFormat: reader.format,
                             destinationFormat: format, tensorCount: infos.count, tensorBytes: infos.reduce(0) { $0 + $1.byteCount },
                             fileBytes: fileBytes, seconds: Date().timeIntervalSince(start), diagnostics: diagnostics)
    }
}

extension Provenance {
    /// Provenance naming `url` (its SHA-256) and the operation.
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the file cannot be read.
    public static func describing(_ url: URL, operation: String) throws -> Provenance {
        Provenance(sourceFile: url.lastPathComponent, sourceSHA256: try SHA256.hex(ofFile: url), operation: operation)
    }
}
