import Foundation

/// A dense tensor: a dtype, a shape and its bytes, row-major and little-endian.
///
/// Storage is a `Data` value, which may be a slice of a memory-mapped file, so a tensor read
/// from safetensors costs no copy until its values are used. The invariant
/// `storage.count == product(shape) × dtype.byteSize` is checked by every initialiser.
public struct Tensor: Sendable {
    /// The element type.
    public let dtype: DType
    /// The dimensions, outermost first (`[out, in]` for a PyTorch linear weight).
    public let shape: [Int]
    /// Little-endian, row-major element bytes.
    public let storage: Data

    /// Wraps existing bytes.
    /// - Throws: ``TensorError`` when the byte count disagrees with `shape` and `dtype`.
    public init(dtype: DType, shape: [Int], storage: Data, name: String? = nil) throws(TensorError) {
        let expected = try ShapeMath.checkedByteCount(shape, dtype: dtype)
        guard storage.count == expected else {
            throw .byteCountMismatch(name: name, expected: expected, actual: storage.count)
        }
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// A zero-filled tensor.
    /// - Throws: ``TensorError`` when the shape is invalid or overflows.
    public init(zeros dtype: DType, shape: [Int]) throws(TensorError) {
        let bytes = try ShapeMath.checkedByteCount(shape, dtype: dtype)
        self.dtype = dtype
        self.shape = shape
        self.storage = Data(count: bytes)
    }

    /// A float32 tensor holding `values`, whose count must equal the shape's element count.
    /// - Throws: ``TensorError/byteCountMismatch(name:expected:actual:)`` on a count mismatch.
    public init(float32 values: [Float], shape: [Int]) throws(TensorError) {
        let data = values.withUnsafeBytes { Data($0) }
        try self.init(dtype: .float32, shape: shape, storage: data)
    }

    /// An int64 tensor holding `values`.
    /// - Throws: ``TensorError/byteCountMismatch(name:expected:actual:)`` on a count mismatch.
    public init(int64 values: [Int64], shape: [Int]) throws(TensorError) {
        let data = values.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        try self.init(dtype: .int64, shape: shape, storage: data)
    }

    /// The number of elements.
    public var elementCount: Int { storage.count / dtype.byteSize }

    /// The number of bytes of element data.
    public var byteCount: Int { storage.count }

    /// Whether two tensors have the same dtype, shape and bytes (bit-exact, so NaN payloads count).
    public func isBitwiseEqual(to other: Tensor) -> Bool {
        dtype == other.dtype && shape == other.shape && storage == other.storage
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "Tensor(\(dtype), \(shape))" }
}
