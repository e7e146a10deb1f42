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

    /// Like ``write(to:tensorInfos:metadata:options:progress:tensor:)``, but a tensor may be a
    /// ``TensorSource`` produced chunk by chunk. ``PKMZWriter`` and ``SafetensorsWriter`` stream
    /// sources in bounded chunks; the default (``HDF5Writer``) materialises each source whole.
    /// - Throws: as the tensor-based write, or whatever a source throws.
    ///
    /// A separate name (not a `write` overload) so that a trailing closure that only throws stays unambiguous.
    static func writeStreaming(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                               options: WriteOptions, progress: ((Int, Int) -> Void)?,
                               data: (TensorInfo) throws -> TensorData) throws
}

extension CheckpointWriter {
    /// Materialises every source whole, then writes as ``write(to:tensorInfos:metadata:options:progress:tensor:)``.
    public static func writeStreaming(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                                      options: WriteOptions, progress: ((Int, Int) -> Void)?,
                                      data: (TensorInfo) throws -> TensorData) throws {
        try write(to: url, tensorInfos: tensorInfos, metadata: metadata, options: options, progress: progress) { info in
            try data(info).materialized(info: info)
        }
    }
}

/// Progress counted in bytes, derived from the writers' per-tensor callbacks.
public enum ByteProgress {
    /// A per-tensor callback (tensors done, total) for a writer of `infos` that calls `perTensor`
    /// unchanged and `bytes` with (bytes of the tensors done, bytes of all of them); nil when both are nil.
    public static func perTensor(_ infos: [TensorInfo], perTensor: ((Int, Int) -> Void)?,
                                 bytes: ((Int, Int) -> Void)?) -> ((Int, Int) -> Void)? {
        guard perTensor != nil || bytes != nil else { return nil }
        var cumulative = [0]
        cumulative.reserveCapacity(infos.count + 1)
        for info in infos { cumulative.append(cumulative[cumulative.count - 1] + info.byteCount) }
        let total = cumulative[cumulative.count - 1]
        return { done, count in
            perTensor?(done, count)
            bytes?(cumulative[min(max(done, 0), cumulative.count - 1)], total)
        }
    }
}
