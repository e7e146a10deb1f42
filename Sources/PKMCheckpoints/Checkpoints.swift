import Foundation
import PKMFormats
import PKMHDF5
import PKMTensor

/// Entry points that pick the reader or writer for a path.
public enum Checkpoints {
    /// Detects the format from the first bytes, falling back to the extension.
    /// - Throws: ``FormatError/fileNotFound(path:)``, ``FormatError/unknownFormat(path:reason:)``.
    public static func detectFormat(of url: URL) throws -> CheckpointFormat {
        guard let handle = FileHandle(forReadingAtPath: url.path) else { throw FormatError.fileNotFound(path: url.path) }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 16)) ?? Data()
        if head.count >= 8, Array(head.prefix(8)) == [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] { return .hdf5 }
        if head.count >= 8, Array(head.prefix(8)) == PKMZLayout.magic { return .pkmz }
        if head.count >= 9, head[head.startIndex + 8] == UInt8(ascii: "{") { return .safetensors }
        if let byExtension = CheckpointFormat(pathExtension: url.pathExtension) { return byExtension }
        throw FormatError.unknownFormat(path: url.path, reason: head.isEmpty ? "the file is empty" : "no known magic bytes")
    }

    /// Opens a checkpoint file, a sharded safetensors index (`*.index.json`), or a folder holding one
    /// (`model.safetensors.index.json`, `model.safetensors`, or a single `.pkmz`/`.h5`/`.safetensors`).
    /// - Throws: ``FormatError``.
    public static func open(_ url: URL, format: CheckpointFormat? = nil, limits: ReaderLimits = ReaderLimits()) throws -> any CheckpointReader {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw FormatError.fileNotFound(path: url.path)
        }
        if isDirectory.boolValue {
            return try open(try checkpointFile(inFolder: url), format: format, limits: limits)
        }
        if url.lastPathComponent.hasSuffix(".index.json") {
            return try ShardedSafetensorsReader(indexURL: url, limits: limits)
        }
        switch try format ?? detectFormat(of: url) {
        case .hdf5: return try HDF5Reader(url: url, limits: limits)
        case .safetensors: return try SafetensorsReader(url: url, limits: limits)
        case .pkmz: return try PKMZReader(url: url, limits: limits)
        case .pytorch: return try TorchCheckpointReader(url: url, limits: limits)
        }
    }

    /// The weights file inside an HF-style model folder.
    /// - Throws: ``FormatError/fileNotFound(path:)`` when the folder holds none, or
    ///   ``FormatError/unknownFormat(path:reason:)`` when it holds several candidates.
    public static func checkpointFile(inFolder folder: URL) throws -> URL {
        for preferred in ["model.safetensors.index.json", "model.safetensors", "model.pkmz", "model.h5"] {
            let candidate = folder.appendingPathComponent(preferred)
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
        }
        let contents = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        let candidates = contents.filter { CheckpointFormat(pathExtension: ($0 as NSString).pathExtension) != nil }.sorted()
        if candidates.count == 1 { return folder.appendingPathComponent(candidates[0]) }
        if candidates.isEmpty {
            throw FormatError.fileNotFound(path: folder.appendingPathComponent("model.safetensors").path)
        }
        throw FormatError.unknownFormat(path: folder.path, reason: "several checkpoint files (\(candidates.joined(separator: ", "))); name one")
    }

    /// The writer type for a format, or nil for a format pkm-convert reads but does not write
    /// (``CheckpointFormat/pytorch``: a pickle would have to be unpickled, that is executed, to load).
    public static func writer(for format: CheckpointFormat) -> (any CheckpointWriter.Type)? {
        switch format {
        case .hdf5: return HDF5Writer.self
        case .safetensors: return SafetensorsWriter.self
        case .pkmz: return PKMZWriter.self
        case .pytorch: return nil
        }
    }

    /// Writes a checkpoint in `format` atomically; see ``CheckpointWriter``.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` for a format that is read only;
    ///   ``FormatError`` or whatever `tensor` throws; nothing is left at `url` on failure.
    public static func write(to url: URL, format: CheckpointFormat, tensorInfos: [TensorInfo],
                             metadata: [String: String], options: WriteOptions = WriteOptions(),
                             progress: ((Int, Int) -> Void)? = nil,
                             tensor: (TensorInfo) throws -> Tensor) throws {
        guard let writer = writer(for: format) else {
            throw FormatError.writeFailed(path: url.path, reason: "pkm-convert reads PyTorch pickles but never writes them (loading one means unpickling, which can run code); write .safetensors or .pkmz")
        }
        try writer.write(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress, tensor: tensor)
    }

    /// Writes a whole in-memory state dict; see ``write(to:format:tensorInfos:metadata:options:progress:tensor:)``.
    public static func write(_ stateDict: StateDict, to url: URL, format: CheckpointFormat,
                             options: WriteOptions = WriteOptions()) throws {
        let infos = stateDict.entries.map { TensorInfo(name: $0.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape) }
        try write(to: url, format: format, tensorInfos: infos, metadata: stateDict.metadata, options: options) { info in
            guard let tensor = stateDict[info.name] else { throw FormatError.tensorNotFound(path: url.path, tensor: info.name) }
            return tensor
        }
    }
}
