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
