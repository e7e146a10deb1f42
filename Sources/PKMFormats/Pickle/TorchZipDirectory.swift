import Foundation
import PKMTensor

/// The central directory of a torch zip checkpoint, read from the memory-mapped file (internal).
///
/// Why this exists next to ZIPFoundation: ZIPFoundation extracts entries but does not expose where
/// an entry's bytes start in the file. torch writes every entry STORED (uncompressed, 64-byte
/// aligned), so a tensor can be a slice of the mapping with no copy, which needs that offset: this
/// reads the end-of-central-directory record (ZIP64 too), each central directory entry, and each
/// local file header, checking every offset and length against the file. Deflated entries
/// (archives re-zipped by other tools) are extracted through ZIPFoundation.
struct TorchZipDirectory {
    /// One file in the archive.
    struct Entry {
        var name: String
        /// 0 stored, 8 deflated.
        var method: UInt16
        var compressedSize: Int
        var uncompressedSize: Int
        var localHeaderOffset: Int
        /// Where the entry's (compressed) bytes start in the file, from its local header.
        var dataOffset: Int
        var isStored: Bool { method == 0 }
    }

    /// Entries by name.
    let entries: [String: Entry]
    /// Entry names in central-directory order.
    let names: [String]

    static let localHeaderSignature: UInt32 = 0x0403_4B50
    static let centralHeaderSignature: UInt32 = 0x0201_4B50
    static let endSignature: UInt32 = 0x0605_4B50
    static let zip64LocatorSignature: UInt32 = 0x0706_4B50
    static let zip64EndSignature: UInt32 = 0x0606_4B50

    /// Reads the directory of `file` (the whole mapped file).
    /// - Throws: ``FormatError/invalidHeader(path:reason:)`` or ``FormatError/truncated(path:what:offset:needed:available:)``
    ///   for a damaged archive, ``FormatError/limitExceeded(path:limit:value:maximum:)`` for too many entries.
    init(file: Data, path: String, limits: ReaderLimits) throws {
        func bad(_ reason: String) -> FormatError { .invalidHeader(path: path, reason: "zip container: \(reason)") }
        func cursor(at offset: Int) throws -> ByteCursor {
            var cursor = ByteCursor(file)
            do { try cursor.seek(to: offset) } catch { throw bad("an offset \(offset) lies beyond the end of the file (\(file.count) bytes)") }
            return cursor
        }
        // End of central directory: the last 22+ bytes, possibly followed by a comment of up to 64 KiB.
        guard file.count >= 22 else {
            throw FormatError.truncated(path: path, what: "zip end-of-central-directory record", offset: 0, needed: 22, available: file.count)
        }
        var endOffset: Int?
        var probe = file.count - 22
        let lowest = max(0, file.count - 22 - 0xFFFF)
        while probe >= lowest {
            let start = file.startIndex + probe
            if file[start] == 0x50, file[start + 1] == 0x4B, file[start + 2] == 0x05, file[start + 3] == 0x06 {
                endOffset = probe
                break
            }
            probe -= 1
        }
        guard let endOffset else {
            throw bad("no end-of-central-directory record (the file is truncated, or not a zip archive)")
        }
        var entryCount: Int
        var directorySize: Int
        var directoryOffset: Int
        do {
            var end = try cursor(at: endOffset + 10)
            entryCount = Int(try end.readLittleEndian(UInt16.self))
            directorySize = Int(try end.readLittleEndian(UInt32.self))
            directoryOffset = Int(try end.readLittleEndian(UInt32.self))
            if entryCount == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
                guard endOffset >= 20 else { throw bad("a ZIP64 archive without its ZIP64 locator") }
                var locator = try cursor(at: endOffset - 20)
                guard try locator.readLittleEndian(UInt32.self) == Self.zip64LocatorSignature else {
                    throw bad("a ZIP64 archive without its ZIP64 locator")
                }
                _ = try locator.readLittleEndian(UInt32.self)
                let recordOffset = try locator.readLength()
                var record = try cursor(at: recordOffset)
                guard try record.readLittleEndian(UInt32.self) == Self.zip64EndSignature else {
                    throw bad("the ZIP64 end-of-central-directory record is missing at byte \(recordOffset)")
                }
                try record.seek(to: recordOffset + 32)
                entryCount = try record.readLength()
                directorySize = try record.readLength()
                directoryOffset = try record.readLength()
            }
        } catch let error as ByteCursorError {
            throw bad("the end-of-central-directory record is cut short (\(error))")
        }
        let maximumEntries = limits.maxTensorCount.addingReportingOverflow(64)
        let entryLimit = maximumEntries.overflow ? Int.max : maximumEntries.partialValue
        guard entryCount <= entryLimit else {
            throw FormatError.limitExceeded(path: path, limit: "tensor count", value: entryCount, maximum: limits.maxTensorCount)
        }
        let (directoryEnd, overflow) = directoryOffset.addingReportingOverflow(directorySize)
        guard !overflow, directoryEnd <= file.count, entryCount <= directorySize / 46 else {
            throw bad("the central directory (\(directorySize) bytes at byte \(directoryOffset), \(entryCount) entries) does not fit in the file (\(file.count) bytes)")
        }
        var entries: [String: Entry] = [:]
        var names: [String] = []
        var directory = try cursor(at: directoryOffset)
        do {
            for index in 0..<entryCount {
                let at = directory.offset
                guard at + 46 <= directoryEnd else { throw bad("central directory entry \(index) runs past the directory's end") }
                guard try directory.readLittleEndian(UInt32.self) == Self.centralHeaderSignature else {
                    throw bad("central directory entry \(index) at byte \(at) has a wrong signature")
                }
                try directory.seek(to: at + 8)
                let flags = try directory.readLittleEndian(UInt16.self)
                let method = try directory.readLittleEndian(UInt16.self)
                try directory.seek(to: at + 20)
                var compressed = UInt64(try directory.readLittleEndian(UInt32.self))
                var uncompressed = UInt64(try directory.readLittleEndian(UInt32.self))
                let nameLength = Int(try directory.readLittleEndian(UInt16.self))
                let extraLength = Int(try directory.readLittleEndian(UInt16.self))
                let commentLength = Int(try directory.readLittleEndian(UInt16.self))
                try directory.seek(to: at + 42)
                var localOffset = UInt64(try directory.readLittleEndian(UInt32.self))
                let nameBytes = try directory.readBytes(nameLength)
                let extra = try directory.readBytes(extraLength)
                _ = try directory.readBytes(commentLength)
                guard directory.offset <= directoryEnd else { throw bad("central directory entry \(index) runs past the directory's end") }
                guard let name = String(data: nameBytes, encoding: .utf8) else { throw bad("entry \(index)'s name is not UTF-8") }
                guard flags & 1 == 0 else { throw bad("entry '\(name)' is encrypted") }
                // ZIP64 extended information: the fields saturated in the fixed part, in order.
                var extraCursor = ByteCursor(extra)
                while extraCursor.remaining >= 4 {
                    let identifier = try extraCursor.readLittleEndian(UInt16.self)
                    let size = Int(try extraCursor.readLittleEndian(UInt16.self))
                    let body = try extraCursor.readBytes(min(size, extraCursor.remaining))
                    guard identifier == 0x0001 else { continue }
                    var fields = ByteCursor(body)
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try fields.readLittleEndian() }
                    if compressed == 0xFFFF_FFFF { compressed = try fields.readLittleEndian() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try fields.readLittleEndian() }
                }
                guard let compressedSize = Int(exactly: compressed), let uncompressedSize = Int(exactly: uncompressed),
                      let headerOffset = Int(exactly: localOffset) else {
                    throw bad("entry '\(name)' declares sizes or an offset beyond 2^63")
                }
                guard method == 0 || method == 8 else {
                    throw bad("entry '\(name)' uses compression method \(method); only stored (0) and deflated (8) are read")
                }
                guard method != 0 || compressedSize == uncompressedSize else {
                    throw bad("stored entry '\(name)' has compressed size \(compressedSize) ≠ uncompressed size \(uncompressedSize)")
                }
                // The local header: its own name and extra lengths decide where the data starts.
                var local = try cursor(at: headerOffset)
                guard headerOffset <= file.count - 30, try local.readLittleEndian(UInt32.self) == Self.localHeaderSignature else {
                    throw bad("entry '\(name)': no local file header at byte \(headerOffset)")
                }
                try local.seek(to: headerOffset + 26)
                let localNameLength = Int(try local.readLittleEndian(UInt16.self))
                let localExtraLength = Int(try local.readLittleEndian(UInt16.self))
                guard try local.readBytes(localNameLength) == nameBytes else {
                    throw bad("entry '\(name)': the local header names another file")
                }
                let dataOffset = headerOffset + 30 + localNameLength + localExtraLength
                let (dataEnd, dataOverflow) = dataOffset.addingReportingOverflow(compressedSize)
                guard !dataOverflow, dataEnd <= file.count else {
                    throw FormatError.truncated(path: path, what: "zip entry '\(name)'", offset: dataOffset,
                                                needed: compressedSize, available: max(0, file.count - dataOffset))
                }
                let entry = Entry(name: name, method: method, compressedSize: compressedSize, uncompressedSize: uncompressedSize,
                                  localHeaderOffset: headerOffset, dataOffset: dataOffset)
                guard entries.updateValue(entry, forKey: name) == nil else { throw bad("entry '\(name)' appears twice") }
                names.append(name)
            }
        } catch let error as ByteCursorError {
            throw bad("the central directory is cut short (\(error))")
        }
        self.entries = entries
        self.names = names
    }
}
