import Foundation
import PKMTensor

/// Writes one safetensors file that the Hugging Face `safetensors` package reads.
///
/// The header is computed from the tensor table alone, before any data is asked for:
/// `__metadata__` first (the `metadata` map, keys sorted, plus `pkm_provenance` as JSON when
/// `options.provenance` is set, replacing any `pkm_provenance` already in `metadata`), then each
/// tensor in the order given, with consecutive `data_offsets` from 0. The JSON is padded with
/// spaces to a multiple of 8 bytes, as the reference writer does, so that the data buffer starts
/// 8-byte aligned. An empty metadata map writes no `__metadata__` key.
///
/// Tensors are then streamed one at a time through ``AtomicOutputFile``: nothing appears at
/// `url` unless every tensor was written, and an existing file there stays untouched until
/// then. The same inputs always give the same bytes.
public enum SafetensorsWriter: CheckpointWriter {
    /// Writes `tensorInfos` in order, asking `tensor` for each one's data just before writing it.
    /// - Parameters:
    ///   - metadata: `__metadata__` strings; `config` is the model config JSON.
    ///   - options: only `provenance` is used.
    ///   - progress: called after each tensor with (tensors written, total).
    /// - Throws: ``FormatError``: `.duplicateTensor`; `.invalidTensor` for the reserved name
    ///   `__metadata__`, or data whose dtype or shape differs from its entry; `.tensor` for a
    ///   shape that is negative or overflows; `.io` when the folder is not writable;
    ///   `.writeFailed`; or whatever `tensor` throws. Nothing is left at `url` on failure.
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                             options: WriteOptions = WriteOptions(), progress: ((Int, Int) -> Void)? = nil,
                             tensor: (TensorInfo) throws -> Tensor) throws {
        try writeStreaming(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress) { info in
            .tensor(try tensor(info))
        }
    }

    /// Like ``write(to:tensorInfos:metadata:options:progress:tensor:)``, but each tensor may be a
    /// ``TensorSource``, written in chunks of ``streamChunkBytes``: each chunk is filled by all cores
    /// (`options.threads`, 0 = all) while a serial I/O queue writes the previous one, with at most
    /// ``streamBufferCount`` chunks in memory, so memory stays bounded whatever the tensor's size.
    /// The bytes are the same as for whole tensors.
    /// - Throws: as ``write(to:tensorInfos:metadata:options:progress:tensor:)``, or whatever a source throws.
    public static func writeStreaming(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions,
                                      progress: ((Int, Int) -> Void)?, data: (TensorInfo) throws -> TensorData) throws {
        let path = url.path
        let layout = try header(for: tensorInfos, metadata: metadata, provenance: try options.resolvedProvenance(), path: path)
        guard options.threads >= 0 else { throw FormatError.writeFailed(path: path, reason: "thread count \(options.threads) is negative") }
        let threads = options.threads > 0 ? options.threads : max(1, ProcessInfo.processInfo.activeProcessorCount)
        try AtomicOutputFile.write(to: url) { output in
            try output.write(layout.prefix)
            let stream = ChunkStream(output: output, path: path, chunkBytes: streamChunkBytes, bufferCount: streamBufferCount, threads: threads)
            for (index, info) in tensorInfos.enumerated() {
                switch try data(info) {
                case .tensor(let data):
                    guard data.dtype == info.dtype, data.shape == info.shape else {
                        throw FormatError.invalidTensor(path: path, tensor: info.name, reason:
                            "the data supplied is \(data.dtype.rawValue) \(data.shape) but the tensor table declares \(info.dtype.rawValue) \(info.shape)")
                    }
                    guard data.storage.count == layout.byteCounts[index] else {
                        throw FormatError.invalidTensor(path: path, tensor: info.name, reason:
                            "the data supplied holds \(data.storage.count) bytes, \(layout.byteCounts[index]) expected")
                    }
                    try stream.finish()
                    try output.write(data.storage)
                case .source(let source):
                    try stream.write(source, byteCount: layout.byteCounts[index])
                }
                progress?(index + 1, tensorInfos.count)
            }
            try stream.finish()
            guard output.bytesWritten == layout.fileSize else {
                throw FormatError.writeFailed(path: path, reason: "wrote \(output.bytesWritten) bytes, \(layout.fileSize) expected")
            }
        }
    }

    /// Bytes per chunk of a streamed tensor (a multiple of 4096, so of every element size).
    static let streamChunkBytes = 8 << 20
    /// Chunks of a streamed tensor in memory at once (being filled or waiting to be written).
    static let streamBufferCount = 3

    /// The start of a safetensors file for a tensor table: the 8-byte length, then the padded JSON.
    struct HeaderLayout {
        /// Length field and JSON header, ready to write.
        let prefix: Data
        /// Bytes of each tensor, in table order.
        let byteCounts: [Int]
        /// The whole file's size.
        let fileSize: Int
    }

    /// Builds the header of a file holding `tensorInfos` (exposed to tests; see the type's documentation).
    /// - Throws: ``FormatError`` for duplicate or reserved names and invalid shapes.
    static func header(for tensorInfos: [TensorInfo], metadata: [String: String], provenance: Provenance?,
                       path: String) throws -> HeaderLayout {
        var fullMetadata = metadata
        if let provenance {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            fullMetadata[SafetensorsNames.provenanceKey] = String(decoding: try encoder.encode(provenance), as: UTF8.self)
        }

        var json = "{"
        var first = true
        if !fullMetadata.isEmpty {
            json += JSONText.quoted(SafetensorsNames.metadataKey) + ":{"
            json += fullMetadata.sorted { $0.key < $1.key }
                .map { JSONText.quoted($0.key) + ":" + JSONText.quoted($0.value) }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var seen: Set<String> = []
        var byteCounts: [Int] = []
        byteCounts.reserveCapacity(tensorInfos.count)
        var offset = 0
        for info in tensorInfos {
            guard info.name != SafetensorsNames.metadataKey else {
                throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "'\(SafetensorsNames.metadataKey)' is reserved for metadata in safetensors; rename the tensor")
            }
            guard seen.insert(info.name).inserted else { throw FormatError.duplicateTensor(path: path, tensor: info.name) }
            let byteCount: Int
            do { byteCount = try ShapeMath.checkedByteCount(info.shape, dtype: info.dtype) } catch {
                throw FormatError.tensor(path: path, tensor: info.name, underlying: error)
            }
            let (end, overflow) = offset.addingReportingOverflow(byteCount)
            guard !overflow else {
                throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "the tensors' total size overflows 64-bit offsets")
            }
            if !first { json += "," }
            first = false
            json += JSONText.quoted(info.name)
            json += ":{\"dtype\":\"\(info.dtype.rawValue)\",\"shape\":[\(info.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            byteCounts.append(byteCount)
            offset = end
        }
        json += "}"
        var headerBytes = Data(json.utf8)
        let padding = (8 - headerBytes.count % 8) % 8
        headerBytes.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: padding))

        var prefix = Data()
        prefix.reserveCapacity(8 + headerBytes.count)
        let length = UInt64(headerBytes.count)
        for shift in stride(from: 0, to: 64, by: 8) { prefix.append(UInt8(truncatingIfNeeded: length >> UInt64(shift))) }
        prefix.append(headerBytes)
        let (fileSize, overflow) = prefix.count.addingReportingOverflow(offset)
        guard !overflow else {
            throw FormatError.writeFailed(path: path, reason: "the file's size overflows 64-bit offsets")
        }
        return HeaderLayout(prefix: prefix, byteCounts: byteCounts, fileSize: fileSize)
    }
}

/// Writes ``TensorSource``s in chunks (internal to ``SafetensorsWriter``): the calling thread fills
/// a chunk with all cores, a serial I/O queue writes it, and the next chunk is filled meanwhile.
/// A semaphore of `bufferCount` free buffers bounds memory.
private final class ChunkStream: @unchecked Sendable {
    private let output: AtomicOutputFile
    private let path: String
    private let chunkBytes: Int
    private let threads: Int
    private let buffers: [UnsafeMutableRawBufferPointer]
    private let free: DispatchSemaphore
    private var freeBuffers: [Int]
    private let lock = NSLock()
    private let io = DispatchQueue(label: "safetensors.writer.io")
    private let pending = DispatchGroup()
    private var writeError: Error?

    init(output: AtomicOutputFile, path: String, chunkBytes: Int, bufferCount: Int, threads: Int) {
        self.output = output
        self.path = path
        self.chunkBytes = chunkBytes
        self.threads = threads
        buffers = (0..<bufferCount).map { _ in .allocate(byteCount: chunkBytes, alignment: 64) }
        free = DispatchSemaphore(value: bufferCount)
        freeBuffers = Array(0..<bufferCount)
    }

    deinit {
        pending.wait()
        buffers.forEach { $0.deallocate() }
    }

    /// Waits for every queued chunk; rethrows the first write failure.
    func finish() throws {
        pending.wait()
        if let error = lock.withLock({ writeError }) { throw error }
    }

    /// Fills and queues `byteCount` bytes of `source`, chunk by chunk.
    func write(_ source: TensorSource, byteCount: Int) throws {
        var offset = 0
        while offset < byteCount {
            let count = min(chunkBytes, byteCount - offset)
            free.wait()
            let slot = lock.withLock { freeBuffers.removeLast() }
            let buffer = UnsafeMutableRawBufferPointer(rebasing: buffers[slot][0..<count])
            do {
                try fill(source, offset: offset, buffer: buffer)
            } catch {
                lock.withLock { freeBuffers.append(slot) }
                free.signal()
                throw error
            }
            offset += count
            source.consumed?(offset)
            if let error = lock.withLock({ writeError }) { throw error }
            pending.enter()
            let queued = UncheckedRawBuffer(buffer)
            io.async { [self] in
                defer {
                    lock.withLock { freeBuffers.append(slot) }
                    free.signal()
                    pending.leave()
                }
                guard lock.withLock({ writeError == nil }) else { return }
                do { try output.write(UnsafeRawBufferPointer(queued.buffer)) } catch {
                    lock.withLock { writeError = error }
                }
            }
        }
    }

    /// Fills one chunk, split into whole-4096-byte parts across the threads.
    private func fill(_ source: TensorSource, offset: Int, buffer: UnsafeMutableRawBufferPointer) throws {
        let pages = (buffer.count + 4095) / 4096
        let workers = min(threads, pages)
        guard workers > 1 else {
            try source.fill(offset, buffer)
            return
        }
        let perWorker = (pages + workers - 1) / workers * 4096
        let errors = ErrorSlots(count: workers)
        let base = UncheckedRawBuffer(buffer)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let start = worker * perWorker
            let end = min(base.buffer.count, start + perWorker)
            guard start < end else { return }
            do { try source.fill(offset + start, UnsafeMutableRawBufferPointer(rebasing: base.buffer[start..<end])) } catch {
                errors.set(worker, error)
            }
        }
        if let error = errors.first { throw error }
    }
}

/// A buffer handed to workers that write disjoint ranges before the call returns.
private struct UncheckedRawBuffer: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

/// Per-worker error slots.
private final class ErrorSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [Error?]
    init(count: Int) { errors = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ error: Error) { lock.withLock { errors[index] = error } }
    var first: Error? { lock.withLock { errors.compactMap { $0 }.first } }
}
