import Foundation
import PKMFormats
import PKMModel
import PKMTokenizers

/// The non-empty lines of a text file, read in chunks (memory bounded by one chunk and one batch,
/// not by the file), handed out in batches.
public struct TextLines: Sequence {
    public let url: URL
    public let batchSize: Int

    public init(url: URL, batchSize: Int) {
        self.url = url
        self.batchSize = Swift.max(batchSize, 1)
    }

    /// Every non-empty line (trailing `\r` removed), for small inputs.
    /// - Throws: ``FormatError/fileNotFound(path:)``; ``FormatError/io(path:operation:message:)``.
    public static func all(_ url: URL) throws -> [String] {
        var lines: [String] = []
        var iterator = try TextLines(url: url, batchSize: 4096).batches()
        while let batch = try iterator.next() { lines += batch.lines }
        return lines
    }

    /// One batch of lines and where reading stands.
    public struct Batch: Sendable {
        public var lines: [String]
        /// Bytes of the file consumed so far, and its size.
        public var bytesRead: Int
        public var totalBytes: Int
    }

    /// Reads batches until the file ends.
    public struct BatchIterator {
        let handle: FileHandle
        let url: URL
        let batchSize: Int
        let totalBytes: Int
        var buffer = Data()
        var bytesRead = 0
        var finished = false

        /// The next batch, or nil at the end of the file.
        /// - Throws: ``FormatError/io(path:operation:message:)`` when reading fails or a line is not UTF-8.
        public mutating func next() throws -> Batch? {
            var lines: [String] = []
            while lines.count < batchSize {
                if let newline = buffer.firstIndex(of: 0x0A) {
                    let lineBytes = buffer[buffer.startIndex..<newline]
                    buffer = Data(buffer[(newline + 1)...])
                    try append(lineBytes, to: &lines)
                    continue
                }
                if finished {
                    if !buffer.isEmpty { try append(buffer, to: &lines); buffer = Data() }
                    break
                }
                let chunk: Data
                do { chunk = try handle.read(upToCount: 1 << 20) ?? Data() } catch {
                    throw FormatError.io(path: url.path, operation: "read", message: error.localizedDescription)
                }
                if chunk.isEmpty { finished = true } else { buffer.append(chunk); bytesRead += chunk.count }
            }
            if lines.isEmpty { try? handle.close(); return nil }
            return Batch(lines: lines, bytesRead: bytesRead - buffer.count, totalBytes: totalBytes)
        }

        private func append(_ bytes: Data, to lines: inout [String]) throws {
            guard var line = String(data: bytes, encoding: .utf8) else {
                throw FormatError.io(path: url.path, operation: "read a line", message: "the text is not valid UTF-8 near byte \(bytesRead - buffer.count)")
            }
            if line.hasSuffix("\r") { line.removeLast() }
            if !line.trimmingCharacters(in: .whitespaces).isEmpty { lines.append(line) }
        }
    }

    /// - Throws: ``FormatError/fileNotFound(path:)``; ``FormatError/notRegularFile(path:found:what:)`` for a FIFO, a device
    ///   or a folder (never opened: a FIFO would block, a device never ends).
    public func batches() throws -> BatchIterator {
        let size = try RegularFile.requireRegular(url, what: "a text file")
        let handle = FileHandle(fileDescriptor: try RegularFile.openForReading(url, what: "a text file"), closeOnDealloc: true)
        return BatchIterator(handle: handle, url: url, batchSize: batchSize, totalBytes: size)
    }

    public func makeIterator() -> AnyIterator<[String]> {
        var iterator = try? batches()
        return AnyIterator { (try? iterator?.next())?.lines }
    }
}
