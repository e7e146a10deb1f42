import Foundation
import PKMTensor
import ZIPFoundation

/// The zip container of a torch ≥ 1.6 checkpoint, read through ZIPFoundation (internal).
///
/// ZIPFoundation parses the end-of-central-directory record (ZIP64 too), the central directory and
/// the local headers, and extracts entries (stored or deflated) with their CRC-32 checked. This
/// type adds what a checkpoint reader needs on top: a bounded entry count, refusal of repeated
/// names, sizes as `Int`, and serialised access (ZIPFoundation's `Archive` holds one file handle and
/// is not safe to use from two threads at once). Entries are extracted one at a time, so memory
/// holds one storage, never the whole archive.
final class TorchZipArchive: @unchecked Sendable {
    /// One file in the archive.
    struct Entry: Sendable {
        var name: String
        var uncompressedSize: Int
        /// Bytes the entry's data occupies in the file (equal to `uncompressedSize` when stored).
        var compressedSize: Int
    }

    /// Entries by name.
    let entries: [String: Entry]
    /// Entry names in central-directory order.
    let names: [String]

    private let archive: Archive
    private let path: String
    /// Serialises every use of `archive` (all mutable state is behind it).
    private let lock = NSLock()

    /// Opens the archive file and lists its entries.
    ///
    /// Why by URL, not from the mapped bytes: ZIPFoundation 0.9.20's in-memory archive
    /// (`Archive(data:)`) traps on damaged archives (its memory stream reads past the end when a
    /// record points beyond it: found by fuzzing), while its file-based archive reports an error.
    /// Its file-based init leaks 31 bytes per archive (a `fileSystemRepresentation` buffer it never
    /// frees; see scripts/lsan-suppressions.txt), one per checkpoint opened.
    /// `file` is the archive's mapped bytes, parsed by ``ZipDirectory`` (which refuses what torch
    /// refuses, impossible sizes and ratios, and overlapping entries) before ZIPFoundation reads it.
    /// - Throws: ``FormatError/invalidHeader(path:reason:)`` for a damaged, crafted or non-zip
    ///   container or a repeated name, ``FormatError/limitExceeded(path:limit:value:maximum:)`` for
    ///   too many entries or an entry larger than `limits.maxTotalBytes`.
    init(url: URL, file: Data, limits: ReaderLimits) throws {
        path = url.path
        // A checkpoint has data.pkl, byteorder, version, .data/serialization_id and one entry per storage.
        let maximum = limits.maxTensorCount.addingReportingOverflow(16).overflow ? Int.max : limits.maxTensorCount + 16
        // Our own parse first: counts, sizes, ratios, names and overlaps, before ZIPFoundation trusts any of them.
        let directory = try ZipDirectory(file: file, path: url.path, maxEntries: maximum)
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw FormatError.invalidHeader(path: url.path, reason: "zip container: its central directory cannot be read (\(error)); the file is truncated or damaged")
        }
        var entries: [String: Entry] = [:]
        var names: [String] = []
        for entry in directory.entries {
            guard entry.uncompressedSize <= limits.maxTotalBytes else {
                throw FormatError.limitExceeded(path: url.path, limit: .totalBytes, value: entry.uncompressedSize, maximum: limits.maxTotalBytes)
            }
            let name = entry.name
            guard entries.updateValue(Entry(name: name, uncompressedSize: entry.uncompressedSize, compressedSize: entry.compressedSize), forKey: name) == nil else {
                throw FormatError.invalidHeader(path: url.path, reason: "zip container: the entry '\(name)' appears twice")
            }
            names.append(name)
        }
        self.entries = entries
        self.names = names
    }

    /// The whole (uncompressed) contents of entry `name`, CRC-checked.
    /// - Throws: ``FormatError/decompressionFailed(path:tensor:offset:reason:)`` when the entry does
    ///   not extract (bad CRC, truncated or corrupt data, a size other than the directory's).
    func contents(of name: String) throws -> Data {
        guard let declared = entries[name] else { throw FormatError.tensorNotFound(path: path, tensor: name) }
        let size = declared.uncompressedSize
        return try lock.withLock {
            guard let entry = archive[name] else { throw FormatError.tensorNotFound(path: path, tensor: name) }
            // Allocated fallibly: a refused allocation is an error, never a trap.
            let buffer = try FallibleAllocation.bytes(size, path: path, what: "entry '\(name)'")
            var written = 0
            do {
                // ZIPFoundation computes the CRC-32 of what it extracts; comparing it is the caller's job.
                let checksum = try archive.extract(entry, bufferSize: 1 << 20, skipCRC32: false) { chunk in
                    guard written + chunk.count <= size else {
                        throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "the entry holds more than the \(size) bytes its directory entry declares")
                    }
                    chunk.withUnsafeBytes { source in
                        if let base = source.baseAddress { (buffer + written).copyMemory(from: base, byteCount: source.count) }
                    }
                    written += chunk.count
                }
                guard checksum == entry.checksum else {
                    throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: String(format: "CRC-32 mismatch (stored %08x, computed %08x): the entry's bytes are damaged", entry.checksum, checksum))
                }
            } catch let error as FormatError {
                free(buffer)
                throw error
            } catch {
                free(buffer)
                throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "\(error) (a CRC-32 mismatch or damaged data)")
            }
            guard written == size else {
                free(buffer)
                throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "the entry extracts to \(written) bytes, its directory entry declares \(size)")
            }
            return Data(bytesNoCopy: buffer, count: size, deallocator: .free)
        }
    }
}
