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
public final class PendingSHA256: @unchecked Sendable {
    /// The file being hashed.
    public let url: URL
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<String, FormatError>?
    private let lock = NSLock()

    /// Starts hashing `url` at once.
    public init(file url: URL) {
        self.url = url
        let thread = Thread { [self] in
            let outcome: Result<String, FormatError>
            do {
                outcome = .success(try SHA256.hex(ofFile: url))
            } catch let error as FormatError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(.io(path: url.path, operation: "read for SHA-256", message: "\(error)"))
            }
            lock.withLock { result = outcome }
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// The lower-case hex digest, waiting for the hash to finish.
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the file could not be read.
    public func hex() throws(FormatError) -> String {
        let finished = lock.withLock { result }
        if let finished { return try finished.get() }
        done.wait()
        done.signal()   // later callers return at once
        return try lock.withLock { result! }.get()
    }
}
