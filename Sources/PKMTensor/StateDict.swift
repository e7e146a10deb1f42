/// An ordered mapping from tensor names to tensors, with string metadata.
///
/// Order is the order tensors were added (the order of the source file), so a conversion
/// writes tensors in the order it read them.
public struct StateDict: Sendable {
    /// Tensor names in insertion order.
    public private(set) var names: [String] = []
    private var tensorsByName: [String: Tensor] = [:]
    /// Free-form string metadata (for example `config`, a JSON string).
    public var metadata: [String: String]

    /// An empty state dict.
    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// A state dict from ordered pairs.
    /// - Throws: ``TensorError/duplicateName(_:)`` when a name repeats.
    public init(_ pairs: [(String, Tensor)], metadata: [String: String] = [:]) throws(TensorError) {
        self.metadata = metadata
        for (name, tensor) in pairs { try insert(tensor, named: name) }
    }

    /// The number of tensors.
    public var count: Int { names.count }

    /// The tensor called `name`, if present.
    public subscript(name: String) -> Tensor? { tensorsByName[name] }

    /// Adds a new tensor at the end.
    /// - Throws: ``TensorError/duplicateName(_:)`` when the name exists.
    public mutating func insert(_ tensor: Tensor, named name: String) throws(TensorError) {
        guard tensorsByName[name] == nil else { throw .duplicateName(name) }
        names.append(name)
        tensorsByName[name] = tensor
    }

    /// Replaces a tensor in place, or appends it when new.
    public mutating func set(_ tensor: Tensor, named name: String) {
        if tensorsByName[name] == nil { names.append(name) }
        tensorsByName[name] = tensor
    }

    /// Removes a tensor; returns it when it was present.
    @discardableResult
    public mutating func remove(_ name: String) -> Tensor? {
        guard let tensor = tensorsByName.removeValue(forKey: name) else { return nil }
        names.removeAll { $0 == name }
        return tensor
    }

    /// Name–tensor pairs in order.
    public var entries: [(name: String, tensor: Tensor)] {
        names.map { ($0, tensorsByName[$0]!) }
    }

    /// Total bytes of tensor data.
    public var totalBytes: Int { tensorsByName.values.reduce(0) { $0 + $1.byteCount } }
}
