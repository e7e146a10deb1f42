/// Shape arithmetic with overflow checks.
///
/// Every size derived from a file goes through these helpers so that a header declaring
/// absurd dimensions becomes an error, never a trap or a huge allocation.
public enum ShapeMath {
    /// The number of elements of `shape`, or `nil` when a dimension is negative or the product overflows.
    public static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// The number of bytes of `shape` elements of `dtype`, or `nil` on overflow or negative dimensions.
    public static func byteCount(_ shape: [Int], dtype: DType) -> Int? {
        guard let count = elementCount(shape) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        return overflow ? nil : bytes
    }

    /// Like ``byteCount(_:dtype:)`` but throws a ``TensorError`` naming the problem.
    public static func checkedByteCount(_ shape: [Int], dtype: DType) throws(TensorError) -> Int {
        if shape.contains(where: { $0 < 0 }) { throw .negativeDimension(shape: shape) }
        guard let bytes = byteCount(shape, dtype: dtype) else { throw .sizeOverflow(shape: shape, dtype: dtype) }
        return bytes
    }
}
