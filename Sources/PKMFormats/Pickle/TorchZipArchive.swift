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
    /// - Throws: ``FormatError/invalidHeader(path:reason:)`` for a damaged or non-zip container or a
    ///   repeated name, ``FormatError/limitExceeded(path:limit:value:maximum:)`` for too many entries.
    init(url: URL, limits: ReaderLimits) throws {
        path = url.path
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            throw FormatError.invalidHeader(path: url.path, reason: "zip container: its central directory cannot be read (\(error)); the file is truncated or damaged")
        }
        var entries: [String: Entry] = [:]
        var names: [String] = []
        // A checkpoint has data.pkl, byteorder, version, .data/serialization_id and one entry per storage.
        let maximum = limits.maxTensorCount + 16
        for entry in archive {
            guard names.count < maximum else {
                throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: names.count + 1, maximum: limits.maxTensorCount)
            }
            guard let size = Int(exactly: entry.uncompressedSize), size <= limits.maxTotalBytes else {
                throw FormatError.limitExceeded(path: url.path, limit: .totalBytes, value: Int(exactly: entry.uncompressedSize) ?? Int.max,
                                                maximum: limits.maxTotalBytes)
            }
            let name = entry.path
            guard entries.updateValue(Entry(name: name, uncompressedSize: size), forKey: name) == nil else {
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
            var output = Data()
            output.reserveCapacity(size)
            do {
                // ZIPFoundation computes the CRC-32 of what it extracts; comparing it is the caller's job.
                let checksum = try archive.extract(entry, bufferSize: 1 << 20, skipCRC32: false) { chunk in
                    guard output.count + chunk.count <= size else {
                        throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "the entry holds more than the \(size) bytes its directory entry declares")
                    }
                    output.append(chunk)
                }
                guard checksum == entry.checksum else {
                    throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: String(format: "CRC-32 mismatch (stored %08x, computed %08x): the entry's bytes are damaged", entry.checksum, checksum))
                }
            } catch let error as FormatError {
                throw error
            } catch {
                throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "\(error) (a CRC-32 mismatch or damaged data)")
            }
            guard output.count == size else {
                throw FormatError.decompressionFailed(path: path, tensor: name, offset: 0, reason: "the entry extracts to \(output.count) bytes, its directory entry declares \(size)")
            }
            return output
        }
    }
}
