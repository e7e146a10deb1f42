// TEMPORARY scaffolding: replaced by the HDF5 implementation.
import Foundation
import PKMTensor
public final class HDF5Reader: CheckpointReader, @unchecked Sendable {
    public let url: URL
    public var format: CheckpointFormat { .hdf5 }
    public var tensorInfos: [TensorInfo] { [] }
    public var metadata: [String: String] { [:] }
    public var provenance: Provenance? { nil }
    public init(url: URL, limits: ReaderLimits) throws { self.url = url; throw FormatError.unknownFormat(path: url.path, reason: "HDF5 not implemented yet") }
    public func tensor(named name: String) throws -> Tensor { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
}
public enum HDF5Writer: CheckpointWriter {
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String], options: WriteOptions, progress: ((Int, Int) -> Void)?, tensor: (TensorInfo) throws -> Tensor) throws {
        throw FormatError.writeFailed(path: url.path, reason: "HDF5 not implemented yet")
    }
}
