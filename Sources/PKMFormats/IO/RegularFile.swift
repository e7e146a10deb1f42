import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opening files for reading without being tricked by what a path names.
///
/// `open()` of a FIFO for reading blocks until a writer appears (forever, for a FIFO named as a
/// shard in an index: issue 18), and a character device such as `/dev/zero` reads without end.
/// Every file pkm-convert reads (checkpoints, shards, indexes, configs, tokenizers, reference
/// files) is therefore a regular file, or a symbolic link to one: the path is `stat`ed first
/// (which never blocks and has no side effects), then opened with `O_NONBLOCK` and `fstat`ed
/// again on the descriptor (so a file swapped between the two calls is still caught), and only a
/// regular file is read. RELIABILITY.md §9 states the policy.
public enum RegularFile {
    /// What a `st_mode` file type is, in words ("a FIFO (named pipe)", "a character device", …).
    public static func describe(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "a special file"
        }
    }

    /// Checks, without opening it, that `url` (following symbolic links) is a regular file.
    /// - Parameter what: what the file is for, in the error ("a checkpoint file", "a config file").
    /// - Returns: the file's size in bytes.
    /// - Throws: ``FormatError/fileNotFound(path:)``; ``FormatError/notRegularFile(path:found:what:)``
    ///   for a folder, FIFO, device or socket; ``FormatError/io(path:operation:message:)`` when `stat` fails otherwise.
    @discardableResult
    public static func requireRegular(_ url: URL, what: String) throws(FormatError) -> Int {
        var status = stat()
        guard stat(url.path, &status) == 0 else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw .fileNotFound(path: url.path) }
            throw .io(path: url.path, operation: "stat", message: String(cString: strerror(code)))
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw .notRegularFile(path: url.path, found: describe(mode: status.st_mode), what: what)
        }
        return Int(status.st_size)
    }

    /// Opens a regular file for reading and returns its descriptor (the caller closes it).
    ///
    /// The descriptor is opened with `O_NONBLOCK` (so even a FIFO put there after the `stat` does
    /// not block), checked with `fstat`, then set back to blocking for ordinary reads.
    /// - Throws: as ``requireRegular(_:what:)``; ``FormatError/io(path:operation:message:)`` when `open` fails.
    public static func openForReading(_ url: URL, what: String) throws(FormatError) -> Int32 {
        try requireRegular(url, what: what)
        let descriptor = open(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            let code = errno
            if code == ENOENT { throw .fileNotFound(path: url.path) }
            throw .io(path: url.path, operation: "open for reading", message: String(cString: strerror(code)))
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            let found = describe(mode: status.st_mode)
            close(descriptor)
            throw .notRegularFile(path: url.path, found: found, what: what)
        }
        let flags = fcntl(descriptor, F_GETFL)
        if flags >= 0 { _ = fcntl(descriptor, F_SETFL, flags & ~O_NONBLOCK) }
        return descriptor
    }

    /// The first `count` bytes of a regular file (fewer when it is shorter), e.g. for magic numbers.
    /// - Throws: as ``openForReading(_:what:)``; ``FormatError/io(path:operation:message:)`` when reading fails.
    public static func head(of url: URL, count: Int, what: String) throws(FormatError) -> Data {
        let descriptor = try openForReading(url, what: what)
        defer { close(descriptor) }
        return try read(descriptor, upTo: count, path: url.path)
    }

    /// The whole contents of a regular file of at most `maxBytes` bytes (a config, a tokenizer, an index).
    /// - Throws: as ``openForReading(_:what:)``; ``FormatError/limitExceeded(path:limit:value:maximum:)``
    ///   (``ReaderLimit/headerBytes``) when it is longer than `maxBytes`, checked before reading and again after.
    public static func contents(of url: URL, what: String, maxBytes: Int) throws(FormatError) -> Data {
        let descriptor = try openForReading(url, what: what)
        defer { close(descriptor) }
        var status = stat()
        let size = fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
        guard size <= maxBytes else {
            throw .limitExceeded(path: url.path, limit: .headerBytes, value: size, maximum: maxBytes)
        }
        let (limit, overflow) = maxBytes.addingReportingOverflow(1)
        let data = try read(descriptor, upTo: overflow ? maxBytes : limit, path: url.path)
        guard data.count <= maxBytes else {  // the file grew since it was measured
            throw .limitExceeded(path: url.path, limit: .headerBytes, value: data.count, maximum: maxBytes)
        }
        return data
    }

    /// Reads up to `count` bytes, retrying interrupted and short reads until end of file.
    private static func read(_ descriptor: Int32, upTo count: Int, path: String) throws(FormatError) -> Data {
        var data = Data()
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: min(max(count, 0), chunk))
        while data.count < count {
            let wanted = min(buffer.count, count - data.count)
            let got = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, wanted) }
            if got < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "read", message: String(cString: strerror(errno)))
            }
            if got == 0 { break }
            data.append(contentsOf: buffer[0..<got])
        }
        return data
    }
}

/// Checks on where outputs go: nothing but a regular file (or a symbolic link to one) is ever
/// replaced by an output file, and a folder output never lands on a file or a device.
///
/// Why: an atomic output renames its finished temporary file over the destination, which replaces
/// whatever the name pointed to, so `-o /dev/null` run as root turned the null device into a
/// regular file (issue 18). ``AtomicOutputFile`` calls ``checkFile(_:)``; code that writes a
/// folder of outputs calls ``checkFolder(_:)`` before creating it.
public enum OutputDestination {
    /// Refuses an existing destination that is not a regular file or a symbolic link to one (a
    /// dangling symbolic link is allowed: the output replaces the link). A missing destination is fine.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` naming what is there.
    public static func checkFile(_ url: URL) throws(FormatError) {
        var status = stat()
        guard stat(url.path, &status) == 0 else { return }  // nothing there (or a dangling link)
        let type = status.st_mode & S_IFMT
        guard type != S_IFREG else { return }
        if type == S_IFDIR {
            throw .writeFailed(path: url.path, reason: "it is a folder; name an output file inside it")
        }
        throw .writeFailed(path: url.path, reason: "it is \(RegularFile.describe(mode: status.st_mode)), which an output must never replace; choose a file name")
    }

    /// Refuses an existing folder destination that is not a folder (or a symbolic link to one).
    /// A missing destination is fine (the caller creates it).
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` naming what is there.
    public static func checkFolder(_ url: URL) throws(FormatError) {
        var status = stat()
        guard stat(url.path, &status) == 0 else {
            var link = stat()
            if lstat(url.path, &link) == 0 {
                throw .writeFailed(path: url.path, reason: "it is a symbolic link to a missing folder; create the folder or choose another name")
            }
            return
        }
        guard status.st_mode & S_IFMT != S_IFDIR else { return }
        throw .writeFailed(path: url.path, reason: "it is \(RegularFile.describe(mode: status.st_mode)), not a folder; choose a folder name")
    }
}
