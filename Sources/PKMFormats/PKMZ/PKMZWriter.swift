import Foundation
import PKMTensor

/// Writes pkm-convert's native `.pkmz` format (specified in `schemas/pkmz.md`).
///
/// Streams: it asks for one tensor at a time, cuts it into chunks of at most
/// ``WriteOptions/frameBytes`` (whole elements), byte-groups float chunks when
/// ``WriteOptions/byteGrouping`` is set, compresses batches of 2 × threads chunks in parallel (one
/// reused zstd context per thread) and appends the frames in order. Memory stays near
/// 2 × threads × frame size plus the tensor being written, whatever the model size. The header
/// and trailer follow the last frame; the file appears at the destination only when complete
/// (``AtomicOutputFile``).
public enum PKMZWriter: CheckpointWriter {
    /// Writes a pkmz file; see ``CheckpointWriter/write(to:tensorInfos:metadata:options:progress:tensor:)``.
    ///
    /// `metadata["config"]` is stored as the header's `config` object when it parses as a JSON
    /// object (its text is kept verbatim, minus surrounding whitespace), otherwise as an ordinary
    /// metadata string. `options.provenance` is recorded in the header.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` for invalid options or I/O failures,
    ///   ``FormatError/invalidTensor(path:tensor:reason:)`` when `tensor` returns data that does not
    ///   match its ``TensorInfo``, ``FormatError/duplicateTensor(path:tensor:)``, or whatever `tensor` throws.
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions,
                             progress: ((Int, Int) -> Void)?, tensor: (TensorInfo) throws -> Tensor) throws {
        let path = url.path
        func refuse(_ reason: String) -> FormatError { .writeFailed(path: path, reason: reason) }
        guard (PKMZLayout.minimumFrameBytes...PKMZLayout.maximumFrameBytes).contains(options.frameBytes) else {
            throw refuse("frame size \(options.frameBytes) bytes is outside \(PKMZLayout.minimumFrameBytes)…\(PKMZLayout.maximumFrameBytes)")
        }
        guard PKMZCodec.levels.contains(options.compressionLevel) else {
            throw refuse("zstd level \(options.compressionLevel) is outside \(PKMZCodec.levels.lowerBound)…\(PKMZCodec.levels.upperBound)")
        }
        guard options.threads >= 0 else { throw refuse("thread count \(options.threads) is negative") }
        let threads = options.threads > 0 ? options.threads : max(1, ProcessInfo.processInfo.activeProcessorCount)

        var names = Set<String>()
        var largestChunk = 0
        for info in tensorInfos {
            guard !info.name.isEmpty else { throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "the name is empty") }
            guard names.insert(info.name).inserted else { throw FormatError.duplicateTensor(path: path, tensor: info.name) }
            guard let bytes = ShapeMath.byteCount(info.shape, dtype: info.dtype) else {
                throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "shape \(info.shape) of \(info.dtype) is invalid or overflows")
            }
            largestChunk = max(largestChunk, min(bytes, chunkBytes(options.frameBytes, info.dtype)))
        }

        var configJSON: String?
        var otherMetadata = metadata
        if let config = metadata["config"], let text = configObjectText(config) {
            configJSON = text
            otherMetadata["config"] = nil
        }

        try AtomicOutputFile.write(to: url) { output in
            let compressor = try BatchCompressor(threads: threads, largestChunk: largestChunk,
                                                 level: options.compressionLevel, path: path)
            var prologue = PKMZLayout.magic
            appendLittleEndian(UInt32(PKMZLayout.version), to: &prologue)
            appendLittleEndian(UInt32(0), to: &prologue)
            try prologue.withUnsafeBytes { try output.write($0) }

            var entries: [PKMZTensorEntry] = []
            entries.reserveCapacity(tensorInfos.count)
            var offset = PKMZLayout.prologueSize
            for (index, info) in tensorInfos.enumerated() {
                let value = try tensor(info)
                guard value.dtype == info.dtype, value.shape == info.shape else {
                    throw FormatError.invalidTensor(path: path, tensor: info.name,
                                                    reason: "the data supplied is \(value.dtype.rawValue) \(value.shape) but the tensor table declares \(info.dtype.rawValue) \(info.shape)")
                }
                let grouping = options.byteGrouping && info.dtype.isFloatingPoint && info.dtype.byteSize > 1
                let frames = try compressor.writeFrames(of: value, tensorName: info.name, chunkBytes: chunkBytes(options.frameBytes, info.dtype),
                                                        byteGrouping: grouping, startingAt: offset, to: output)
                offset = frames.last.map { $0.offset + $0.compressedBytes } ?? offset
                entries.append(PKMZTensorEntry(info: info, byteGrouping: grouping, frames: frames))
                progress?(index + 1, tensorInfos.count)
            }

            let header = PKMZHeader(compressionLevel: Int(options.compressionLevel), frameBytes: options.frameBytes,
                                    tensors: entries, configJSON: configJSON, metadata: otherMetadata,
                                    provenance: try options.resolvedProvenance()).encoded()
            // Self-check: the header must read back under default limits (catches e.g. a config nested too deeply).
            var limits = ReaderLimits()
            limits.maxTotalBytes = Int.max
            limits.maxTensorCount = Int.max
            limits.maxRank = Int.max
            do {
                _ = try PKMZHeader.decode(header, path: path, limits: limits, dataStart: PKMZLayout.prologueSize, dataEnd: offset)
            } catch {
                throw refuse("the header does not read back (\(error)); this is a bug in pkm-convert")
            }
            var hasher = XXHash64(seed: PKMZLayout.checksumSeed)
            hasher.update(prologue)
            hasher.update(header)
            var trailer: [UInt8] = []
            appendLittleEndian(UInt64(offset), to: &trailer)
            appendLittleEndian(UInt64(header.count), to: &trailer)
            appendLittleEndian(hasher.finalize(), to: &trailer)
            appendLittleEndian(UInt32(PKMZLayout.version), to: &trailer)
            trailer += PKMZLayout.endMagic
            try header.withUnsafeBytes { try output.write($0) }
            try trailer.withUnsafeBytes { try output.write($0) }
        }
    }

    /// Raw bytes per frame for `dtype`: `frameBytes` rounded down to whole elements.
    static func chunkBytes(_ frameBytes: Int, _ dtype: DType) -> Int {
        frameBytes / dtype.byteSize * dtype.byteSize
    }

    /// The config's text when it is a JSON object nestable in the header, trimmed of surrounding whitespace.
    static func configObjectText(_ config: String) -> String? {
        let bytes = Array(config.utf8)
        guard let value = try? StrictJSONParser.parse(bytes), case .object = value else { return nil }
        let whitespace: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
        guard let first = bytes.firstIndex(where: { !whitespace.contains($0) }),
              let last = bytes.lastIndex(where: { !whitespace.contains($0) }) else { return nil }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }

    static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }
}

/// Compresses chunks in parallel batches and writes the frames in order (internal to ``PKMZWriter``).
private final class BatchCompressor {
    private let threads: Int
    private let slotCount: Int
    private let slotCapacity: Int
    private let compressors: [PKMZCompressor]
    /// One compressed-frame buffer per batch slot (2 per thread).
    private let outputs: UnsafeMutableRawPointer
    /// One byte-grouping buffer per thread.
    private let scratch: UnsafeMutableRawPointer
    private let largestChunk: Int
    private let path: String

    /// Per-slot result: frame size (or zstd's complaint) and the frame's XXH64.
    private struct SlotResult {
        var size: Result<Int, PKMZCodec.Failure> = .success(0)
        var checksum: UInt64 = 0
    }

    init(threads: Int, largestChunk: Int, level: Int32, path: String) throws {
        self.threads = threads
        self.path = path
        self.largestChunk = largestChunk
        slotCount = 2 * threads
        slotCapacity = PKMZCodec.bound(max(largestChunk, 1), segments: 8)
        compressors = try (0..<threads).map { _ in try PKMZCompressor(level: level, path: path) }
        let (outputBytes, outputOverflow) = slotCapacity.multipliedReportingOverflow(by: slotCount)
        let (scratchBytes, scratchOverflow) = max(largestChunk, 1).multipliedReportingOverflow(by: threads)
        guard !outputOverflow, !scratchOverflow, let outputs = malloc(outputBytes) else {
            throw FormatError.writeFailed(path: path, reason: "out of memory for \(slotCount) compression buffers")
        }
        guard let scratch = malloc(scratchBytes) else {
            free(outputs)
            throw FormatError.writeFailed(path: path, reason: "out of memory for \(threads) byte-grouping buffers")
        }
        self.outputs = outputs
        self.scratch = scratch
    }

    deinit {
        free(outputs)
        free(scratch)
    }

    /// Compresses and writes every chunk of `tensor`; returns the frame-table entries.
    func writeFrames(of tensor: Tensor, tensorName: String, chunkBytes: Int, byteGrouping: Bool,
                     startingAt start: Int, to output: AtomicOutputFile) throws -> [PKMZFrame] {
        let total = tensor.storage.count
        guard total > 0 else { return [] }
        let chunkCount = (total + chunkBytes - 1) / chunkBytes
        let elementSize = tensor.dtype.byteSize
        var frames: [PKMZFrame] = []
        frames.reserveCapacity(chunkCount)
        var offset = start
        var results = [SlotResult](repeating: SlotResult(), count: slotCount)
        try tensor.storage.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            guard let base = raw.baseAddress else { return }
            var batchStart = 0
            while batchStart < chunkCount {
                let batchCount = min(slotCount, chunkCount - batchStart)
                let workers = min(threads, batchCount)
                results.withUnsafeMutableBufferPointer { slots in
                    let run = { (worker: Int) in
                        var slot = worker
                        while slot < batchCount {
                            let chunk = batchStart + slot
                            let chunkStart = chunk * chunkBytes
                            let count = min(chunkBytes, total - chunkStart)
                            var source = UnsafeRawPointer(base + chunkStart)
                            if byteGrouping {
                                let grouped = self.scratch + worker * self.largestChunk
                                PKMZByteGrouping.group(source, into: grouped, byteCount: count, elementSize: elementSize)
                                source = UnsafeRawPointer(grouped)
                            }
                            let destination = self.outputs + slot * self.slotCapacity
                            let size = self.compressors[worker].compress(source, count: count,
                                                                         segments: byteGrouping ? elementSize : 1,
                                                                         into: destination, capacity: self.slotCapacity)
                            var checksum: UInt64 = 0
                            if case .success(let frameBytes) = size {
                                checksum = XXHash64.hash(UnsafeRawBufferPointer(start: destination, count: frameBytes),
                                                         seed: PKMZLayout.checksumSeed)
                            }
                            slots[slot] = SlotResult(size: size, checksum: checksum)
                            slot += workers
                        }
                    }
                    PKMZParallel.run(workers: workers, run)
                }
                for slot in 0..<batchCount {
                    let result = results[slot]
                    let chunk = batchStart + slot
                    let size: Int
                    switch result.size {
                    case .success(let frameBytes): size = frameBytes
                    case .failure(let failure):
                        throw FormatError.writeFailed(path: path, reason: "zstd failed on tensor '\(tensorName)' chunk \(chunk): \(failure.reason)")
                    }
                    try output.write(UnsafeRawBufferPointer(start: outputs + slot * slotCapacity, count: size))
                    let rawBytes = min(chunkBytes, total - chunk * chunkBytes)
                    frames.append(PKMZFrame(offset: offset, compressedBytes: size, rawBytes: rawBytes, checksum: result.checksum))
                    offset += size
                }
                batchStart += batchCount
            }
        }
        return frames
    }
}
