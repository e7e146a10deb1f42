// TEMPORARY scaffolding: replaced by the pkmz implementation.
import Foundation
import PKMTensor
public enum PKMZLayout { public static let magic: [UInt8] = [0x89, 0x50, 0x4B, 0x4D, 0x5A, 0x0D, 0x0A, 0x1A] }
public final class PKMZReader: CheckpointReader, @unchecked Sendable {
    public let url: URL
    public var format: CheckpointFormat { .pkmz }
    public var tensorInfos: [TensorInfo] { [] }
    public var metadata: [String: String] { [:] }
    public var provenance: Provenance? { nil }
    public init(url: URL, limits: ReaderLimits) throws { self.url = url; throw FormatError.unknownFormat(path: url.path, reason: "not implemented yet") }
    public func tensor(named name: String) throws -> Tensor { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
}
public enum PKMZWriter: CheckpointWriter {
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions, progress: ((Int, Int) -> Void)?, tensor: (TensorInfo) throws -> Tensor) throws {
        throw FormatError.writeFailed(path: url.path, reason: "not implemented yet")
    }
}
