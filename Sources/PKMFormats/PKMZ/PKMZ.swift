import CPKMKernels
import Foundation
import PKMTensor

/// Where one tensor's frames sit in a pkmz file and how they were stored.
public struct PKMZTensorStorage: Sendable, Equatable {
    /// Offset of the tensor's first frame (its frames are back to back).
    public var dataOffset: Int
    /// Number of zstd frames.
    public var frameCount: Int
    /// Bytes the frames occupy in the file.
    public var compressedBytes: Int
    /// Bytes of element data once decoded.
    public var rawBytes: Int
    /// Whether the frames hold byte planes (`schemas/pkmz.md` §6).
    public var byteGrouping: Bool
}

/// Reads pkm-convert's native `.pkmz` format (specified in `schemas/pkmz.md`).
///
/// Opening maps the file and validates everything except the frame contents: prologue and
/// trailer fields against each other and the file size, the XXH64 of prologue and header,
/// every header field, the ``ReaderLimits``, and that the frames tile the data section exactly
/// with raw sizes adding up to each tensor's shape × dtype size. No tensor memory is allocated
/// until ``tensor(named:)``, which checks each frame's XXH64 and decodes the frames in parallel
/// straight into the tensor.
public final class PKMZReader: CheckpointReader, @unchecked Sendable {
    /// The file this reader opened.
    public let url: URL
    /// Always ``CheckpointFormat/pkmz``.
    public var format: CheckpointFormat { .pkmz }
    /// Tensors in file order (the order of their frames).
    public let tensorInfos: [TensorInfo]
    /// The header's `metadata`, plus `config` (the header's config object as JSON text) when present.
    public let metadata: [String: String]
    /// The header's provenance, if recorded.
    public let provenance: Provenance?
    /// The format version in the file (always one of ``PKMZLayout/supportedVersions``).
    public let formatVersion: Int
    /// The zstd level the writer recorded.
    public let compressionLevel: Int
    /// The largest number of decoded bytes in one frame.
    public let frameBytes: Int
    /// The file's size in bytes.
    public let fileSize: Int

    private let file: Data
    /// The mapped file (see ``CheckpointReader/mappedFileBytes``).
    public var mappedFileBytes: Data? { file }
    private let entries: [PKMZTensorEntry]
    private let indexByName: [String: Int]
    private let threads: Int
    private let decoders = PKMZDecoderPool()

    /// Opens and validates a pkmz file.
    /// - Parameters:
    ///   - limits: caps checked against the declared sizes before anything is allocated.
    ///   - threads: decoding workers per ``tensor(named:)`` call (0 = one per core).
    /// - Throws: ``FormatError``: `.fileNotFound`, `.io`, `.badMagic`, `.truncated`,
    ///   `.unsupportedVersion`, `.checksumMismatch` (header), `.invalidHeader`, `.invalidTensor`,
    ///   `.unsupportedDType`, `.invalidOffsets`, `.limitExceeded`, `.duplicateTensor`.
    public init(url: URL, limits: ReaderLimits = ReaderLimits(), threads: Int = 0) throws {
        self.url = url
        let path = url.path
        let file = try MappedFile.checkpoint(at: url, kind: "a .pkmz file")
        self.file = file
        fileSize = file.count
        self.threads = threads > 0 ? threads : max(1, ProcessInfo.processInfo.activeProcessorCount)

        let layout = try Self.readFraming(file, path: path, limits: limits)
        formatVersion = layout.version
        let header = try PKMZHeader.decode(layout.headerBytes, path: path, limits: limits, version: layout.version,
                                           dataStart: PKMZLayout.prologueSize, dataEnd: layout.headerOffset)
        entries = header.tensors
        tensorInfos = header.tensors.map(\.info)
        var index: [String: Int] = [:]
        for (position, entry) in header.tensors.enumerated() { index[entry.info.name] = position }
        indexByName = index
        var metadata = header.metadata
        if let config = header.configJSON { metadata["config"] = config }
        self.metadata = metadata
        provenance = header.provenance
        compressionLevel = header.compressionLevel
        frameBytes = header.frameBytes
    }

    /// Checks prologue and trailer and returns the verified header bytes.
    private static func readFraming(_ file: Data, path: String, limits: ReaderLimits)
        throws -> (version: Int, headerOffset: Int, headerBytes: [UInt8]) {
        let size = file.count
        let prologueCount = PKMZLayout.prologueSize, trailerCount = PKMZLayout.trailerSize
        let head = [UInt8](file.prefix(prologueCount))
        let magicPresent = Array(head.prefix(PKMZLayout.magic.count))
        guard magicPresent == Array(PKMZLayout.magic.prefix(magicPresent.count)) else {
            throw FormatError.badMagic(path: path, expected: "the pkmz magic \(hex(PKMZLayout.magic)) at byte 0", found: hex(magicPresent))
        }
        guard size >= prologueCount + trailerCount else {
            throw FormatError.truncated(path: path, what: size < prologueCount ? "prologue" : "trailer", offset: 0,
                                        needed: prologueCount + trailerCount, available: size)
        }
        let trailer = [UInt8](file.suffix(trailerCount))
        guard Array(trailer[28..<32]) == PKMZLayout.endMagic else {
            throw FormatError.badMagic(path: path, expected: "the pkmz end magic \(hex(PKMZLayout.endMagic)) (\"PKMZ\") in the last 4 bytes",
                                       found: "\(hex(Array(trailer[28..<32]))); the file is truncated or damaged")
        }
        let prologue = ByteCursor(Data(head)), ending = ByteCursor(Data(trailer))
        func field<T: FixedWidthInteger & UnsignedInteger>(_ cursor: ByteCursor, _ offset: Int, _ what: String, as type: T.Type) throws -> T {
            do { return try cursor.littleEndian(at: offset, as: type) } catch {
                throw FormatError.truncated(path: path, what: what, offset: offset, needed: MemoryLayout<T>.size, available: 0)
            }
        }
        let version = Int(try field(prologue, 8, "prologue version", as: UInt32.self))
        let trailerVersion = Int(try field(ending, 24, "trailer version", as: UInt32.self))
        guard version == trailerVersion else {
            throw FormatError.invalidHeader(path: path, reason: "the prologue says format version \(version) but the trailer says \(trailerVersion); the file is damaged")
        }
        guard PKMZLayout.supportedVersions.contains(version) else {
            throw FormatError.unsupportedVersion(path: path, found: version, supported: PKMZLayout.supportedVersions)
        }
        let flags = try field(prologue, 12, "prologue flags", as: UInt32.self)
        guard flags == 0 else {
            throw FormatError.invalidHeader(path: path, reason: "prologue flags are 0x\(String(flags, radix: 16)); version \(version) defines none (the file is damaged)")
        }

        let trailerStart = size - trailerCount
        let rawOffset = try field(ending, 0, "trailer header offset", as: UInt64.self)
        let rawLength = try field(ending, 8, "trailer header length", as: UInt64.self)
        guard let headerOffset = Int(exactly: rawOffset), headerOffset >= prologueCount, headerOffset <= trailerStart else {
            throw FormatError.invalidHeader(path: path, reason: "the trailer puts the header at byte \(rawOffset), outside \(prologueCount)…\(trailerStart); the file is truncated or damaged")
        }
        guard let headerLength = Int(exactly: rawLength), headerLength <= trailerStart - headerOffset else {
            throw FormatError.truncated(path: path, what: "header", offset: headerOffset,
                                        needed: Int(exactly: rawLength) ?? Int.max, available: trailerStart - headerOffset)
        }
        guard headerLength <= limits.maxHeaderBytes else {
            throw FormatError.limitExceeded(path: path, limit: .headerBytes, value: headerLength, maximum: limits.maxHeaderBytes)
        }
        guard headerOffset + headerLength == trailerStart else {
            throw FormatError.invalidHeader(path: path, reason: "header at \(headerOffset) of \(headerLength) bytes ends at \(headerOffset + headerLength), not at the trailer (byte \(trailerStart)); the file is damaged")
        }
        let start = file.startIndex
        let headerBytes = [UInt8](file[(start + headerOffset)..<(start + trailerStart)])
        var hasher = XXHash64(seed: PKMZLayout.checksumSeed)
        hasher.update(head)
        hasher.update(headerBytes)
        guard hasher.finalize() == (try field(ending, 16, "trailer checksum", as: UInt64.self)) else {
            throw FormatError.checksumMismatch(path: path, what: "prologue and header (XXH64 in the trailer)", offset: headerOffset)
        }
        return (version, headerOffset, headerBytes)
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        bytes.isEmpty ? "(nothing)" : bytes.map { String(format: "%02X", $0) }.joined(separator: " ")
    }

    /// Where a tensor's frames are and how they were stored, or nil for an unknown name.
    public func storage(of name: String) -> PKMZTensorStorage? {
        guard let index = indexByName[name] else { return nil }
        let entry = entries[index]
        return PKMZTensorStorage(dataOffset: entry.frames.first?.offset ?? 0, frameCount: entry.frames.count,
                                 compressedBytes: entry.compressedBytes, rawBytes: entry.info.byteCount,
                                 byteGrouping: entry.byteGrouping)
    }

    /// Reads one tensor: checks each frame's XXH64, then decodes the frames in parallel into one buffer.
    /// - Throws: ``FormatError/tensorNotFound(path:tensor:)``, ``FormatError/checksumMismatch(path:what:offset:)``,
    ///   ``FormatError/decompressionFailed(path:tensor:offset:reason:)``, ``FormatError/io(path:operation:message:)``
    ///   when memory runs out.
    public func tensor(named name: String) throws -> Tensor {
        guard let index = indexByName[name] else { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
        let entry = entries[index]
        let byteCount = entry.info.byteCount
        let storage: Data
        if byteCount == 0 {
            storage = Data()
        } else {
            guard let buffer = Self.allocateTensorMemory(byteCount) else {
                throw FormatError.io(path: url.path, operation: "allocate \(byteCount) bytes for tensor '\(name)'", message: "out of memory")
            }
            do {
                try decode(entry, into: buffer)
            } catch {
                free(buffer)
                throw error
            }
            storage = Data(bytesNoCopy: buffer, count: byteCount, deallocator: .free)
        }
        do {
            return try Tensor(dtype: entry.info.dtype, shape: entry.info.shape, storage: storage, name: name)
        } catch {
            throw FormatError.tensor(path: url.path, tensor: name, underlying: error)
        }
    }

    /// Checks every frame's XXH64 without decoding anything (reads the whole data section once).
    /// - Throws: ``FormatError/checksumMismatch(path:what:offset:)`` for the first damaged frame in file order.
    public func verifyChecksums() throws {
        var frames: [(tensor: Int, frame: Int)] = []
        for (tensorIndex, entry) in entries.enumerated() {
            for frameIndex in entry.frames.indices { frames.append((tensorIndex, frameIndex)) }
        }
        guard !frames.isEmpty else { return }
        let path = url.path
        let failures = file.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [FormatError?] in
            parallelFirstFailures(count: frames.count) { position in
                let (tensorIndex, frameIndex) = frames[position]
                return Self.checkFrame(raw, entries[tensorIndex], frameIndex, path: path)
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
    }

    // MARK: - Decoding

    /// Checks one frame's XXH64 against the frame table; nil when it matches.
    private static func checkFrame(_ file: UnsafeRawBufferPointer, _ entry: PKMZTensorEntry, _ frameIndex: Int,
                                   path: String) -> FormatError? {
        let frame = entry.frames[frameIndex]
        let bytes = UnsafeRawBufferPointer(rebasing: file[frame.offset..<(frame.offset + frame.compressedBytes)])
        guard XXHash64.hash(bytes, seed: PKMZLayout.checksumSeed) == frame.checksum else {
            return .checksumMismatch(path: path, what: "tensor '\(entry.info.name)' frame \(frameIndex) (\(frame.compressedBytes) bytes)",
                                     offset: frame.offset)
        }
        return nil
    }

    private func decode(_ entry: PKMZTensorEntry, into buffer: UnsafeMutableRawPointer) throws {
        let path = url.path
        let grouping = entry.byteGrouping
        let scratchBytes = grouping ? entry.frames.reduce(0) { max($0, $1.rawBytes) } : 0
        // Each frame's slot in the tensor: the running sum of raw sizes before it.
        var slots: [Int] = []
        slots.reserveCapacity(entry.frames.count)
        var position = 0
        for frame in entry.frames {
            slots.append(position)
            position += frame.rawBytes
        }
        let failures = file.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [FormatError?] in
            parallelFirstFailures(count: entry.frames.count, workerSetup: { () -> PKMZDecoderState? in
                guard let state = decoders.take() else { return nil }
                guard state.reserveScratch(scratchBytes) else { decoders.give(state); return nil }
                return state
            }, workerTeardown: { state in
                decoders.give(state)
            }, missingWorker: FormatError.io(path: path, operation: "allocate zstd decoding state for tensor '\(entry.info.name)'",
                                             message: "out of memory")) { worker, frameIndex in
                Self.decodeFrame(raw, entry, frameIndex, into: buffer + slots[frameIndex], worker: worker, path: path)
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
    }

    /// Checks and decodes every frame of every tensor, several tensors at once (frames are shared
    /// out over ``threads`` workers across tensor boundaries), each worker decoding into one reused
    /// buffer: the whole file is verified without allocating any tensor.
    /// - Throws: the first failure in file order (``FormatError/checksumMismatch(path:what:offset:)``,
    ///   ``FormatError/decompressionFailed(path:tensor:offset:reason:)``), or ``FormatError/io(path:operation:message:)``
    ///   when memory runs out.
    public func verifyData() throws {
        var items: [(tensor: Int, frame: Int)] = []
        for (tensorIndex, entry) in entries.enumerated() {
            for frameIndex in entry.frames.indices { items.append((tensorIndex, frameIndex)) }
        }
        guard !items.isEmpty else { return }
        let path = url.path
        let largest = entries.reduce(0) { max($0, $1.frames.reduce(0) { max($0, $1.rawBytes) }) }
        final class Worker {
            let state: PKMZDecoderState
            let output: UnsafeMutableRawPointer
            init?(state: PKMZDecoderState, bytes: Int) {
                guard state.reserveScratch(bytes), let output = malloc(bytes) else { return nil }
                self.state = state
                self.output = output
            }
            deinit { free(output) }
        }
        let failures = file.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [FormatError?] in
            parallelFirstFailures(count: items.count, workerSetup: { () -> Worker? in
                guard let state = decoders.take() else { return nil }
                guard let worker = Worker(state: state, bytes: largest) else { decoders.give(state); return nil }
                return worker
            }, workerTeardown: { worker in
                decoders.give(worker.state)
            }, missingWorker: FormatError.io(path: path, operation: "allocate decoding buffers", message: "out of memory")) { worker, item in
                let (tensorIndex, frameIndex) = items[item]
                return Self.decodeFrame(raw, entries[tensorIndex], frameIndex, into: worker.output, worker: worker.state, path: path)
            }
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
    }

    /// Checks one frame's XXH64, then decodes it into `destination` (its `rawBytes`).
    private static func decodeFrame(_ raw: UnsafeRawBufferPointer, _ entry: PKMZTensorEntry, _ frameIndex: Int,
                                    into destination: UnsafeMutableRawPointer, worker: PKMZDecoderState, path: String) -> FormatError? {
        if let failure = checkFrame(raw, entry, frameIndex, path: path) { return failure }
        let frame = entry.frames[frameIndex]
        guard let base = raw.baseAddress else { return nil }
        if !frame.segments.isEmpty {
            return decodeSegments(base + frame.offset, frame, entry: entry, frameIndex: frameIndex, into: destination,
                                  scratch: worker.scratch, rotate: entry.encoding == .rotatedPlanes ? 1 : 0,
                                  context: worker.context, path: path)
        }
        let grouping = entry.byteGrouping
        let target = grouping ? (worker.scratch ?? destination) : destination
        if let reason = PKMZCodec.decode(base + frame.offset, compressedBytes: frame.compressedBytes,
                                         into: target, rawBytes: frame.rawBytes, context: worker.context) {
            return .decompressionFailed(path: path, tensor: entry.info.name, offset: frame.offset,
                                        reason: "frame \(frameIndex): \(reason)")
        }
        if grouping, let scratch = worker.scratch {
            PKMZByteGrouping.ungroup(scratch, into: destination, byteCount: frame.rawBytes, elementSize: entry.info.dtype.byteSize)
        }
        return nil
    }

    /// Decodes one version-2 frame (segments back to back at `source`) into `destination`: raw
    /// planes are read where they lie in the file, coded ones decoded into `scratch`, and the
    /// planes joined (and un-rotated) straight into the tensor.
    private static func decodeSegments(_ source: UnsafeRawPointer, _ frame: PKMZFrame, entry: PKMZTensorEntry, frameIndex: Int,
                                       into destination: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer?,
                                       rotate: Int32, context: OpaquePointer, path: String) -> FormatError? {
        let count = frame.segments.count
        let segmentRaw = frame.rawBytes / count
        let grouped = entry.byteGrouping
        func failure(_ index: Int, _ reason: String) -> FormatError {
            .decompressionFailed(path: path, tensor: entry.info.name, offset: frame.offset, reason: "frame \(frameIndex) segment \(index): \(reason)")
        }
        return withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>?.self, capacity: count) { planes -> FormatError? in
            var position = 0
            for (index, segment) in frame.segments.enumerated() {
                let input = source + position
                position += segment.storedBytes
                let target: UnsafeMutableRawPointer
                if grouped {
                    guard let scratch else { return failure(index, "no scratch memory") }
                    target = scratch + index * segmentRaw
                } else {
                    target = destination
                }
                switch segment.codec {
                case .raw:
                    if grouped {
                        planes[index] = input.assumingMemoryBound(to: UInt8.self)
                        continue
                    }
                    target.copyMemory(from: input, byteCount: segmentRaw)
                case .zstd:
                    if let reason = PKMZCodec.decode(input, compressedBytes: segment.storedBytes, into: target,
                                                     rawBytes: segmentRaw, context: context) {
                        return failure(index, reason)
                    }
                case .rans:
                    let code = pkm_rans_decode(input.assumingMemoryBound(to: UInt8.self), segment.storedBytes,
                                               target.assumingMemoryBound(to: UInt8.self), segmentRaw)
                    if code != 0 { return failure(index, "malformed rANS data (code \(code))") }
                }
                planes[index] = UnsafePointer(target.assumingMemoryBound(to: UInt8.self))
            }
            if grouped { pkm_planes_join(planes.baseAddress, destination, segmentRaw, Int32(count), rotate) }
            return nil
        }
    }

    /// Memory for a tensor, released with `free`. On Linux, tensors of 2 MiB or more are 2 MiB-aligned
    /// and ask for transparent huge pages, which cuts the page faults taken while decoding into fresh
    /// memory by a factor of 512.
    private static func allocateTensorMemory(_ byteCount: Int) -> UnsafeMutableRawPointer? {
        #if os(Linux)
        let hugePage = 2 << 20
        if byteCount >= hugePage {
            var pointer: UnsafeMutableRawPointer?
            guard posix_memalign(&pointer, hugePage, byteCount) == 0, let pointer else { return nil }
            _ = madvise(pointer, byteCount, MADV_HUGEPAGE)
            return pointer
        }
        #endif
        return malloc(byteCount)
    }

    /// Runs `body` for items `0..<count` on up to ``threads`` workers (item `i` on worker `i mod workers`)
    /// and returns each worker's first failure, in item order.
    private func parallelFirstFailures(count: Int, _ body: (Int) -> FormatError?) -> [FormatError?] {
        parallelFirstFailures(count: count, workerSetup: { () -> Void? in () }, workerTeardown: { _ in },
                              missingWorker: nil) { _, item in body(item) }
    }

    private func parallelFirstFailures<State>(count: Int, workerSetup: () -> State?, workerTeardown: (State) -> Void,
                                              missingWorker: FormatError?,
                                              _ body: (State, Int) -> FormatError?) -> [FormatError?] {
        let workers = max(1, min(threads, count))
        // Each worker writes only its own slot: (first failing item, failure).
        var results = [(item: Int, failure: FormatError?)](repeating: (Int.max, nil), count: workers)
        results.withUnsafeMutableBufferPointer { slots in
            let run = { (worker: Int) in
                guard let state = workerSetup() else {
                    slots[worker] = (worker, missingWorker)
                    return
                }
                defer { workerTeardown(state) }
                var item = worker
                while item < count {
                    if let failure = body(state, item) {
                        slots[worker] = (item, failure)
                        return
                    }
                    item += workers
                }
            }
            PKMZParallel.run(workers: workers, run)
        }
        return results.sorted { $0.item < $1.item }.map(\.failure)
    }
}
