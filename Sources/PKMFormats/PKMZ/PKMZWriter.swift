import CPKMKernels
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
        try write(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress) { info in
            .tensor(try tensor(info))
        }
    }

    /// The ``CheckpointWriter`` name of ``write(to:tensorInfos:metadata:options:progress:data:)``.
    public static func writeStreaming(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions,
                                      progress: ((Int, Int) -> Void)?, data: (TensorInfo) throws -> TensorData) throws {
        try write(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress, data: data)
    }

    /// Like ``write(to:tensorInfos:metadata:options:progress:tensor:)``, but each tensor may be a
    /// ``TensorSource``: its chunks are then produced by the compression workers themselves, one
    /// frame at a time, so memory stays at a few frames per thread whatever the tensor's size.
    /// - Throws: as ``write(to:tensorInfos:metadata:options:progress:tensor:)``, or whatever a source throws.
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions,
                             progress: ((Int, Int) -> Void)?, data: (TensorInfo) throws -> TensorData) throws {
        let path = url.path
        func refuse(_ reason: String) -> FormatError { .writeFailed(path: path, reason: reason) }
        guard (PKMZLayout.minimumFrameBytes...PKMZLayout.maximumFrameBytes).contains(options.frameBytes) else {
            throw refuse("frame size \(options.frameBytes) bytes is outside \(PKMZLayout.minimumFrameBytes)…\(PKMZLayout.maximumFrameBytes)")
        }
        guard PKMZCodec.levels.contains(options.compressionLevel) else {
            throw refuse("zstd level \(options.compressionLevel) is outside \(PKMZCodec.levels.lowerBound)…\(PKMZCodec.levels.upperBound)")
        }
        guard options.threads >= 0 else { throw refuse("thread count \(options.threads) is negative") }
        guard PKMZLayout.supportedVersions.contains(options.pkmzVersion) else {
            throw refuse("pkmz version \(options.pkmzVersion) is not one of \(PKMZLayout.supportedVersions)")
        }
        let version = options.pkmzVersion
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
            let compressor = try BatchCompressor(threads: threads, largestChunk: largestChunk, version: version,
                                                 level: options.compressionLevel, path: path, output: output)
            var prologue = PKMZLayout.magic
            appendLittleEndian(UInt32(version), to: &prologue)
            appendLittleEndian(UInt32(0), to: &prologue)
            try prologue.withUnsafeBytes { try output.write($0) }

            var entries: [PKMZTensorEntry] = []
            entries.reserveCapacity(tensorInfos.count)
            var offset = PKMZLayout.prologueSize
            for (index, info) in tensorInfos.enumerated() {
                let value = try data(info)
                if case .tensor(let whole) = value, whole.dtype != info.dtype || whole.shape != info.shape {
                    throw FormatError.invalidTensor(path: path, tensor: info.name,
                                                    reason: "the data supplied is \(whole.dtype.rawValue) \(whole.shape) but the tensor table declares \(info.dtype.rawValue) \(info.shape)")
                }
                let grouped = options.byteGrouping && info.dtype.isFloatingPoint && info.dtype.byteSize > 1
                let encoding: PKMZEncoding = !grouped ? .plain : version == 1 ? .planes : .rotatedPlanes
                let frames = try compressor.writeFrames(of: value, info: info, chunkBytes: chunkBytes(options.frameBytes, info.dtype),
                                                        encoding: encoding, startingAt: offset)
                offset = frames.last.map { $0.offset + $0.compressedBytes } ?? offset
                entries.append(PKMZTensorEntry(info: info, encoding: encoding, frames: frames))
                progress?(index + 1, tensorInfos.count)
            }
            try compressor.finish()

            let header = PKMZHeader(version: version, compressionLevel: Int(options.compressionLevel), frameBytes: options.frameBytes,
                                    tensors: entries, configJSON: configJSON, metadata: otherMetadata,
                                    provenance: try options.resolvedProvenance()).encoded()
            // Self-check: the header must read back under default limits (catches e.g. a config nested too deeply).
            var limits = ReaderLimits()
            limits.maxTotalBytes = Int.max
            limits.maxTensorCount = Int.max
            limits.maxRank = Int.max
            do {
                _ = try PKMZHeader.decode(header, path: path, limits: limits, version: version,
                                          dataStart: PKMZLayout.prologueSize, dataEnd: offset)
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
            appendLittleEndian(UInt32(version), to: &trailer)
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
///
/// Two sets of batch buffers alternate: while a serial I/O queue writes one batch, the workers
/// already fill (from a ``TensorSource``), split and encode the next, so generation, compression
/// and writing overlap.
private final class BatchCompressor: @unchecked Sendable {
    private let threads: Int
    private let slotCount: Int
    private let slotCapacity: Int
    private let version: Int
    private let compressors: [PKMZCompressor]
    /// Two sets of `slotCount` compressed-frame buffers.
    private let outputs: UnsafeMutableRawPointer
    /// Per thread: a byte-plane buffer, an input buffer (for sources) and a rANS scratch buffer.
    private let scratch: UnsafeMutableRawPointer
    private let inputs: UnsafeMutableRawPointer
    private let ransScratch: UnsafeMutableRawPointer
    private let ransScratchBytes: Int
    private let largestChunk: Int
    private let path: String
    private let output: AtomicOutputFile
    private let io = DispatchQueue(label: "pkmz.writer.io")
    private let pending = [DispatchGroup(), DispatchGroup()]
    private var nextSet = 0
    private let errorLock = NSLock()
    private var writeError: Error?

    /// Per-slot result: frame size (or why it failed), the frame's XXH64 and its segments.
    private struct SlotResult {
        var size: Result<Int, PKMZCodec.Failure> = .success(0)
        var checksum: UInt64 = 0
        var segments: [PKMZSegment] = []
    }

    init(threads: Int, largestChunk: Int, version: Int, level: Int32, path: String, output: AtomicOutputFile) throws {
        self.threads = threads
        self.path = path
        self.version = version
        self.output = output
        self.largestChunk = max(largestChunk, 1)
        slotCount = 2 * threads
        slotCapacity = PKMZCodec.bound(max(largestChunk, 1), segments: 8)
        ransScratchBytes = pkm_rans_bound(max(largestChunk, 1))
        compressors = try (0..<threads).map { _ in try PKMZCompressor(level: level, path: path) }
        let (outputBytes, outputOverflow) = slotCapacity.multipliedReportingOverflow(by: 2 * slotCount)
        let (scratchBytes, scratchOverflow) = max(largestChunk, 1).multipliedReportingOverflow(by: threads)
        let (ransBytes, ransOverflow) = ransScratchBytes.multipliedReportingOverflow(by: threads)
        guard !outputOverflow, !scratchOverflow, !ransOverflow, let outputs = malloc(outputBytes) else {
            throw FormatError.writeFailed(path: path, reason: "out of memory for \(2 * slotCount) compression buffers")
        }
        guard let scratch = malloc(scratchBytes), let inputs = malloc(scratchBytes), let rans = malloc(ransBytes) else {
            free(outputs)
            throw FormatError.writeFailed(path: path, reason: "out of memory for \(threads) byte-plane buffers")
        }
        self.outputs = outputs
        self.scratch = scratch
        self.inputs = inputs
        self.ransScratch = rans
    }

    deinit {
        // No write may still be reading a buffer.
        pending.forEach { $0.wait() }
        free(outputs)
        free(scratch)
        free(inputs)
        free(ransScratch)
    }

    /// Waits for every queued write; rethrows the first write failure.
    func finish() throws {
        pending.forEach { $0.wait() }
        try checkWrites()
    }

    private func checkWrites() throws {
        errorLock.lock()
        let error = writeError
        errorLock.unlock()
        if let error { throw error }
    }

    /// Compresses every chunk of one tensor and queues its frames for writing; returns the frame-table entries.
    func writeFrames(of data: TensorData, info: TensorInfo, chunkBytes: Int, encoding: PKMZEncoding,
                     startingAt start: Int) throws -> [PKMZFrame] {
        let total = info.byteCount
        guard total > 0 else { return [] }
        switch data {
        case .tensor(let tensor):
            return try tensor.storage.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                guard let base = raw.baseAddress else { return [] }
                return try frames(total: total, info: info, chunkBytes: chunkBytes, encoding: encoding, start: start,
                                  source: nil, base: base)
            }
        case .source(let source):
            return try frames(total: total, info: info, chunkBytes: chunkBytes, encoding: encoding, start: start,
                              source: source, base: nil)
        }
    }

    private func frames(total: Int, info: TensorInfo, chunkBytes: Int, encoding: PKMZEncoding, start: Int,
                        source: TensorSource?, base: UnsafeRawPointer?) throws -> [PKMZFrame] {
        let chunkCount = (total + chunkBytes - 1) / chunkBytes
        let elementSize = info.dtype.byteSize
        var frames: [PKMZFrame] = []
        frames.reserveCapacity(chunkCount)
        var offset = start
        var results = [SlotResult](repeating: SlotResult(), count: slotCount)
        var sourceErrors = [Error?](repeating: nil, count: threads)
        var batchStart = 0
        while batchStart < chunkCount {
            let batchCount = min(slotCount, chunkCount - batchStart)
            let workers = min(threads, batchCount)
            let set = nextSet
            nextSet ^= 1
            pending[set].wait()
            try checkWrites()
            let setBase = outputs + set * slotCount * slotCapacity
            results.withUnsafeMutableBufferPointer { slots in
                sourceErrors.withUnsafeMutableBufferPointer { errors in
                    PKMZParallel.run(workers: workers) { worker in
                        var slot = worker
                        while slot < batchCount {
                            let chunkStart = (batchStart + slot) * chunkBytes
                            let count = min(chunkBytes, total - chunkStart)
                            var input: UnsafeRawPointer
                            if let base {
                                input = base + chunkStart
                            } else {
                                let buffer = self.inputs + worker * self.largestChunk
                                do {
                                    try source?.fill(chunkStart, UnsafeMutableRawBufferPointer(start: buffer, count: count))
                                } catch {
                                    errors[worker] = error
                                    return
                                }
                                input = UnsafeRawPointer(buffer)
                            }
                            slots[slot] = self.encode(input, count: count, elementSize: elementSize, encoding: encoding,
                                                      worker: worker, into: setBase + slot * self.slotCapacity)
                            slot += workers
                        }
                    }
                }
            }
            if let error = sourceErrors.compactMap({ $0 }).first { throw error }
            var sizes: [Int] = []
            for slot in 0..<batchCount {
                let result = results[slot]
                let chunk = batchStart + slot
                let size: Int
                switch result.size {
                case .success(let frameBytes): size = frameBytes
                case .failure(let failure):
                    throw FormatError.writeFailed(path: path, reason: "compressing tensor '\(info.name)' chunk \(chunk) failed: \(failure.reason)")
                }
                let rawBytes = min(chunkBytes, total - chunk * chunkBytes)
                frames.append(PKMZFrame(offset: offset, compressedBytes: size, rawBytes: rawBytes, checksum: result.checksum,
                                        segments: result.segments))
                sizes.append(size)
                offset += size
            }
            let consumedUpTo = min(total, (batchStart + batchCount) * chunkBytes)
            pending[set].enter()
            let batchSizes = sizes
            io.async { [self] in
                let setBase = outputs + set * slotCount * slotCapacity
                defer { pending[set].leave() }
                errorLock.lock()
                let failed = writeError != nil
                errorLock.unlock()
                guard !failed else { return }
                do {
                    for (slot, size) in batchSizes.enumerated() {
                        try output.write(UnsafeRawBufferPointer(start: setBase + slot * slotCapacity, count: size))
                    }
                } catch {
                    errorLock.lock()
                    writeError = error
                    errorLock.unlock()
                }
            }
            source?.consumed?(consumedUpTo)
            batchStart += batchCount
        }
        return frames
    }

    /// Encodes one chunk into `destination` (capacity ``slotCapacity``).
    private func encode(_ input: UnsafeRawPointer, count: Int, elementSize: Int, encoding: PKMZEncoding,
                        worker: Int, into destination: UnsafeMutableRawPointer) -> SlotResult {
        let grouped = encoding != .plain
        if version == 1 {
            var source = input
            if grouped {
                let planes = scratch + worker * largestChunk
                PKMZByteGrouping.group(input, into: planes, byteCount: count, elementSize: elementSize)
                source = UnsafeRawPointer(planes)
            }
            let size = compressors[worker].compress(source, count: count, segments: grouped ? elementSize : 1,
                                                    into: destination, capacity: slotCapacity)
            return finished(size, destination: destination, segments: [])
        }
        // Version 2: a segment is kept coded only when it is under 98 % of its raw size.
        if grouped {
            let planeBytes = count / elementSize
            let planes = (scratch + worker * largestChunk).assumingMemoryBound(to: UInt8.self)
            pkm_planes_split(input, planes, planeBytes, Int32(elementSize), encoding == .rotatedPlanes ? 1 : 0)
            var position = 0
            var segments: [PKMZSegment] = []
            segments.reserveCapacity(elementSize)
            let limit = planeBytes - planeBytes / 50
            let rans = (ransScratch + worker * ransScratchBytes).assumingMemoryBound(to: UInt8.self)
            for plane in 0..<elementSize {
                let start = planes + plane * planeBytes
                let target = (destination + position).assumingMemoryBound(to: UInt8.self)
                let coded = limit > 0 ? pkm_rans_encode(start, planeBytes, target, limit, rans) : 0
                if coded > 0 {
                    segments.append(PKMZSegment(codec: .rans, storedBytes: coded))
                    position += coded
                } else {
                    target.update(from: start, count: planeBytes)
                    segments.append(PKMZSegment(codec: .raw, storedBytes: planeBytes))
                    position += planeBytes
                }
            }
            return finished(.success(position), destination: destination, segments: segments)
        }
        let size = compressors[worker].compress(input, count: count, segments: 1, into: destination, capacity: slotCapacity)
        if case .success(let compressed) = size, compressed < count - count / 50 {
            return finished(size, destination: destination, segments: [PKMZSegment(codec: .zstd, storedBytes: compressed)])
        }
        if case .failure = size { return finished(size, destination: destination, segments: []) }
        destination.copyMemory(from: input, byteCount: count)
        return finished(.success(count), destination: destination, segments: [PKMZSegment(codec: .raw, storedBytes: count)])
    }

    private func finished(_ size: Result<Int, PKMZCodec.Failure>, destination: UnsafeMutableRawPointer,
                          segments: [PKMZSegment]) -> SlotResult {
        var checksum: UInt64 = 0
        if case .success(let frameBytes) = size {
            checksum = XXHash64.hash(UnsafeRawBufferPointer(start: destination, count: frameBytes), seed: PKMZLayout.checksumSeed)
        }
        return SlotResult(size: size, checksum: checksum, segments: segments)
    }
}
