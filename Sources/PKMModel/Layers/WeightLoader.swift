import Foundation
import PKMTensor

/// Fetches the tensors a layer's parameter table declares, checks their shapes, and widens them
/// to float32. Loading goes only through ``ParameterSpec``s, so what a layer loads is exactly what
/// its `parameterSpecs` list names.
struct WeightLoader {
    let lookup: (String) -> Tensor?

    /// `spec`'s tensor as float32.
    /// - Throws: ``ModelError/missingTensor(name:)`` or ``ModelError/shapeMismatch(name:expected:actual:)`` naming `spec.name`.
    func floats(_ spec: ParameterSpec) throws -> [Float] {
        try tensor(spec).floatValues()
    }

    /// `spec`'s tensor as float32, without a copy when it already is float32 (a value table read
    /// from a mapped file then stays in the page cache instead of the heap).
    func floatStorage(_ spec: ParameterSpec) throws -> FloatStorage {
        FloatStorage(try tensor(spec))
    }

    /// `spec`'s integer tensor as int64 (`head_permutations`).
    /// - Throws: ``ModelError/invalidTensor(name:reason:)`` for a floating-point tensor.
    func int64s(_ spec: ParameterSpec) throws -> [Int64] {
        let tensor = try tensor(spec)
        guard !tensor.dtype.isFloatingPoint else {
            throw ModelError.invalidTensor(name: spec.name, reason: "has dtype \(tensor.dtype), an integer buffer is required")
        }
        return tensor.int64Values()
    }

    /// `spec`'s tensor as float32, or nil when the checkpoint lacks it (an optional tensor).
    func optionalFloats(_ spec: ParameterSpec) throws -> [Float]? {
        guard lookup(spec.name) != nil else { return nil }
        return try floats(spec)
    }

    /// A module's weight and bias.
    func affine(_ parameters: AffineParameters) throws -> (weight: [Float], bias: [Float]) {
        (try floats(parameters.weight), try floats(parameters.bias))
    }

    /// A module's weight and bias when `parameters` is given (a module the config enables), else nils.
    func affine(_ parameters: AffineParameters?) throws -> (weight: [Float]?, bias: [Float]?) {
        guard let parameters else { return (nil, nil) }
        return (try floats(parameters.weight), try floats(parameters.bias))
    }

    private func tensor(_ spec: ParameterSpec) throws -> Tensor {
        guard let tensor = lookup(spec.name) else { throw ModelError.missingTensor(name: spec.name) }
        guard tensor.shape == spec.shape else {
            throw ModelError.shapeMismatch(name: spec.name, expected: spec.shape, actual: tensor.shape)
        }
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
