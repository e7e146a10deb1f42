import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTokenizers

/// Where a checkpoint's tokenizer comes from, and turning text into model inputs.
///
/// Lookup order (as for the config, `schemas/pkm-checkpoints.md` §2): an explicit ``OpenOptions/tokenizerURL`` (a `tokenizer.json`
/// file, or a folder with `tokenizer.json`, `vocab.txt` or `vocab.json` + `merges.txt`); the
/// checkpoint's own copy (metadata key ``metadataKey``: import, graft and convert carry it, so a
/// pkmz alone can run text); the tokenizer files beside the checkpoint.
public enum TextInputs {
    /// The checkpoint metadata key holding the tokenizer as tokenizer.json text.
    public static let metadataKey = "tokenizer"

    /// The tokenizer for a checkpoint, and a description of where it came from (see the lookup order above).
    /// - Throws: ``PipelineError/unusableInput(path:reason:)`` when none is found; the tokenizer's
    ///   own error (naming the file and the unsupported component) when one is malformed.
    static func tokenizer(for checkpoint: LoadedCheckpoint) throws -> (Tokenizer, String) {
        if let explicit = checkpoint.options.tokenizerURL {
            return try load(explicit, maxBytes: checkpoint.options.limits.maxHeaderBytes)
        }
        let reader = checkpoint.reader
        if let carried = reader.metadata[metadataKey] {
            return (try Tokenizer.load(tokenizerJSON: Data(carried.utf8), source: "\(reader.url.path) (its tokenizer)"),
                    "\(reader.url.lastPathComponent) (carried in the file)")
        }
        let folder = checkpoint.folder.url
        do {
            return (try Tokenizer.load(folder: folder), folder.path)
        } catch TokenizerError.noTokenizerFiles {
            throw PipelineError.unusableInput(path: checkpoint.url.path, reason:
                "no tokenizer: the file carries none and \(folder.path) has no tokenizer.json, vocab.txt or vocab.json + merges.txt; pass \(setting: .tokenizerURL, "PATH")")
        }
    }

    /// A tokenizer from a `tokenizer.json` file or a folder of tokenizer files, and its path.
    /// - Throws: ``FormatError/fileNotFound(path:)``; the tokenizer's own errors.
    public static func load(_ url: URL, maxBytes: Int = ReaderLimits().maxHeaderBytes) throws -> (Tokenizer, String) {
        guard FileManager.default.fileExists(atPath: url.path) else { throw FormatError.fileNotFound(path: url.path) }
        if ModelFolder.isFolder(url) { return (try Tokenizer.load(folder: url), url.path) }
        guard let data = try ResolvedCheckpoint.readConfigFile(url, maxBytes: maxBytes, what: "a tokenizer file") else { throw FormatError.fileNotFound(path: url.path) }
        return (try Tokenizer.load(tokenizerJSON: data, source: url.path), url.path)
    }

    /// The tokenizer a `tokenize` of `location` uses: ``OpenOptions/tokenizerURL``; else the checkpoint's (carried, or
    /// beside it) when `location` opens as one; else the tokenizer files of `location` as a folder.
    /// - Throws: as ``load(_:maxBytes:)`` and ``LoadedCheckpoint/tokenizer()``.
    public static func tokenizer(at location: URL, options: OpenOptions = OpenOptions()) throws -> (Tokenizer, String) {
        if let explicit = options.tokenizerURL { return try load(explicit, maxBytes: options.limits.maxHeaderBytes) }
        if let checkpoint = try? LoadedCheckpoint(location, options: options) { return try checkpoint.tokenizer() }
        return (try Tokenizer.load(folder: location), location.path)
    }

    /// The tokenizer.json text to carry into a checkpoint written from `source`: the source's own
    /// copy, else the tokenizer files beside it (vocab.txt / vocab.json folders are carried as the
    /// equivalent tokenizer.json); nil when there are none or they do not parse (carrying is best effort).
    static func carriedTokenizer(for source: LoadedCheckpoint) -> String? {
        if let carried = source.reader.metadata[metadataKey] { return carried }
        guard let tokenizer = try? Tokenizer.load(folder: source.folder.url) else { return nil }
        return String(data: tokenizer.serialized, encoding: .utf8)
    }

    /// Tokenizes `texts` into one batch padded to its longest sequence (or to `padTo` when larger),
    /// truncated to `maxLength` (default: the tokenizer's truncation, else the model's position count).
    /// - Throws: ``PipelineError/unusableInput(path:reason:)`` for an empty batch, a sequence longer than
    ///   the model's `max_position_embeddings`, ids beyond its vocabulary (a tokenizer of another model).
    public static func encode(_ texts: [String], pair: String? = nil, tokenizer: Tokenizer, config: ModelConfig, maxLength: Int? = nil,
                              padTo: Int? = nil) throws -> ModelInputs {
        guard !texts.isEmpty else { throw PipelineError.unusableInput(path: "text", reason: "no non-empty lines to run") }
        let positions = config.maxPositionEmbeddings - (config.modelType == .roberta ? config.padTokenId + 1 : 0)
        let limit = maxLength ?? (tokenizer.truncation == nil ? positions : nil)
        var batch = try tokenizer.encodeBatch(texts, pair: pair, maxLength: limit)
        var length = batch.sequenceLength
        if let padTo, padTo > length {
            let pad = tokenizer.padTokenId ?? config.padTokenId
            for row in batch.ids.indices {
                batch.ids[row] += Array(repeating: pad, count: padTo - length)
                batch.attentionMask[row] += Array(repeating: 0, count: padTo - length)
                batch.typeIds[row] += Array(repeating: tokenizer.padTypeId, count: padTo - length)
            }
            length = padTo
        }
        guard length <= positions else {
            throw PipelineError.unusableInput(path: "text", reason:
                "a sequence of \(length) tokens exceeds the model's \(positions) positions (max_position_embeddings \(config.maxPositionEmbeddings)); pass \(setting: .maxLength, String(positions))")
        }
        if let maximum = batch.ids.joined().max(), maximum >= config.vocabSize {
            throw PipelineError.unusableInput(path: tokenizer.source, reason:
                "the tokenizer produces id \(maximum) but the model's vocabulary has \(config.vocabSize) entries: it is another model's tokenizer")
        }
        return try ModelInputs(batchSize: texts.count, sequenceLength: length, inputIds: Array(batch.ids.joined()),
                               attentionMask: Array(batch.attentionMask.joined()), tokenTypeIds: Array(batch.typeIds.joined()))
    }
}
