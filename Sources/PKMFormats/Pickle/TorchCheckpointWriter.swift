import Foundation
import PKMTensor

/// The writer slot of ``CheckpointFormat/pytorch`` (internal): PyTorch pickles are read, never
/// written, so every call throws instead of producing a file Python would have to unpickle.
enum TorchCheckpointWriter: CheckpointWriter {
    /// - Throws: always ``FormatError/writeFailed(path:reason:)``.
    static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                      options: WriteOptions, progress: ((Int, Int) -> Void)?,
                      tensor: (TensorInfo) throws -> Tensor) throws {
        throw FormatError.writeFailed(path: url.path, reason: "writing PyTorch pickles is not supported; write .safetensors")
    }
}
