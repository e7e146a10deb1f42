import Foundation
import PKMTensor

/// A tensor's bytes produced piece by piece, so that a writer never holds a whole large tensor:
/// generated values (graft) or a range of a mapped or read source (convert, import).
///
/// Writers that stream frames (``PKMZWriter``, ``SafetensorsWriter``) ask for one chunk at a
/// time; others ask for the whole tensor once (``TensorData/materialized(info:)``).
public struct TensorSource: Sendable {
    /// Writes bytes `offset ..< offset + buffer.count` of the tensor (little-endian, row-major)
    /// into `buffer`. Writers call it for disjoint ranges, possibly from several threads at once.
    public var fill: @Sendable (_ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void
    /// Called with `n` once the writer is done with every byte below `n` (so a mapped source can
    /// release those pages); in increasing order, from the writing thread.
    public var consumed: (@Sendable (_ upTo: Int) -> Void)?

    public init(fill: @escaping @Sendable (_ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws -> Void,
                consumed: (@Sendable (_ upTo: Int) -> Void)? = nil) {
        self.fill = fill
        self.consumed = consumed
    }
}

/// What a writer gets for one tensor: the whole tensor, or a source of its bytes.
public enum TensorData: Sendable {
    case tensor(Tensor)
    case source(TensorSource)

    /// The whole tensor (a source is read into memory once).
    /// - Throws: whatever the source throws, or ``TensorError`` for a mismatched shape.
    public func materialized(info: TensorInfo) throws -> Tensor {
        switch self {
        case .tensor(let tensor): return tensor
        case .source(let source):
            var bytes = Data(count: info.byteCount)
            try bytes.withUnsafeMutableBytes { buffer in
                if buffer.count > 0 { try source.fill(0, buffer) }
            }
            source.consumed?(info.byteCount)
            return try Tensor(dtype: info.dtype, shape: info.shape, storage: bytes, name: info.name)
        }
    }
}
