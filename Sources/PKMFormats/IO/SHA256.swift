import COpenSSL
import Foundation

/// Streaming SHA-256, used for provenance (the digest of the source checkpoint's bytes).
///
/// Backed by libcrypto's EVP interface, which uses the CPU's SHA extensions where present
/// (about 2 GB/s here), so hashing does not dominate a conversion.
public final class SHA256 {
    private let context: OpaquePointer?

    /// A fresh hasher.
    public init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Feeds bytes.
    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    /// Feeds bytes.
    public func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    /// The digest as lower-case hex. The hasher must not be used afterwards.
    public func finalizeHex() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &length)
        return digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of `data`, hex.
    public static func hex(of data: Data) -> String {
        let hasher = SHA256()
        hasher.update(data)
        return hasher.finalizeHex()
    }

    /// SHA-256 of a file's bytes, hex, read through a memory map.
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the file cannot be read.
    public static func hex(ofFile url: URL) throws -> String {
        try RegularFile.requireRegular(url, what: "a file to hash")
        let data: Data
        do {
            data = try MappedFile.bytes(of: url)
        } catch {
            throw FormatError.io(path: url.path, operation: "read for SHA-256", message: error.localizedDescription)
        }
        return hex(of: data)
    }
}

/// A file's SHA-256, computed on a background thread while other work (a conversion's
/// compression) runs; ``hex()`` waits for it.
///
/// Writers that put provenance at the end of the file (pkmz) ask for it last, so hashing the
/// source overlaps with compressing it; writers whose header comes first ask at the start.
/// Releasing the value before the hash is done (a failed write) cancels it and waits for the
/// thread to stop, so no hashing thread outlives its owner — in particular none is still inside
/// libcrypto while the process exits and libcrypto's exit handler tears its locks down (found by
/// ThreadSanitizer as a crash at exit after a failed convert).
public final class PendingSHA256: @unchecked Sendable {
    /// The file being hashed.
    public let url: URL
    private let state: State

    /// Shared by the owner and the hashing thread (which must not keep the owner alive).
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        let done = DispatchSemaphore(value: 0)
        var result: Result<String, FormatError>?
        var cancelled = false

        var isCancelled: Bool { lock.withLock { cancelled } }
    }

    /// Bytes hashed between two checks for cancellation.
    static let sliceBytes = 8 << 20

    /// Starts hashing `url` at once.
    public init(file url: URL) {
        self.url = url
        let state = State()
        self.state = state
        let thread = Thread {
            let outcome: Result<String, FormatError>
            do {
                // Read (not mapped) in slices through one buffer: the page cache holds the file, this
                // process only the slice, so hashing adds nothing to the resident memory of a streaming job.
                let descriptor = try RegularFile.openForReading(url, what: "a file to hash")
                defer { close(descriptor) }
                let hasher = SHA256()
                var cancelled = false
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.sliceBytes, alignment: 16)
                defer { buffer.deallocate() }
                while true {
                    if state.isCancelled { cancelled = true; break }
                    let count = read(descriptor, buffer.baseAddress, Self.sliceBytes)
                    if count < 0 {
                        if errno == EINTR { continue }
                        throw FormatError.io(path: url.path, operation: "read for SHA-256", message: String(cString: strerror(errno)))
                    }
                    if count == 0 { break }
                    hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                }
                outcome = cancelled
                    ? .failure(.io(path: url.path, operation: "read for SHA-256", message: "cancelled"))
                    : .success(hasher.finalizeHex())
            } catch let error as FormatError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(.io(path: url.path, operation: "read for SHA-256", message: error.localizedDescription))
            }
            state.lock.withLock { state.result = outcome }
            state.done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Starts hashing `bytes`, the whole content of `url` already mapped by a reader, at once: the file
    /// is not opened again. Each slice's pages are released once hashed (they are read back from the file
    /// if the writer touches them later), so hashing adds little to the resident memory of a streaming job.
    public init(mapped bytes: Data, of url: URL) {
        self.url = url
        let state = State()
        self.state = state
        let thread = Thread {
            let hasher = SHA256()
            var cancelled = false
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    if state.isCancelled { cancelled = true; return }
                    let end = min(buffer.count, offset + Self.sliceBytes)
                    hasher.update(UnsafeRawBufferPointer(rebasing: buffer[offset..<end]))
                    MappedPages.release(buffer, range: offset..<end)
                    offset = end
                }
            }
            let outcome: Result<String, FormatError> = cancelled
                ? .failure(.io(path: url.path, operation: "read for SHA-256", message: "cancelled"))
                : .success(hasher.finalizeHex())
            state.lock.withLock { state.result = outcome }
            state.done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Cancels an unfinished hash and waits for its thread to stop.
    deinit {
        state.lock.withLock { state.cancelled = true }
        state.done.wait()
    }

    /// The lower-case hex digest, waiting for the hash to finish.
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the file could not be read.
    public func hex() throws(FormatError) -> String {
        if let finished = state.lock.withLock({ state.result }) { return try finished.get() }
        state.done.wait()
        state.done.signal()   // later callers, and deinit, return at once
        return try state.lock.withLock { state.result! }.get()
    }
}
