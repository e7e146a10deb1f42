import Foundation

/// Allocations sized by a file, that fail with an error instead of trapping (internal).
///
/// `Data(count:)` and `reserveCapacity` trap when the allocator refuses (a 64 GiB reservation
/// from a 662-byte zip, issue 18). Sizes are validated against the file and ``ReaderLimits``
/// first; this is the last line: `malloc` returning nil becomes ``FormatError/limitExceeded(path:limit:value:maximum:)``.
enum FallibleAllocation {
    /// `count` bytes from `malloc` (at least 1), uninitialised; the caller frees them or hands
    /// them to `Data(bytesNoCopy:count:deallocator: .free)`.
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the memory cannot be allocated.
    static func bytes(_ count: Int, path: String, what: String) throws(FormatError) -> UnsafeMutableRawPointer {
        guard count >= 0, let pointer = malloc(max(count, 1)) else {
            throw .io(path: path, operation: "allocate \(count) bytes for \(what)",
                      message: "not enough memory; the file declares more than this machine can hold")
        }
        return pointer
    }
}
