import Foundation
import PKMTensor

/// Fetches tensors by canonical name, checks shapes, and widens them to float32.
struct WeightLoader {
    let lookup: (String) -> Tensor?

    func floats(_ name: String, _ shape: [Int]) throws -> [Float] {
        try tensor(name, shape).floatValues()
    }

    /// The tensor's values as float32, without a copy when they already are float32 (a value
    /// table read from a mapped file then stays in the page cache instead of the heap).
    func floatStorage(_ name: String, _ shape: [Int]) throws -> FloatStorage {
        FloatStorage(try tensor(name, shape))
    }

    /// An integer tensor's values as int64 (`head_permutations`).
    /// - Throws: ``ModelError/invalidTensor(name:reason:)`` for a floating-point tensor.
    func int64s(_ name: String, _ shape: [Int]) throws -> [Int64] {
        let tensor = try tensor(name, shape)
        guard !tensor.dtype.isFloatingPoint else {
            throw ModelError.invalidTensor(name: name, reason: "has dtype \(tensor.dtype), an integer buffer is required")
        }
        return tensor.int64Values()
    }

    func optionalFloats(_ name: String, _ shape: [Int]) throws -> [Float]? {
        guard lookup(name) != nil else { return nil }
        return try floats(name, shape)
    }

    private func tensor(_ name: String, _ shape: [Int]) throws -> Tensor {
        guard let tensor = lookup(name) else { throw ModelError.missingTensor(name: name) }
        guard tensor.shape == shape else { throw ModelError.shapeMismatch(name: name, expected: shape, actual: tensor.shape) }
        return tensor
    }
}

/// Float32 values held either as the tensor's own bytes (float32 storage whose address is
/// 4-byte aligned, e.g. a slice of a mapped safetensors file: no copy, and pages are read only
/// when touched) or as a widened copy (float16, bfloat16, float64, or misaligned bytes).
struct FloatStorage: Sendable {
    private enum Backing: Sendable {
        case bytes(Data)
        case copy([Float])
    }
    private let backing: Backing
    /// Number of floats.
    let count: Int

    init(_ tensor: Tensor) {
        count = tensor.elementCount
        let aligned = tensor.storage.withUnsafeBytes { Int(bitPattern: $0.baseAddress) % MemoryLayout<Float>.alignment == 0 }
        if tensor.dtype == .float32, aligned, UInt32(1).littleEndian == 1 {
            backing = .bytes(tensor.storage)
        } else {
            backing = .copy(tensor.floatValues())
        }
    }

    /// Runs `body` with the values; the pointer must not escape it.
    func withFloats<Result>(_ body: (UnsafeBufferPointer<Float>) throws -> Result) rethrows -> Result {
        switch backing {
        case .copy(let values):
            return try values.withUnsafeBufferPointer(body)
        case .bytes(let data):
            return try data.withUnsafeBytes { raw in
                // Float is a trivial type and the address was checked to be aligned at init.
                try body(raw.bindMemory(to: Float.self))
            }
        }
    }
}
