import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel

/// A setting of this library that an error's remedy names.
///
/// The library speaks of its own option fields (``OpenOptions/configURL``, ``ExportOptions/layout``…);
/// a front end spells each its own way (the `pkm-convert` CLI maps every case to the flag that sets
/// it), so messages stay as helpful as a front end's without the library knowing any front end.
public enum Setting: String, Sendable, CaseIterable, Codable {
    /// ``OpenOptions/configURL``.
    case configURL = "OpenOptions.configURL"
    /// ``OpenOptions/tokenizerURL``.
    case tokenizerURL = "OpenOptions.tokenizerURL"
    /// ``OutputOptions/format``.
    case outputFormat = "OutputOptions.format"
    /// ``ImportOptions/strict``.
    case strict = "ImportOptions.strict"
    /// The full ``MappingReport`` (every problem, not only the first dozen).
    case mappingReport = "MappingReport"
    /// ``TextOptions/maxLength``.
    case maxLength = "TextOptions.maxLength"
    /// ``TextOptions/batchSize`` and ``UsageOptions/batchSize``.
    case batchSize = "batchSize"
    /// ``InputSource/given(_:)``.
    case givenInputs = "InputSource.given"
    /// ``InputSource/random(batchSize:sequenceLength:seed:)``.
    case randomInputs = "InputSource.random"
    /// ``GraftOptions/layers``.
    case graftLayers = "GraftOptions.layers"
    /// The memory hyper-parameters of ``GraftOptions`` (`keyCount`, `headCount`, `knn`, `keyDimension`, `queryNorm`, `queryBias`).
    case graftHyperParameters = "GraftOptions.keyCount/headCount/knn/keyDimension/queryNorm/queryBias"
    /// ``ExportOptions/layout``.
    case exportLayout = "ExportOptions.layout"
    /// ``DiffOptions/tolerance``.
    case diffTolerance = "DiffOptions.tolerance"
    /// How to make a reference file: ``LoadedCheckpoint/run(_:options:loadProgress:)`` with ``RunOptions/outputURL``
    /// on seeded random inputs.
    case referenceRecipe = "LoadedCheckpoint.run(.random(batchSize: 4, sequenceLength: 24, seed: 0), options: RunOptions(outputURL: reference.h5))"
}

/// A message with references to ``Setting``s, rendered by whoever shows it.
public struct Guidance: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// One piece: plain text, or a setting with the value it suggests.
    public enum Piece: Sendable {
        case text(String)
        case setting(Setting, value: String?)
    }

    public var pieces: [Piece]

    public init(pieces: [Piece]) { self.pieces = pieces }
    public init(stringLiteral value: String) { pieces = [.text(value)] }
    public init(stringInterpolation: StringInterpolation) { pieces = stringInterpolation.pieces }

    /// Builds guidance with `\(setting: .configURL, "config.json")` interpolations.
    public struct StringInterpolation: StringInterpolationProtocol {
        var pieces: [Piece] = []
        public init(literalCapacity: Int, interpolationCount: Int) {}
        public mutating func appendLiteral(_ literal: String) { if !literal.isEmpty { pieces.append(.text(literal)) } }
        public mutating func appendInterpolation<T>(_ value: T) { pieces.append(.text("\(value)")) }
        public mutating func appendInterpolation(setting: Setting, _ value: String? = nil) { pieces.append(.setting(setting, value: value)) }
    }

    /// The text, with each setting spelled by `name` (and followed by its value, after a space).
    public func rendered(naming name: (Setting) -> String) -> String {
        pieces.map { piece in
            switch piece {
            case .text(let text): return text
            case .setting(let setting, let value): return name(setting) + (value.map { " \($0)" } ?? "")
            }
        }.joined()
    }

    /// The library's own spelling: `OpenOptions.configURL config.json`.
    public var description: String { rendered(naming: \.rawValue) }
}

/// Errors from the checkpoint operations (import, verify, run, graft, export, usage, diff).
///
/// Descriptions name this library's settings; ``rendered(naming:)`` lets a front end name its own
/// (the CLI's flags) in the same sentences.
public enum PipelineError: Error, Sendable, CustomStringConvertible {
    /// No config was found by any of the `schemas/pkm-checkpoints.md` §2 routes.
    case configNotFound(checkpoint: String, looked: [String])
    /// The config failed to decode or validate; `source` says where it came from.
    case invalidConfig(source: String, underlying: ModelError)
    /// The checkpoint does not fit the model: missing tensors, shape or dtype mismatches,
    /// names mapping to the same tensor, or (under ``ImportOptions/strict``) unexpected tensors.
    case mappingFailed(checkpoint: String, problems: [MappingProblem])
    /// The model could not be built or run.
    case model(checkpoint: String, underlying: ModelError)
    /// The reference or inputs file lacks something or holds something malformed.
    case invalidReference(path: String, reason: Guidance)
    /// A graft request is invalid.
    case invalidGraft(reason: Guidance)
    /// A setting's value is invalid (`value` as given, when it helps).
    case invalidSetting(Setting, value: String?, reason: Guidance)
    /// A file or input named by the caller is unusable (no tokenizer, text too long, no memory…).
    case unusableInput(path: String, reason: Guidance)
    /// A memory layer whose implementation pkm-convert refuses (it would run with the wrong math).
    case unsupportedMemory(layer: Int, reason: String)

    /// The message with each ``Setting`` spelled by `name`.
    public func rendered(naming name: (Setting) -> String) -> String {
        switch self {
        case .configNotFound(let checkpoint, let looked):
            let remedy: Guidance = "pass \(setting: .configURL, "config.json")"
            return "\(checkpoint): no model config found (looked at: \(looked.joined(separator: "; "))); \(remedy.rendered(naming: name))"
        case .invalidConfig(let source, let underlying):
            return "\(source): \(underlying)"
        case .mappingFailed(let checkpoint, let problems):
            let shown = problems.prefix(12).map { $0.rendered(naming: name) }.joined(separator: "; ")
            let more: Guidance = "; … (\(problems.count) problems in all; see \(setting: .mappingReport))"
            return "\(checkpoint): checkpoint does not match the model: \(shown)\(problems.count > 12 ? more.rendered(naming: name) : "")"
        case .model(let checkpoint, let underlying):
            return "\(checkpoint): \(underlying)"
        case .invalidReference(let path, let reason):
            return "\(path): \(reason.rendered(naming: name))"
        case .invalidGraft(let reason):
            return "graft: \(reason.rendered(naming: name))"
        case .invalidSetting(let setting, let value, let reason):
            return "\(name(setting))\(value.map { " \($0)" } ?? ""): \(reason.rendered(naming: name))"
        case .unusableInput(let path, let reason):
            return "\(path): \(reason.rendered(naming: name))"
        case .unsupportedMemory(let layer, let reason):
            return "memory at encoder layer \(layer): \(reason)"
        }
    }

    public var description: String { rendered(naming: \.rawValue) }
}

/// One reason a checkpoint does not fit the model (``MappingReport/problems(strict:)``).
public enum MappingProblem: Sendable, Equatable, Codable, CustomStringConvertible {
    case missing(String)
    case shapeMismatch(ShapeMismatch)
    case conflict(String)
    /// An unexpected tensor, a problem only under ``ImportOptions/strict``.
    case unexpected(String)

    /// The sentence, with ``Setting/strict`` spelled by `name`.
    public func rendered(naming name: (Setting) -> String) -> String {
        switch self {
        case .missing(let tensor): return "missing tensor '\(tensor)'"
        case .shapeMismatch(let m):
            return m.dtype.map { "tensor '\(m.name)' has dtype \($0), a floating-point weight is required" }
                ?? "tensor '\(m.name)' has shape \(m.actual), the config implies \(m.expected)"
        case .conflict(let text): return text
        case .unexpected(let tensor): return "unexpected tensor '\(tensor)' (\(name(.strict)))"
        }
    }

    public var description: String { rendered(naming: \.rawValue) }
}
