import Foundation

/// Errors from ``ByteCursor``.
public enum ByteCursorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A read needed more bytes than remain.
    case truncated(offset: Int, needed: Int, available: Int)
    /// A stored length does not fit in `Int`.
    case lengthOverflow(offset: Int, value: UInt64)

    public var description: String {
        switch self {
        case .truncated(let offset, let needed, let available):
            return "truncated at byte \(offset): needed \(needed) bytes, \(available) remain"
        case .lengthOverflow(let offset, let value):
            return "length \(value) at byte \(offset) does not fit in memory"
        }
    }
}

/// A bounds-checked little-endian reader over bytes: the one byte cursor every binary format uses.
///
/// It never traps on short input; every read either returns a value or throws
/// ``ByteCursorError`` with the offset.
public struct ByteCursor: Sendable {
    private let bytes: Data
    /// Offset of the next read, relative to the start of the bytes given.
    public private(set) var offset: Int = 0

    /// A cursor at the start of `bytes`.
    public init(_ bytes: Data) {
        self.bytes = bytes
    }

    /// Bytes not yet read.
    public var remaining: Int { bytes.count - offset }

    /// Reads `count` raw bytes.
    public mutating func readBytes(_ count: Int) throws(ByteCursorError) -> Data {
        guard count >= 0, count <= remaining else {
            throw .truncated(offset: offset, needed: count, available: remaining)
        }
        let start = bytes.startIndex + offset
        offset += count
        return bytes.subdata(in: start..<(start + count))
    }

    /// Reads a little-endian unsigned integer.
    public mutating func readLittleEndian<T: FixedWidthInteger & UnsignedInteger>(_: T.Type = T.self) throws(ByteCursorError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .truncated(offset: offset, needed: size, available: remaining) }
        var value: T = 0
        let start = bytes.startIndex + offset
        for index in 0..<size {
            value |= T(bytes[start + index]) << (8 * index)
        }
        offset += size
        return value
    }

    /// Reads a little-endian unsigned integer at an absolute offset, without moving the cursor.
    public func littleEndian<T: FixedWidthInteger & UnsignedInteger>(at position: Int, as _: T.Type = T.self) throws(ByteCursorError) -> T {
        let size = MemoryLayout<T>.size
        guard position >= 0, position <= bytes.count, size <= bytes.count - position else {
            throw .truncated(offset: position, needed: size, available: max(0, bytes.count - max(position, 0)))
        }
        var value: T = 0
        let start = bytes.startIndex + position
        for index in 0..<size { value |= T(bytes[start + index]) << (8 * index) }
        return value
    }

    /// Reads a little-endian UInt64 length and converts it to `Int`.
    public mutating func readLength() throws(ByteCursorError) -> Int {
        let at = offset
        let raw: UInt64 = try readLittleEndian()
        guard let value = Int(exactly: raw) else { throw .lengthOverflow(offset: at, value: raw) }
        return value
    }

    /// Moves to an absolute offset.
    public mutating func seek(to newOffset: Int) throws(ByteCursorError) {
        guard newOffset >= 0, newOffset <= bytes.count else {
            throw .truncated(offset: offset, needed: newOffset - offset, available: remaining)
        }
        offset = newOffset
    }
}
