import Foundation
import PKMFormats
import PKMModel
import PKMTokenizers

/// Where a checkpoint's tokenizer comes from, and turning text into model inputs.
///
/// Lookup order (as for the config, spec §2): an explicit `--tokenizer` path (a `tokenizer.json`
/// file, or a folder with `tokenizer.json`, `vocab.txt` or `vocab.json` + `merges.txt`); the
/// checkpoint's own copy (metadata key ``metadataKey``: import, graft and convert carry it, so a
/// pkmz alone can run text); the tokenizer files beside the checkpoint.
public enum TextInputs {
    /// The checkpoint metadata key holding the tokenizer as tokenizer.json text.
    public static let metadataKey = "tokenizer"

    /// The tokenizer for a checkpoint, and a description of where it came from.
    /// - Throws: ``PipelineError/invalidArgument(name:reason:)`` when none is found; the tokenizer's
    ///   own error (naming the file and the unsupported component) when one is malformed.
    public static func tokenizer(for checkpoint: URL, reader: any CheckpointReader, explicit: URL? = nil,
                                 maxBytes: Int = ReaderLimits().maxHeaderBytes) throws -> (Tokenizer, String) {
        if let explicit {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: explicit.path, isDirectory: &isDirectory) else {
                throw FormatError.fileNotFound(path: explicit.path)
            }
            if isDirectory.boolValue { return (try Tokenizer.load(folder: explicit), explicit.path) }
            guard let data = try ResolvedCheckpoint.readConfigFile(explicit, maxBytes: maxBytes) else { throw FormatError.fileNotFound(path: explicit.path) }
            return (try Tokenizer.load(tokenizerJSON: data, source: explicit.path), explicit.path)
        }
        if let carried = reader.metadata[metadataKey] {
            return (try Tokenizer.load(tokenizerJSON: Data(carried.utf8), source: "\(reader.url.path) (its tokenizer)"),
                    "\(reader.url.lastPathComponent) (carried in the file)")
        }
        let folder = modelFolder(of: checkpoint)
        do {
            return (try Tokenizer.load(folder: folder), folder.path)
        } catch TokenizerError.noTokenizerFiles {
            throw PipelineError.invalidArgument(name: checkpoint.path, reason:
                "no tokenizer: the file carries none and \(folder.path) has no tokenizer.json, vocab.txt or vocab.json + merges.txt; pass --tokenizer PATH")
        }
    }

    /// The tokenizer.json text to carry into a checkpoint written from `source`: the source's own
    /// copy, else the tokenizer files beside it (vocab.txt / vocab.json folders are carried as the
    /// equivalent tokenizer.json); nil when there are none or they do not parse (carrying is best effort).
    public static func carriedTokenizer(for source: URL, reader: any CheckpointReader) -> String? {
        if let carried = reader.metadata[metadataKey] { return carried }
        guard let tokenizer = try? Tokenizer.load(folder: modelFolder(of: source)) else { return nil }
        return String(data: tokenizer.serialized, encoding: .utf8)
    }

    /// The folder a checkpoint's side files (config.json, tokenizer files) live in.
    static func modelFolder(of checkpoint: URL) -> URL {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: checkpoint.path, isDirectory: &isDirectory)
        return isDirectory.boolValue ? checkpoint : checkpoint.deletingLastPathComponent()
    }

    /// Tokenizes `texts` into one batch padded to its longest sequence (or to `padTo` when larger),
    /// truncated to `maxLength` (default: the tokenizer's truncation, else the model's position count).
    /// - Throws: ``PipelineError/invalidArgument(name:reason:)`` for an empty batch, a sequence longer than
    ///   the model's `max_position_embeddings`, ids beyond its vocabulary (a tokenizer of another model).
    public static func encode(_ texts: [String], tokenizer: Tokenizer, config: ModelConfig, maxLength: Int? = nil,
                              padTo: Int? = nil) throws -> ModelInputs {
        guard !texts.isEmpty else { throw PipelineError.invalidArgument(name: "text", reason: "no non-empty lines to run") }
        let positions = config.maxPositionEmbeddings - (config.modelType == .roberta ? config.padTokenId + 1 : 0)
        let limit = maxLength ?? (tokenizer.truncation == nil ? positions : nil)
        var batch = try tokenizer.encodeBatch(texts, maxLength: limit)
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
            throw PipelineError.invalidArgument(name: "text", reason:
                "a sequence of \(length) tokens exceeds the model's \(positions) positions (max_position_embeddings \(config.maxPositionEmbeddings)); pass --max-length \(positions)")
        }
        if let maximum = batch.ids.joined().max(), maximum >= config.vocabSize {
            throw PipelineError.invalidArgument(name: tokenizer.source, reason:
                "the tokenizer produces id \(maximum) but the model's vocabulary has \(config.vocabSize) entries: it is another model's tokenizer")
        }
        return try ModelInputs(batchSize: texts.count, sequenceLength: length, inputIds: Array(batch.ids.joined()),
                               attentionMask: Array(batch.attentionMask.joined()), tokenTypeIds: Array(batch.typeIds.joined()))
    }
}
