import PKMTensor

/// Errors from building or running a model.
public enum ModelError: Error, Sendable, CustomStringConvertible {
    /// The config is missing a field or holds an invalid value; `field` is empty when the document
    /// as a whole cannot be read (not JSON, or not a JSON object).
    case invalidConfig(field: String, reason: String)
    /// A required tensor is absent.
    case missingTensor(name: String)
    /// A tensor's shape differs from what the config implies.
    case shapeMismatch(name: String, expected: [Int], actual: [Int])
    /// A tensor holds values the model cannot use (an out-of-range slot id, a float where an integer is needed).
    case invalidTensor(name: String, reason: String)
    /// Inputs are malformed (ragged, ids out of range, …).
    case invalidInput(reason: String)

    /// The message, with control characters in names and paths escaped
    /// (``Swift/String/escapedForTerminal``): a file cannot write to the user's terminal through it.
    public var description: String { rawDescription.escapedForTerminal }

    /// The message with names exactly as the file has them.
    var rawDescription: String {
        switch self {
        case .invalidConfig(let field, let reason):
            if field.isEmpty { return "config: \(reason); a config.json is one JSON object of fields (model_type, hidden_size, …)" }
            return "config field '\(field)': \(reason)"
        case .missingTensor(let name):
            return "missing tensor '\(name)'; the checkpoint does not match its config (check the pkm layers/modes, or give the config that matches the weights)"
        case .shapeMismatch(let name, let expected, let actual):
            return "tensor '\(name)' has shape \(actual), the config implies \(expected); fix the config or the checkpoint"
        case .invalidTensor(let name, let reason):
            return "tensor '\(name)' \(reason)"
        case .invalidInput(let reason):
            return "invalid input: \(reason)"
        }
    }
}
