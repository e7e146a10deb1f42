import Foundation
import PKMTensor

/// Writes a whole checkpoint in one format, streaming tensor by tensor.
///
/// Conformers: ``HDF5Writer``, ``SafetensorsWriter``, ``PKMZWriter``. Every conformer writes
/// through ``AtomicOutputFile``, so a failure leaves nothing at `url`.
public protocol CheckpointWriter {
    /// Writes `tensorInfos` in order, asking `tensor` for each one's data when it is needed
    /// (so at most a few tensors are in memory at once).
    /// - Parameters:
    ///   - metadata: string metadata; `config` is the model config JSON.
    ///   - progress: called after each tensor with (tensors done, total).
    /// - Throws: ``FormatError``, or whatever `tensor` throws.
    static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                      options: WriteOptions, progress: ((Int, Int) -> Void)?,
                      tensor: (TensorInfo) throws -> Tensor) throws
}
