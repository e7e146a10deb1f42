import Foundation

/// Everything that can go wrong loading or applying a tokenizer, with the file and component involved.
///
/// A tokenizer that cannot be reproduced exactly is an error, never a silent fallback: an unknown
/// normalizer would change the ids a model sees without anyone noticing.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadableFile(file: String, reason: String)
    /// The file is not valid JSON, or its top level is not an object; `reason` gives the position
    /// (line, column and byte offset) of the first syntax error.
    case malformedJSON(file: String, reason: String)
    /// A plain-text tokenizer file (`vocab.txt`, `merges.txt`) is not valid UTF-8 text.
    case malformedText(file: String, reason: String)
    /// A component (`model`, `normalizer`, `pre_tokenizer`, `post_processor`, ...) names a type this
    /// library does not implement.
    case unsupportedComponent(file: String, component: String, type: String)
    /// A required field is absent.
    case missingField(file: String, field: String)
    /// A field is present but has the wrong type or an impossible value.
    case invalidField(file: String, field: String, reason: String)
    /// A token the configuration relies on (unk, cls, sep, pad, a template's special token) is not in
    /// the vocabulary.
    case unknownToken(file: String, token: String, usedBy: String)
    /// The folder holds none of `tokenizer.json`, `vocab.txt`, `vocab.json` + `merges.txt`.
    case noTokenizerFiles(folder: String)
    /// Truncation cannot reach `maxLength` with the configured strategy (as HF `tokenizers` refuses too).
    case truncationImpossible(maxLength: Int, strategy: String, reason: String)

    public var description: String {
        switch self {
        case .unreadableFile(let file, let reason):
            return "cannot read tokenizer file \(file): \(reason)"
        case .malformedJSON(let file, let reason):
            return "\(file) is not a valid tokenizer JSON file: \(reason)"
        case .malformedText(let file, let reason):
            return "\(file) is not a valid tokenizer text file: \(reason); it must be UTF-8 text, one entry per line"
        case .unsupportedComponent(let file, let component, let type):
            return "\(file): \(component) of type \"\(type)\" is not supported by pkm-convert's tokenizers "
                + "(supported: BERT WordPiece and byte-level BPE pipelines); convert the tokenizer or open an issue"
        case .missingField(let file, let field):
            return "\(file): required field \(field) is missing"
        case .invalidField(let file, let field, let reason):
            return "\(file): field \(field) is invalid: \(reason)"
        case .unknownToken(let file, let token, let usedBy):
            return "\(file): token \"\(token)\" used by \(usedBy) is not in the vocabulary"
        case .noTokenizerFiles(let folder):
            return "\(folder) holds no tokenizer: expected tokenizer.json, vocab.txt (BERT) or vocab.json + merges.txt (byte-level BPE)"
        case .truncationImpossible(let maxLength, let strategy, let reason):
            return "cannot truncate to \(maxLength) tokens with strategy \(strategy): \(reason)"
        }
    }
}
