import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// Any JSON value, for emitting embedded JSON text as JSON.
public indirect enum JSONValue: Sendable, Codable, Equatable {
    case null, bool(Bool), number(Double), integer(Int), string(String), array([JSONValue]), object([String: JSONValue])

    /// The value of `text` when it is a JSON object (or array), else nil.
    public init?(objectText text: String) {
        let trimmed = text.drop { $0.isWhitespace }
        guard trimmed.first == "{" || trimmed.first == "[", JSONSyntax.depthExceeded(in: Data(text.utf8)) == nil,
              let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return nil }
        self = value
    }

    /// The text form: a string's own text, anything else as compact JSON.
    public var text: String {
        if case .string(let string) = self { return string }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
