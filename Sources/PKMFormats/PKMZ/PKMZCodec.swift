import CZstd
import Foundation

/// One reusable zstd compression context (one per writer worker thread).
///
/// Frames are made by `ZSTD_compress2`, which records the content size in the frame header;
/// zstd's own content checksum is off because pkmz hashes each frame itself.
final class PKMZCompressor {
    private let context: OpaquePointer

    /// - Throws: ``FormatError/writeFailed(path:reason:)`` when zstd refuses the level or memory runs out.
    init(level: Int32, path: String) throws {
        guard let context = ZSTD_createCCtx() else {
            throw FormatError.writeFailed(path: path, reason: "zstd could not allocate a compression context")
        }
        self.context = context
        for (parameter, value) in [(ZSTD_c_compressionLevel, level), (ZSTD_c_contentSizeFlag, 1), (ZSTD_c_checksumFlag, 0)] {
            let result = ZSTD_CCtx_setParameter(context, parameter, value)
            if ZSTD_isError(result) != 0 {
                ZSTD_freeCCtx(context)
                throw FormatError.writeFailed(path: path, reason: "zstd parameter \(parameter.rawValue) = \(value): \(PKMZCodec.errorName(result))")
            }
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `count` bytes into one zstd frame in `destination` (capacity at least
    /// ``PKMZCodec/bound(_:segments:)``).
    ///
    /// With `segments > 1` the input is `segments` equal parts (the byte planes of a grouped chunk)
    /// and zstd is made to end a block at each boundary (`ZSTD_e_flush`), so every plane gets its
    /// own entropy tables instead of one Huffman table fitted to a mix of random mantissa bytes and
    /// repetitive exponent bytes. The result is still a single frame with its content size.
    /// - Returns: the frame size, or zstd's reason for failing.
    func compress(_ source: UnsafeRawPointer, count: Int, segments: Int,
                  into destination: UnsafeMutableRawPointer, capacity: Int) -> Result<Int, PKMZCodec.Failure> {
        guard segments > 1, count % segments == 0 else {
            let size = ZSTD_compress2(context, destination, capacity, source, count)
            return PKMZCodec.isError(size) ? .failure(.init(reason: PKMZCodec.errorName(size))) : .success(size)
        }
        ZSTD_CCtx_reset(context, ZSTD_reset_session_only)
        let pledged = ZSTD_CCtx_setPledgedSrcSize(context, UInt64(count))
        if PKMZCodec.isError(pledged) { return .failure(.init(reason: PKMZCodec.errorName(pledged))) }
        var output = ZSTD_outBuffer(dst: destination, size: capacity, pos: 0)
        let segmentBytes = count / segments
        for segment in 0..<segments {
            var input = ZSTD_inBuffer(src: source + segment * segmentBytes, size: segmentBytes, pos: 0)
            let directive = segment == segments - 1 ? ZSTD_e_end : ZSTD_e_flush
            while true {
                let remaining = ZSTD_compressStream2(context, &output, &input, directive)
                if PKMZCodec.isError(remaining) {
                    ZSTD_CCtx_reset(context, ZSTD_reset_session_only)
                    return .failure(.init(reason: PKMZCodec.errorName(remaining)))
                }
                if remaining == 0 && input.pos == input.size { break }
                if output.pos == output.size {
                    ZSTD_CCtx_reset(context, ZSTD_reset_session_only)
                    return .failure(.init(reason: "output buffer of \(capacity) bytes too small"))
                }
            }
        }
        return .success(output.pos)
    }
}

/// One decoding worker's state: a zstd decompression context and a scratch buffer for
/// byte-grouped frames, reused across frames and tensors.
final class PKMZDecoderState {
    let context: OpaquePointer
    private(set) var scratch: UnsafeMutableRawPointer?
    private var scratchCapacity = 0

    init?() {
        guard let context = ZSTD_createDCtx() else { return nil }
        self.context = context
    }

    deinit {
        ZSTD_freeDCtx(context)
        free(scratch)
    }

    /// Makes the scratch buffer hold at least `bytes`; false when memory runs out.
    func reserveScratch(_ bytes: Int) -> Bool {
        guard bytes > scratchCapacity else { return true }
        free(scratch)
        scratch = malloc(bytes)
        scratchCapacity = scratch == nil ? 0 : bytes
        return scratch != nil
    }
}

/// A pool of decoding states shared by a reader's workers.
final class PKMZDecoderPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [PKMZDecoderState] = []

    init() {}

    /// An idle state, or a new one (nil only when memory runs out).
    func take() -> PKMZDecoderState? {
        lock.lock()
        let state = idle.popLast()
        lock.unlock()
        return state ?? PKMZDecoderState()
    }

    /// Returns a state for reuse.
    func give(_ state: PKMZDecoderState) {
        lock.lock()
        idle.append(state)
        lock.unlock()
    }
}

/// Thin helpers over libzstd's C API.
enum PKMZCodec {
    /// Why zstd failed to compress.
    struct Failure: Error {
        var reason: String
    }

    /// The largest frame `count` bytes can compress to when cut into `segments` flushed parts
    /// (each flush can add a block header and a raw block's worth of slack).
    static func bound(_ count: Int, segments: Int = 1) -> Int { ZSTD_compressBound(count) + 64 * segments }

    /// Whether a `size_t` result is an error code.
    static func isError(_ code: Int) -> Bool { ZSTD_isError(code) != 0 }

    /// zstd's message for an error code.
    static func errorName(_ code: Int) -> String { String(cString: ZSTD_getErrorName(code)) }

    /// The range of compression levels this libzstd accepts.
    static var levels: ClosedRange<Int32> { ZSTD_minCLevel()...ZSTD_maxCLevel() }

    /// Decodes one frame of exactly `rawBytes` into `destination`, refusing anything else.
    ///
    /// Checks, in order: the frame header records a content size equal to `rawBytes`; the frame
    /// occupies exactly `compressedBytes` (no trailing data, no second frame); decoding succeeds
    /// and yields `rawBytes`. Decoding writes only into `destination[0..<rawBytes]`.
    /// - Returns: nil on success, or why the frame was refused.
    static func decode(_ source: UnsafeRawPointer, compressedBytes: Int, into destination: UnsafeMutableRawPointer,
                       rawBytes: Int, context: OpaquePointer) -> String? {
        let contentSize = ZSTD_getFrameContentSize(source, compressedBytes)
        if contentSize == pkm_zstd_contentsize_error() { return "not a zstd frame" }
        if contentSize == pkm_zstd_contentsize_unknown() { return "the frame header does not record its decoded size" }
        guard contentSize == UInt64(rawBytes) else {
            return "the frame header declares \(contentSize) decoded bytes, the frame table \(rawBytes)"
        }
        let frameSize = ZSTD_findFrameCompressedSize(source, compressedBytes)
        if isError(frameSize) { return errorName(frameSize) }
        guard frameSize == compressedBytes else {
            return "the frame is \(frameSize) bytes long but the frame table gives it \(compressedBytes)"
        }
        let result = ZSTD_decompressDCtx(context, destination, rawBytes, source, compressedBytes)
        if isError(result) { return errorName(result) }
        guard result == rawBytes else { return "decoded \(result) bytes, expected \(rawBytes)" }
        return nil
    }
}
