import Foundation
import PKMTensor

/// The zip structures of a `torch.save` archive, parsed and cross-checked before ZIPFoundation
/// extracts anything (internal; `schemas/pytorch-pickle.md` §1.1).
///
/// ZIPFoundation trusts what the directory declares: a ZIP64 entry declaring 64 GiB made it reserve
/// 64 GiB (a trap), and 200 directory records pointing at one local entry turned a 48 KB file into
/// 1.68 GB of tensors (issue 18). This parser refuses, as torch's own reader (miniz) does, or more
/// strictly:
/// - an end-of-central-directory record (EOCD) on another disk, with disagreeing entry counts, with
///   an entry count or directory size that cannot fit the file, or with `0xFFFF`/`0xFFFFFFFF`
///   fields and no valid ZIP64 record (locator past the end, bad signature);
/// - a ZIP64 record whose count or sizes cannot fit the file (a count of 2⁶²);
/// - directory records that are malformed, fewer or more than the count, or whose local headers
///   do not match (signature, name);
/// - entry names that are absolute or contain `..` (torch never writes them);
/// - a stored entry whose compressed and uncompressed sizes differ, a deflated entry expanding
///   more than deflate can (1,032 : 1), and any unknown compression method;
/// - entries whose bytes (local header + data) overlap each other or the central directory, or
///   reach past the file's end.
struct ZipDirectory {
    struct Entry {
        var name: String
        var method: UInt16
        var compressedSize: Int
        var uncompressedSize: Int
        /// Where the local header starts.
        var localHeaderOffset: Int
        /// Bytes of the file the entry occupies (local header, data, data descriptor).
        var occupied: Range<Int>
    }

    let entries: [Entry]

    /// The most a deflate stream expands: 258 bytes per 2-bit code is 1,032 : 1 (zlib's documented bound).
    static let maximumDeflateRatio = 1_032

    init(file: Data, path: String, maxEntries: Int) throws {
        func bad(_ reason: String) -> FormatError { .invalidHeader(path: path, reason: "zip container: \(reason); torch refuses this file too, it is damaged or crafted") }
        let count = file.count
        func u16(_ offset: Int) throws -> Int {
            guard offset >= 0, offset + 2 <= count else { throw bad("a record at byte \(offset) runs past the end of the file") }
            let base = file.startIndex + offset
            return Int(file[base]) | Int(file[base + 1]) << 8
        }
        func u32(_ offset: Int) throws -> Int {
            let low = try u16(offset), high = try u16(offset + 2)
            return low | high << 16
        }
        func u64(_ offset: Int) throws -> UInt64 {
            let low = try u32(offset), high = try u32(offset + 4)
            return UInt64(low) | UInt64(high) << 32
        }
        func size(_ value: UInt64, _ what: String) throws -> Int {
            guard let exact = Int(exactly: value), exact <= count else {
                throw bad("\(what) is \(value), more than the file's \(count) bytes")
            }
            return exact
        }

        // The EOCD: the last "PK\5\6" whose comment ends the file.
        var eocd = -1
        let searchStart = max(0, count - 22 - 65_535)
        var position = count - 22
        while position >= searchStart {
            if try u32(position) == 0x0605_4B50 {
                let commentLength = try u16(position + 20)
                if position + 22 + commentLength == count { eocd = position; break }
            }
            position -= 1
        }
        guard eocd >= 0 else { throw bad("no end-of-central-directory record") }
        let disk = try u16(eocd + 4), directoryDisk = try u16(eocd + 6)
        var entriesOnDisk = UInt64(try u16(eocd + 8)), totalEntries = UInt64(try u16(eocd + 10))
        var directorySize = UInt64(try u32(eocd + 12)), directoryOffset = UInt64(try u32(eocd + 16))
        var directoryEnd = eocd
        let needsZip64 = entriesOnDisk == 0xFFFF || totalEntries == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF
        let locator = eocd - 20
        if locator >= 0, try u32(locator) == 0x0706_4B50 {
            let recordOffset = try u64(locator + 8)
            guard let record = Int(exactly: recordOffset), record + 56 <= locator else {
                throw bad("the ZIP64 locator points at byte \(recordOffset), past the end of the archive")
            }
            guard try u32(record) == 0x0606_4B50 else { throw bad("no ZIP64 end-of-central-directory record at byte \(record), where the locator points") }
            guard try u32(record + 16) == 0, try u32(record + 20) == 0, try u32(locator + 4) == 0, try u32(locator + 16) <= 1 else {
                throw bad("a multi-disk archive")
            }
            entriesOnDisk = try u64(record + 24)
            totalEntries = try u64(record + 32)
            directorySize = try u64(record + 40)
            directoryOffset = try u64(record + 48)
            directoryEnd = record
        } else if needsZip64 {
            throw bad("the end-of-central-directory record has ZIP64 markers (0xFFFF / 0xFFFFFFFF) but no ZIP64 record")
        } else {
            guard disk == 0, directoryDisk == 0 else { throw bad("a multi-disk archive") }
        }
        guard entriesOnDisk == totalEntries else { throw bad("the directory counts \(entriesOnDisk) entries on this disk but \(totalEntries) in all") }
        let directoryBytes = try size(directorySize, "the central directory's size")
        let directoryStart = try size(directoryOffset, "the central directory's offset")
        guard directoryStart + directoryBytes <= directoryEnd else {
            throw bad("the central directory (byte \(directoryStart), \(directoryBytes) bytes) runs past where it must end (byte \(directoryEnd))")
        }
        // Each directory record is at least 46 bytes: the count must fit the directory's size.
        guard totalEntries <= UInt64(directoryBytes / 46) else {
            throw bad("the directory declares \(totalEntries) entries, more than its \(directoryBytes) bytes can hold")
        }
        let entryCount = Int(totalEntries)
        guard entryCount <= maxEntries else {
            throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: entryCount, maximum: maxEntries)
        }

        var entries: [Entry] = []
        entries.reserveCapacity(entryCount)
        var cursor = directoryStart
        for index in 0..<entryCount {
            guard try u32(cursor) == 0x0201_4B50 else { throw bad("directory record \(index) at byte \(cursor) has no PK\\1\\2 signature") }
            let flags = try u16(cursor + 8)
            let method = UInt16(try u16(cursor + 10))
            var compressed = UInt64(try u32(cursor + 20)), uncompressed = UInt64(try u32(cursor + 24))
            let nameLength = try u16(cursor + 28), extraLength = try u16(cursor + 30), commentLength = try u16(cursor + 32)
            var localOffset = UInt64(try u32(cursor + 42))
            let nameStart = cursor + 46
            let recordEnd = nameStart + nameLength + extraLength + commentLength
            guard recordEnd <= directoryStart + directoryBytes else { throw bad("directory record \(index) runs past the central directory") }
            let nameBytes = file[(file.startIndex + nameStart)..<(file.startIndex + nameStart + nameLength)]
            guard let name = String(validating: nameBytes, as: UTF8.self) else { throw bad("entry \(index)'s name is not UTF-8") }
            // ZIP64 extra field: the 0xFFFFFFFF fields, in order.
            var extra = nameStart + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let tag = try u16(extra), length = try u16(extra + 2)
                guard extra + 4 + length <= extraEnd else { throw bad("entry '\(name.escapedForTerminal)' has a malformed extra field") }
                if tag == 0x0001 {
                    var field = extra + 4
                    func next() throws -> UInt64 {
                        guard field + 8 <= extra + 4 + length else { throw bad("entry '\(name.escapedForTerminal)' has a short ZIP64 extra field") }
                        defer { field += 8 }
                        return try u64(field)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                extra += 4 + length
            }
            let nameParts = name.split(separator: "/", omittingEmptySubsequences: false)
            guard !name.hasPrefix("/"), !name.contains("\\"), !nameParts.contains(".."), !name.utf8.contains(0) else {
                throw bad("entry name '\(name.escapedForTerminal)' is absolute or climbs out with '..'")
            }
            guard flags & 0x1 == 0 else { throw bad("entry '\(name.escapedForTerminal)' is encrypted") }
            let compressedSize = try size(compressed, "entry '\(name.escapedForTerminal)''s compressed size")
            guard let uncompressedSize = Int(exactly: uncompressed) else {
                throw bad("entry '\(name.escapedForTerminal)' declares \(uncompressed) bytes, beyond 2⁶³")
            }
            switch method {
            case 0:
                guard compressedSize == uncompressedSize else {
                    throw bad("the stored (uncompressed) entry '\(name.escapedForTerminal)' declares \(compressedSize) stored bytes but \(uncompressedSize) extracted bytes")
                }
            case 8:
                let (most, overflow) = compressedSize.multipliedReportingOverflow(by: Self.maximumDeflateRatio)
                guard overflow || uncompressedSize <= most + 64 else {
                    throw bad("the deflated entry '\(name.escapedForTerminal)' declares \(uncompressedSize) bytes from \(compressedSize) compressed bytes, more than deflate can expand (1,032 : 1)")
                }
            default:
                throw bad("entry '\(name.escapedForTerminal)' uses compression method \(method) (only stored and deflated are read)")
            }
            let local = try size(localOffset, "entry '\(name.escapedForTerminal)''s local header offset")
            guard try u32(local) == 0x0403_4B50 else { throw bad("entry '\(name.escapedForTerminal)' has no local header at byte \(local)") }
            let localNameLength = try u16(local + 26), localExtraLength = try u16(local + 28)
            let dataStart = local + 30 + localNameLength + localExtraLength
            guard localNameLength == nameLength, dataStart <= count,
                  file[(file.startIndex + local + 30)..<(file.startIndex + local + 30 + localNameLength)] == nameBytes else {
                throw bad("entry '\(name.escapedForTerminal)''s local header (byte \(local)) names another file than its directory record")
            }
            var dataEnd = dataStart + compressedSize
            if flags & 0x8 != 0 { dataEnd += 12 }  // a data descriptor follows (its 16-byte form overlaps nothing torch writes)
            guard dataEnd <= directoryStart else {
                throw bad("entry '\(name.escapedForTerminal)''s data (bytes \(dataStart)..<\(dataEnd)) runs into the central directory at byte \(directoryStart)")
            }
            entries.append(Entry(name: name, method: method, compressedSize: compressedSize, uncompressedSize: uncompressedSize,
                                 localHeaderOffset: local, occupied: local..<dataEnd))
            cursor = recordEnd
        }
        // No two entries may share bytes: one local entry listed 200 times would be read 200 times.
        let ordered = entries.sorted { $0.occupied.lowerBound < $1.occupied.lowerBound }
        for (first, second) in zip(ordered, ordered.dropFirst()) where second.occupied.lowerBound < first.occupied.upperBound {
            throw bad("entries '\(first.name.escapedForTerminal)' and '\(second.name.escapedForTerminal)' overlap (bytes \(first.occupied) and \(second.occupied)): directory records pointing into one entry")
        }
        self.entries = entries
    }
}
