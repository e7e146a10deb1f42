import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel

/// Errors from the conversion pipelines (import, verify, run, graft, usage).
public enum PipelineError: Error, Sendable, CustomStringConvertible {
    /// No config was found by any of the spec §2 routes.
    case configNotFound(checkpoint: String, looked: [String])
    /// The config failed to decode or validate; `source` says where it came from.
    case invalidConfig(source: String, underlying: ModelError)
    /// The checkpoint does not fit the model: missing tensors, shape or dtype mismatches,
    /// names mapping to the same tensor, or (under `--strict`) unexpected tensors.
    case mappingFailed(checkpoint: String, problems: [String])
    /// The model could not be built or run.
    case model(checkpoint: String, underlying: ModelError)
    /// The reference or inputs file lacks something or holds something malformed.
    case invalidReference(path: String, reason: String)
    /// A graft request is invalid.
    case invalidGraft(reason: String)
    /// An argument is invalid.
    case invalidArgument(name: String, reason: String)
    /// A memory layer whose implementation pkm-convert refuses (it would run with the wrong math).
    case unsupportedMemory(layer: Int, reason: String)

    public var description: String {
        switch self {
        case .configNotFound(let checkpoint, let looked):
            return "\(checkpoint): no model config found (looked at: \(looked.joined(separator: "; "))); pass --config config.json"
        case .invalidConfig(let source, let underlying):
            return "\(source): \(underlying)"
        case .mappingFailed(let checkpoint, let problems):
            let shown = problems.prefix(12).joined(separator: "; ")
            return "\(checkpoint): checkpoint does not match the model: \(shown)\(problems.count > 12 ? "; … (\(problems.count) problems in all; see --json)" : "")"
        case .model(let checkpoint, let underlying):
            return "\(checkpoint): \(underlying)"
        case .invalidReference(let path, let reason):
            return "\(path): \(reason)"
        case .invalidGraft(let reason):
            return "graft: \(reason)"
        case .invalidArgument(let name, let reason):
            return "\(name): \(reason)"
        case .unsupportedMemory(let layer, let reason):
            return "memory at encoder layer \(layer): \(reason)"
        }
    }
}
