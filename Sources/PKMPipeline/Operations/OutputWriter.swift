import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor

/// Progress callbacks of a write: (tensors done, total) and (tensor bytes done, total bytes).
public struct WriteProgress {
    public var tensors: ((Int, Int) -> Void)?
    public var bytes: ((Int, Int) -> Void)?
    public init(tensors: ((Int, Int) -> Void)? = nil, bytes: ((Int, Int) -> Void)? = nil) {
        self.tensors = tensors
        self.bytes = bytes
    }
}

/// The one way operations write a checkpoint file: format from the options or the extension, provenance
/// naming the source and its SHA-256 (hashed from the source's mapping while the output is written),
/// the carried tokenizer, tensors streamed in order with each source tensor's pages released once the
/// writer has moved on, and the size of what was written.
struct OutputWriter {
    let source: LoadedCheckpoint
    let destination: URL
    let format: CheckpointFormat
    let options: WriteOptions

    /// - Parameter operation: the provenance's description when ``OutputOptions/operation`` is nil.
    /// - Throws: ``PipelineError`` when no format can be inferred.
    init(source: LoadedCheckpoint, destination: URL, output: OutputOptions, operation: @autoclosure () -> String) throws {
        self.source = source
        self.destination = destination
        format = try output.resolvedFormat(for: destination)
        var write = output.write
        if write.provenance == nil {
            write.provenance = Provenance(sourceFile: source.reader.url.lastPathComponent, sourceSHA256: nil,
                                          operation: output.operation ?? operation())
            write.pendingSourceDigest = source.digest
        }
        options = write
    }

    /// What a tensor's data is, and which source tensor's pages to release once the writer is past it.
    struct Item {
        var data: TensorData
        var releasing: String?
    }

    /// Writes `infos` with `metadata` (plus the carried tokenizer, unless `carryTokenizer` is false).
    /// - Returns: the size of the file written.
    /// - Throws: ``FormatError`` or whatever `item` throws; nothing is left at the destination on failure.
    func write(_ infos: [TensorInfo], metadata: [String: String], carryTokenizer: Bool = true, progress: WriteProgress,
               item: (TensorInfo) throws -> Item) throws -> Int {
        var metadata = metadata
        if carryTokenizer, metadata[TextInputs.metadataKey] == nil {
            metadata[TextInputs.metadataKey] = TextInputs.carriedTokenizer(for: source)
        }
        let reader = source.reader
        // Every writer is done with a tensor's data once it asks for the next: drop the previous one's pages,
        // so resident memory stays bounded by a few tensors whatever the checkpoint's size.
        var previous: String?
        defer { if let previous { reader.releasePages(ofTensor: previous) } }
        try Checkpoints.writeStreaming(to: destination, format: format, tensorInfos: infos, metadata: metadata, options: options,
                                       progress: ByteProgress.perTensor(infos, perTensor: progress.tensors, bytes: progress.bytes)) { info in
            if let done = previous { reader.releasePages(ofTensor: done) }
            let next = try item(info)
            previous = next.releasing
            return next.data
        }
        return (try? FileManager.default.attributesOfItem(atPath: destination.path)[.size] as? Int) ?? 0
    }
}
