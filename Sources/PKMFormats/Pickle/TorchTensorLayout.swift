import Foundation
import PKMTensor

/// A validated strided view of one storage (internal): which storage elements a tensor reads and
/// how to turn them into a dense row-major tensor.
struct TorchTensorLayout: Sendable {
    let dtype: DType
    let shape: [Int]
    /// Strides in elements.
    let strides: [Int]
    /// Storage elements the view touches: `[storageOffset, last element + 1)`; empty for zero-size tensors.
    let extent: Range<Int>
    /// Bytes of the dense tensor.
    let byteCount: Int
    /// Whether the view is already dense row-major (its extent bytes are the tensor's bytes).
    let isContiguous: Bool

    /// Validates `tensor` against its storage before anything is allocated.
    /// - Throws: ``FormatError/limitExceeded(path:limit:value:maximum:)`` for a rank above
    ///   `limits.maxRank` or more than `limits.maxTotalBytes` bytes; ``FormatError/invalidTensor(path:tensor:reason:)``
    ///   for negative sizes, strides or offsets, mismatched rank, arithmetic overflow, or a view
    ///   reaching past the end of its storage.
    init(_ tensor: PickleTensor, dtype: DType, name: String, path: String, limits: ReaderLimits) throws {
        func invalid(_ reason: String) -> FormatError { .invalidTensor(path: path, tensor: name, reason: reason) }
        let shape = tensor.shape
        let strides = tensor.strides
        guard shape.count <= limits.maxRank else {
            throw FormatError.limitExceeded(path: path, limit: .rank, value: shape.count, maximum: limits.maxRank)
        }
        guard strides.count == shape.count else {
            throw invalid("size \(shape) and stride \(strides) have different ranks")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw invalid("negative size \(shape)") }
        guard strides.allSatisfy({ $0 >= 0 }) else { throw invalid("negative stride \(strides) (torch never saves one)") }
        guard tensor.storageOffset >= 0 else { throw invalid("negative storage offset \(tensor.storageOffset)") }
        var elements = 1
        for dimension in shape {
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw invalid("size \(shape) has more elements than fit in memory") }
            elements = product
        }
        let (bytes, bytesOverflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !bytesOverflow else { throw invalid("size \(shape) has more bytes than fit in memory") }
        guard bytes <= limits.maxTotalBytes else {
            throw FormatError.limitExceeded(path: path, limit: .totalBytes, value: bytes, maximum: limits.maxTotalBytes)
        }
        let storageElements = tensor.storage.elementCount
        if elements == 0 {
            guard tensor.storageOffset <= storageElements else {
                throw invalid("storage offset \(tensor.storageOffset) lies beyond storage '\(tensor.storage.key)' (\(storageElements) elements)")
            }
            extent = tensor.storageOffset..<tensor.storageOffset
        } else {
            var last = tensor.storageOffset
            for (dimension, stride) in zip(shape, strides) {
                let (step, stepOverflow) = (dimension - 1).multipliedReportingOverflow(by: stride)
                let (sum, sumOverflow) = last.addingReportingOverflow(step)
                guard !stepOverflow, !sumOverflow else { throw invalid("size \(shape) with stride \(strides) overflows") }
                last = sum
            }
            guard last < storageElements else {
                throw invalid("the view (offset \(tensor.storageOffset), size \(shape), stride \(strides)) needs \(last + 1) elements of storage '\(tensor.storage.key)', which holds \(storageElements)")
            }
            extent = tensor.storageOffset..<(last + 1)
        }
        var contiguous = true
        var expected = 1
        for (dimension, stride) in zip(shape, strides).reversed() where dimension != 1 {
            if stride != expected { contiguous = false }
            expected &*= dimension
        }
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.byteCount = bytes
        self.isContiguous = contiguous && extent.count == elements
    }

    /// The dense row-major bytes of the view, from the bytes of its extent (`extent.count × byteSize`
    /// bytes, already little-endian).
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the memory cannot be allocated
    ///   (an error, never a trap).
    func dense(fromExtent source: Data, path: String, name: String) throws -> Data {
        if isContiguous { return source }
        let width = dtype.byteSize
        guard byteCount > 0 else { return Data() }
        let pointer = try FallibleAllocation.bytes(byteCount, path: path, what: "tensor '\(name)'")
        var output = Data(bytesNoCopy: pointer, count: byteCount, deallocator: .free)
        let rank = shape.count
        output.withUnsafeMutableBytes { (target: UnsafeMutableRawBufferPointer) in
            source.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
                guard let to = target.baseAddress, let from = input.baseAddress else { return }
                if rank == 0 {
                    to.copyMemory(from: from, byteCount: width)
                    return
                }
                let inner = shape[rank - 1]
                let innerStride = strides[rank - 1]
                var index = [Int](repeating: 0, count: rank - 1)
                var written = 0
                while written < byteCount {
                    var base = 0
                    for axis in 0..<(rank - 1) { base += index[axis] * strides[axis] }
                    if innerStride == 1 {
                        (to + written).copyMemory(from: from + base * width, byteCount: inner * width)
                        written += inner * width
                    } else {
                        for element in 0..<inner {
                            (to + written).copyMemory(from: from + (base + element * innerStride) * width, byteCount: width)
                            written += width
                        }
                    }
                    var axis = rank - 2
                    while axis >= 0 {
                        index[axis] += 1
                        if index[axis] < shape[axis] { break }
                        index[axis] = 0
                        axis -= 1
                    }
                }
            }
        }
        return output
    }

    /// Reverses the bytes of every `width`-byte element (big-endian storages).
    static func byteSwapped(_ data: Data, width: Int) -> Data {
        guard width > 1 else { return data }
        var output = Data(data)
        output.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) in
            var start = 0
            while start + width <= buffer.count {
                var low = start
                var high = start + width - 1
                while low < high {
                    buffer.swapAt(low, high)
                    low += 1
                    high -= 1
                }
                start += width
            }
        }
        return output
    }
}
