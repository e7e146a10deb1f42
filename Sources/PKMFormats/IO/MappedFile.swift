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
}
