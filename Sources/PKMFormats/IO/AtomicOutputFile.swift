import CSystemShims
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An output file that appears at its destination only when complete.
///
/// On Linux the data goes to an anonymous `O_TMPFILE` inode in the destination folder: it has
/// no name until ``commit()``, so a run that fails, or is killed even with SIGKILL, leaves
/// nothing behind. `commit()` fsyncs, then links the inode straight to the destination when
/// there is none (no temporary name at all), or links it under a hidden temporary name and
/// renames that over the destination (atomic on POSIX file systems; an existing destination
/// stays intact until then). Where `O_TMPFILE` is unavailable a hidden named temporary file is
/// used and removed on any failure.
///
/// Temporary names carry the writer's process id (`.<name>.pkm-tmp-<pid>-…`). A SIGKILL in the
/// microseconds between link and rename, or during a whole write on systems without `O_TMPFILE`,
/// can leave one behind; the next output to the same destination removes those whose process
/// is gone (RELIABILITY.md, fault injection).
///
/// After the rename (or link) the folder itself is fsynced, so the new name survives a power
/// loss too, not only the data.
///
/// Writers that manage their own I/O write through ``fileDescriptor`` or open
/// ``pathForLibraries``. A C library that opens files by name and resolves them with `realpath()`
/// (libhdf5 does) cannot open an anonymous inode's `/proc/self/fd/N`: such writers ask for a
/// named temporary file (`init(destination:named: true)`).
public final class AtomicOutputFile {
    /// Where the file will appear on commit.
    public let destination: URL
    /// The open descriptor data is written to.
    public private(set) var fileDescriptor: Int32
    /// A path that opens the same inode (for C libraries that take a file name).
    public let pathForLibraries: String
    /// Bytes written through ``write(_:)-(UnsafeRawBufferPointer)``.
    public private(set) var bytesWritten: Int = 0
    private var namedTemporaryPath: String?
    private var finished = false
    /// Bytes already handed to the device by ``startWriteback()``.
    private var writebackStarted = 0
    /// Writeback starts after every this many new bytes (so `commit()`'s fsync does not wait for
    /// the whole file: the disk writes while the writer still computes).
    static let writebackInterval = 32 << 20

    /// Creates the hidden output in the destination's folder.
    /// - Parameter named: use a hidden named temporary file (removed on failure) instead of an
    ///   anonymous inode, for libraries that must open ``pathForLibraries`` by a real name.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` when the folder does not exist or the
    ///   destination exists and is not a regular file or a symbolic link to one (``OutputDestination/checkFile(_:)``),
    ///   ``FormatError/io(path:operation:message:)`` when it is not writable.
    public init(destination: URL, named: Bool = false) throws(FormatError) {
        self.destination = destination
        // Never rename over a device node, FIFO, socket or folder (`-o /dev/null` as root would replace the device).
        try OutputDestination.checkFile(destination)
        let folder = destination.deletingLastPathComponent().path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isFolder), isFolder.boolValue else {
            let exists = FileManager.default.fileExists(atPath: folder)
            throw .writeFailed(path: destination.path, reason: exists ? "\(folder) is not a folder"
                               : "the folder \(folder) does not exist; create it first (mkdir -p \(folder))")
        }
        Self.removeStaleTemporaries(of: destination)
        #if os(Linux)
        let oTmpFile: Int32 = 0o20200000  // O_TMPFILE | O_DIRECTORY, not importable as a macro
        let anonymous = named ? -1 : open(folder.isEmpty ? "." : folder, oTmpFile | O_RDWR | O_CLOEXEC, 0o644)
        if anonymous >= 0 {
            fileDescriptor = anonymous
            pathForLibraries = "/proc/self/fd/\(anonymous)"
            namedTemporaryPath = nil
            return
        }
        #endif
        var template = Array((folder.isEmpty ? "." : folder).utf8CString.dropLast())
        template += Array("/.\(destination.lastPathComponent).pkm-tmp-\(getpid())-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            throw .io(path: destination.path, operation: "create a temporary file in \(folder)", message: String(cString: strerror(errno)))
        }
        fchmod(descriptor, 0o644)
        fileDescriptor = descriptor
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        namedTemporaryPath = path
        pathForLibraries = path
    }

    deinit { discard() }

    /// Writes all bytes, retrying short writes and interrupted calls.
    /// - Throws: ``FormatError/writeFailed(path:reason:)`` (for example on a full disk).
    public func write(_ buffer: UnsafeRawBufferPointer) throws(FormatError) {
        guard var pointer = buffer.baseAddress else { return }
        var left = buffer.count
        while left > 0 {
            let written = Glibc.write(fileDescriptor, pointer, left)
            if written < 0 {
                if errno == EINTR { continue }
                throw .writeFailed(path: destination.path, reason: String(cString: strerror(errno)))
            }
            if written == 0 { throw .writeFailed(path: destination.path, reason: "the device accepted no more bytes") }
            left -= written
            pointer += written
            bytesWritten += written
        }
        if bytesWritten - writebackStarted >= Self.writebackInterval { startWriteback() }
    }

    /// Asks the kernel to start writing the bytes written since the last call to the device,
    /// without waiting. Only a hint: failures are ignored (``commit()``'s fsync reports errors).
    private func startWriteback() {
        _ = pkm_start_writeback(fileDescriptor, Int64(writebackStarted), Int64(bytesWritten - writebackStarted))
        writebackStarted = bytesWritten
    }

    /// Writes all bytes of `data`.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``.
    public func write(_ data: Data) throws(FormatError) {
        var failure: FormatError?
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            do { try write(raw) } catch let error as FormatError { failure = error } catch { failure = .writeFailed(path: destination.path, reason: "\(error)") }
        }
        if let failure { throw failure }
    }

    /// Flushes to disk and moves the file to its destination, replacing any file there.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``; the destination is then untouched.
    public func commit() throws(FormatError) {
        guard !finished else { throw .writeFailed(path: destination.path, reason: "output already finished") }
        if fsync(fileDescriptor) != 0 {
            let reason = String(cString: strerror(errno))
            discard()
            throw .writeFailed(path: destination.path, reason: "fsync: \(reason)")
        }
        let destinationPath = destination.path
        if let named = namedTemporaryPath {
            guard rename(named, destinationPath) == 0 else {
                let reason = String(cString: strerror(errno))
                discard()
                throw .writeFailed(path: destinationPath, reason: "rename: \(reason)")
            }
        } else {
            #if os(Linux)
            // No destination yet: give the inode its final name directly, so no temporary name ever exists.
            if linkat(AT_FDCWD, pathForLibraries, AT_FDCWD, destinationPath, 0x400 /* AT_SYMLINK_FOLLOW */) == 0 {
                close(fileDescriptor)
                fileDescriptor = -1
                finished = true
                try syncFolder()
                return
            }
            let folder = destination.deletingLastPathComponent().path
            var linked: String?
            for attempt in 0..<16 {
                let candidate = "\(folder.isEmpty ? "." : folder)/.\(destination.lastPathComponent).pkm-tmp-\(getpid())-\(attempt)-\(UInt32.random(in: 0...UInt32.max))"
                if linkat(AT_FDCWD, pathForLibraries, AT_FDCWD, candidate, 0x400 /* AT_SYMLINK_FOLLOW */) == 0 {
                    linked = candidate
                    break
                }
                if errno != EEXIST {
                    let reason = String(cString: strerror(errno))
                    discard()
                    throw .writeFailed(path: destinationPath, reason: "link: \(reason)")
                }
            }
            guard let temporary = linked else {
                discard()
                throw .writeFailed(path: destinationPath, reason: "could not name the temporary file")
            }
            guard rename(temporary, destinationPath) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                discard()
                throw .writeFailed(path: destinationPath, reason: "rename: \(reason)")
            }
            #endif
        }
        close(fileDescriptor)
        fileDescriptor = -1
        finished = true
        try syncFolder()
    }

    /// fsyncs the destination's folder, so the entry naming the new file is on disk too.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``: the file is in place, but its name may
    ///   not survive a power loss.
    private func syncFolder() throws(FormatError) {
        let folder = destination.deletingLastPathComponent().path
        let descriptor = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }   // a folder we cannot open for reading: nothing to sync through
        defer { close(descriptor) }
        if fsync(descriptor) != 0, errno != EINVAL, errno != EROFS {
            throw .writeFailed(path: destination.path, reason: "fsync of the folder \(folder): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes `.<destination name>.pkm-tmp-<pid>-…` files in the destination's folder whose writing
    /// process no longer exists (left by a writer killed between linking and renaming). Best effort.
    static func removeStaleTemporaries(of destination: URL) {
        let folder = destination.deletingLastPathComponent()
        let prefix = ".\(destination.lastPathComponent).pkm-tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path.isEmpty ? "." : folder.path) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink(folder.appendingPathComponent(name).path)
            }
        }
    }

    /// Abandons the output: closes it and removes any temporary name. Safe to call twice.
    public func discard() {
        guard !finished else { return }
        finished = true
        if fileDescriptor >= 0 { close(fileDescriptor) }
        fileDescriptor = -1
        if let named = namedTemporaryPath { unlink(named) }
    }

    /// Runs `body` with a fresh output and commits it when `body` returns; discards it on error.
    /// - Throws: whatever `body` throws, or ``FormatError`` from creating or committing.
    public static func write<Result>(to destination: URL, named: Bool = false,
                                     _ body: (AtomicOutputFile) throws -> Result) throws -> Result {
        let output = try AtomicOutputFile(destination: destination, named: named)
        do {
            let result = try body(output)
            try output.commit()
            return result
        } catch {
            output.discard()
            throw error
        }
    }
}
