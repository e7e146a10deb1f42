import Foundation

/// Memory-maps whole files for the readers (internal).
enum MappedFile {
    /// The bytes of `url`, memory-mapped; an empty file gives empty data without mapping.
    ///
    /// Why the special case: Foundation's `Data(contentsOf:options: .alwaysMapped)` cannot map a
    /// zero-length file and falls back to a read that leaks a 4 KiB buffer (found by libFuzzer with
    /// LeakSanitizer, see RELIABILITY.md), so an empty file, which every reader refuses anyway, is
    /// never handed to it.
    /// - Throws: whatever `Data(contentsOf:options:)` throws (callers wrap it in ``FormatError/io(path:operation:message:)``).
    static func bytes(of url: URL) throws -> Data {
        var status = stat()
        if stat(url.path, &status) == 0, status.st_size == 0, (status.st_mode & S_IFMT) == S_IFREG { return Data() }
        return try Data(contentsOf: url, options: .alwaysMapped)
    }

    /// The mapped bytes of the checkpoint file at `url`, for a reader of `kind` files (named in errors).
    /// - Throws: ``FormatError/fileNotFound(path:)``; ``FormatError/notRegularFile(path:found:what:)`` for a
    ///   folder, FIFO, device or socket (checked without blocking, see ``RegularFile``);
    ///   ``FormatError/io(path:operation:message:)`` for a file that cannot be mapped.
    static func checkpoint(at url: URL, kind: String) throws(FormatError) -> Data {
        let path = url.path
        // Never map (or open) a FIFO, device or socket: opening a FIFO blocks, a device never ends.
        let descriptor = try RegularFile.openForReading(url, what: kind)
        close(descriptor)
        do {
            return try bytes(of: url)
        } catch {
            throw .io(path: path, operation: "map the file", message: error.localizedDescription)
        }
    }
}

/// Releases resident pages of a read-only file mapping (internal).
enum MappedPages {
    /// `madvise(MADV_DONTNEED)` on the whole pages inside `range` of `bytes` (a private, read-only file mapping:
    /// the pages are dropped from this process and read back from the file if touched again). Only a hint;
    /// failures are ignored.
    static func release(_ bytes: UnsafeRawBufferPointer, range: Range<Int>) {
        guard let base = bytes.baseAddress, range.lowerBound >= 0, range.upperBound <= bytes.count else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let startAddress = UInt(bitPattern: base) + UInt(range.lowerBound)
        let endAddress = UInt(bitPattern: base) + UInt(range.upperBound)
        let first = (startAddress + UInt(page) - 1) / UInt(page) * UInt(page)
        let last = endAddress / UInt(page) * UInt(page)
        guard last > first, let pointer = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(pointer, Int(last - first), MADV_DONTNEED)
    }
}
