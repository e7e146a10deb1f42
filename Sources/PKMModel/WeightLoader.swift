import PKMTensor

/// Fetches tensors by canonical name, checks shapes, and widens them to float32.
struct WeightLoader {
    let lookup: (String) -> Tensor?

    func floats(_ name: String, _ shape: [Int]) throws -> [Float] {
        guard let tensor = lookup(name) else { throw ModelError.missingTensor(name: name) }
        guard tensor.shape == shape else { throw ModelError.shapeMismatch(name: name, expected: shape, actual: tensor.shape) }
        return tensor.floatValues()
    }

    func optionalFloats(_ name: String, _ shape: [Int]) throws -> [Float]? {
        guard lookup(name) != nil else { return nil }
        return try floats(name, shape)
    }
}
