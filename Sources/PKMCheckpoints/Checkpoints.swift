import Foundation
import PKMFormats
import PKMHDF5
import PKMTensor

/// Entry points that pick the reader or writer for a path.
public enum Checkpoints {
    /// Detects the format from the first bytes (HDF5 and pkmz magic, a `torch.save` zip or legacy
    /// pickle, a safetensors header length followed by `{`), falling back to the extension.
    /// - Throws: ``FormatError/fileNotFound(path:)``, ``FormatError/notRegularFile(path:found:what:)``,
    ///   ``FormatError/unknownFormat(path:reason:)``.
    public static func detectFormat(of url: URL) throws -> CheckpointFormat {
        // Only a regular file is opened: a FIFO would block open(), a device would never end.
        let head = try RegularFile.head(of: url, count: 512, what: "a checkpoint file")
        if head.count >= 8, Array(head.prefix(8)) == [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] { return .hdf5 }
        if head.count >= 8, Array(head.prefix(8)) == PKMZLayout.magic { return .pkmz }
        if TorchCheckpointReader.looksLikeTorchCheckpoint(head) { return .pytorch }
        if head.count >= 9, head[head.startIndex + 8] == UInt8(ascii: "{") { return .safetensors }
        if let byExtension = CheckpointFormat(pathExtension: url.pathExtension) { return byExtension }
        throw FormatError.unknownFormat(path: url.path, reason: head.isEmpty ? "the file is empty" : "no known magic bytes")
    }

    /// Opens a checkpoint file, a sharded index (`*.index.json`, safetensors or `torch.save` shards),
    /// or a model folder holding one (see ``checkpointFile(inFolder:)``), with the default ``ReadOptions``
    /// but `limits`.
    /// - Throws: ``FormatError``.
    public static func open(_ url: URL, format: CheckpointFormat? = nil, limits: ReaderLimits = ReaderLimits()) throws -> any CheckpointReader {
        try open(url, format: format, options: ReadOptions(limits: limits))
    }

    /// Opens a checkpoint file, a sharded index or a model folder, each reader with the settings of `options`
    /// it needs (limits for all; HDF5 isolation for HDF5; the state-dict key for pickles).
    /// - Throws: ``FormatError``.
    public static func open(_ url: URL, format: CheckpointFormat? = nil, options: ReadOptions) throws -> any CheckpointReader {
        let limits = options.limits
        if ModelFolder.isFolder(url) {
            return try open(try checkpointFile(inFolder: url), format: format, options: options)
        }
        guard FileManager.default.fileExists(atPath: url.path) else { throw FormatError.fileNotFound(path: url.path) }
        try RegularFile.requireRegular(url, what: "a checkpoint file")
        if url.lastPathComponent.hasSuffix(".index.json") {
            return try ShardedCheckpointReader(indexURL: url, limits: limits, stateDictKey: options.stateDictKey)
        }
        switch try format ?? detectFormat(of: url) {
        case .hdf5: return try HDF5Reader(url: url, limits: limits, isolation: options.hdf5Isolation)
        case .safetensors: return try SafetensorsReader(url: url, limits: limits)
        case .pkmz: return try PKMZReader(url: url, limits: limits)
        case .pytorch: return try TorchCheckpointReader(url: url, limits: limits, stateDictKey: options.stateDictKey)
        }
    }

    /// The weights file inside an HF-style model folder (``ModelFolder/weightsFile()``).
    /// - Throws: as ``ModelFolder/weightsFile()``.
    public static func checkpointFile(inFolder folder: URL) throws -> URL { try ModelFolder(folder).weightsFile() }

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

    /// The writer of `format`, or an error naming `url` for a format that is read only.
    static func writableWriter(for format: CheckpointFormat, at url: URL) throws -> any CheckpointWriter.Type {
        guard let writer = writer(for: format) else {
            throw FormatError.writeFailed(path: url.path, reason: "pkm-convert reads PyTorch pickles but never writes them (loading one means unpickling, which can run code); write .safetensors or .pkmz")
        }
        return writer
    }

    /// Writes a checkpoint in `format` atomically; see ``CheckpointWriter``.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` for a format that is read only;
    ///   ``FormatError`` or whatever `tensor` throws; nothing is left at `url` on failure.
    public static func write(to url: URL, format: CheckpointFormat, tensorInfos: [TensorInfo],
                             metadata: [String: String], options: WriteOptions = WriteOptions(),
                             progress: ((Int, Int) -> Void)? = nil,
                             tensor: (TensorInfo) throws -> Tensor) throws {
        try writableWriter(for: format, at: url).write(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress, tensor: tensor)
    }

    /// Like ``write(to:format:tensorInfos:metadata:options:progress:tensor:)``, but a tensor may be a
    /// ``TensorSource``: pkmz and safetensors stream it in bounded chunks, HDF5 materialises it whole.
    /// - Throws: as the tensor-based write, or whatever a source throws.
    public static func writeStreaming(to url: URL, format: CheckpointFormat, tensorInfos: [TensorInfo],
                                      metadata: [String: String], options: WriteOptions = WriteOptions(),
                                      progress: ((Int, Int) -> Void)? = nil,
                                      data: (TensorInfo) throws -> TensorData) throws {
        try writableWriter(for: format, at: url).writeStreaming(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress, data: data)
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
