import Foundation

/// The ids a tokenizer gives one input (a text, or a pair of texts), as HF `tokenizers`' `Encoding`.
///
/// All four arrays have the same length `[sequence]`; `attentionMask` is 1 for real tokens and 0 for
/// padding (only `Tokenizer.encodeBatch` pads).
public struct Encoding: Sendable, Equatable {
    /// Token ids, special tokens included.
    public var ids: [Int] = []
    /// The vocabulary string of each id (byte-level BPE tokens in GPT-2's printable byte alphabet).
    public var tokens: [String] = []
    /// Segment ids: 0 for the first text, 1 for the second where the template says so (BERT).
    public var typeIds: [Int] = []
    /// 1 for each real token, 0 for padding.
    public var attentionMask: [Int] = []

    /// An encoding from its arrays.
    public init(ids: [Int] = [], tokens: [String] = [], typeIds: [Int] = [], attentionMask: [Int] = []) {
        self.ids = ids
        self.tokens = tokens
        self.typeIds = typeIds
        self.attentionMask = attentionMask
    }
}

/// A batch of encodings padded to the batch's longest, rows in input order.
public struct BatchEncoding: Sendable, Equatable {
    /// `[batch, sequence]` ids, padded with `Tokenizer.padTokenId`.
    public var ids: [[Int]]
    /// `[batch, sequence]`: 1 for real tokens, 0 for padding.
    public var attentionMask: [[Int]]
    /// `[batch, sequence]` segment ids, padding with the pad type id.
    public var typeIds: [[Int]]
    /// The longest row's length (every row has it).
    public var sequenceLength: Int { ids.first?.count ?? 0 }
}

/// An HF-compatible tokenizer: BERT WordPiece or byte-level BPE (GPT-2 / RoBERTa), as `tokenizer.json`
/// describes it, producing the ids HF `tokenizers` produces.
///
/// The pipeline is HF's: added tokens are split off first (those with `normalized: false` on the raw
/// text, the others after normalisation), then each remaining segment is normalised, pre-tokenized
/// and passed word by word to the model; truncation keeps room for the special tokens, and the
/// post-processor adds them.
public struct Tokenizer: Sendable {
    /// Which sequence of a pair truncation shortens (HF `truncation.strategy`).
    public enum TruncationStrategy: String, Sendable, Equatable {
        /// Remove from the longer sequence, one token at a time in effect (HF `LongestFirst`).
        case longestFirst = "LongestFirst"
        /// Remove from the first sequence only (HF `OnlyFirst`).
        case onlyFirst = "OnlyFirst"
        /// Remove from the second sequence only (HF `OnlySecond`).
        case onlySecond = "OnlySecond"
    }

    /// Which end of a sequence truncation (or padding) removes from (or adds to).
    public enum TruncationDirection: String, Sendable, Equatable {
        case right = "Right", left = "Left"
    }

    /// Truncation settings: at most `maxLength` ids per encoding, special tokens included.
    public struct Truncation: Sendable, Equatable {
        public var maxLength: Int
        public var strategy: TruncationStrategy
        public var direction: TruncationDirection

        /// Truncation to `maxLength` ids.
        public init(maxLength: Int, strategy: TruncationStrategy = .longestFirst, direction: TruncationDirection = .right) {
            self.maxLength = maxLength
            self.strategy = strategy
            self.direction = direction
        }
    }

    enum Model: Sendable {
        case wordPiece(WordPiece)
        case bytePairEncoding(BytePairEncoding)

        func encode(_ word: [Unicode.Scalar]) -> [Int] {
            switch self {
            case .wordPiece(let model): return model.encode(word)
            case .bytePairEncoding(let model): return model.encode(word)
            }
        }
    }

    /// The truncation `encode` applies when not given `maxLength` (from tokenizer.json `truncation`);
    /// `nil` means none. Settable, e.g. to a model's `max_position_embeddings`.
    public var truncation: Truncation?
    /// The id batches are padded with: tokenizer.json `padding.pad_id`, else the id of `[PAD]` or
    /// `<pad>`; `nil` when there is none (then only equal-length batches can be encoded).
    public let padTokenId: Int?
    /// The type id padding gets (tokenizer.json `padding.pad_type_id`, else 0).
    public let padTypeId: Int
    /// Which side padding goes on (tokenizer.json `padding.direction`, else right).
    public let paddingDirection: TruncationDirection
    /// How many distinct ids the tokenizer can produce (model vocabulary plus added tokens); a model's
    /// `vocab_size` must be at least the largest id + 1 (`maxTokenId + 1`).
    public let vocabSize: Int
    /// The largest id the tokenizer can produce.
    public let maxTokenId: Int
    /// The tokenizer as tokenizer.json bytes: the file as read, or (for vocab.txt / vocab.json +
    /// merges.txt folders) an equivalent tokenizer.json that `load(tokenizerJSON:)` and HF read back.
    public let serialized: Data
    /// Where the tokenizer came from (a file name), for messages.
    public let source: String

    let model: Model
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: TemplateProcessor?
    let addedTokens: AddedTokens
    let tokenStrings: [Int: String]

    /// Reads the tokenizer of a model folder: `tokenizer.json`; else `vocab.txt` (BERT WordPiece,
    /// lowercasing per `tokenizer_config.json` `do_lower_case`, default true); else `vocab.json` +
    /// `merges.txt` (byte-level BPE with RoBERTa's `<s> … </s>` template).
    /// - Throws: `TokenizerError` naming the file and the unsupported or malformed component.
    public static func load(folder: URL) throws -> Tokenizer {
        let manager = FileManager.default
        let json = folder.appendingPathComponent("tokenizer.json")
        if manager.fileExists(atPath: json.path) {
            return try load(tokenizerJSON: read(json), source: json.path)
        }
        let vocabText = folder.appendingPathComponent("vocab.txt")
        if manager.fileExists(atPath: vocabText.path) {
            let configURL = folder.appendingPathComponent("tokenizer_config.json")
            let config = manager.fileExists(atPath: configURL.path) ? try read(configURL) : nil
            return try LegacyTokenizerFiles.wordPiece(vocabulary: read(vocabText), vocabularyPath: vocabText.path,
                                                      config: config, configPath: configURL.path)
        }
        let vocabJSON = folder.appendingPathComponent("vocab.json")
        let merges = folder.appendingPathComponent("merges.txt")
        if manager.fileExists(atPath: vocabJSON.path) && manager.fileExists(atPath: merges.path) {
            return try LegacyTokenizerFiles.bytePairEncoding(vocabulary: read(vocabJSON), vocabularyPath: vocabJSON.path,
                                                             merges: read(merges), mergesPath: merges.path)
        }
        throw TokenizerError.noTokenizerFiles(folder: folder.path)
    }

    /// Parses tokenizer.json bytes (HF `tokenizers` format, version 1.0).
    /// - Parameter source: the name used in error messages.
    /// - Throws: `TokenizerError` for malformed JSON, missing fields, or a model / normalizer /
    ///   pre-tokenizer / post-processor type this library does not implement.
    public static func load(tokenizerJSON: Data, source: String = "tokenizer.json") throws -> Tokenizer {
        try TokenizerJSON.parse(tokenizerJSON, source: source)
    }

    private static func read(_ url: URL) throws -> Data {
        // stat before opening: open() of a FIFO blocks until a writer comes, a device never ends.
        var status = stat()
        if stat(url.path, &status) == 0, status.st_mode & S_IFMT != S_IFREG {
            let kind: String
            switch status.st_mode & S_IFMT {
            case S_IFDIR: kind = "a folder"
            case S_IFIFO: kind = "a FIFO (named pipe)"
            case S_IFCHR: kind = "a character device"
            case S_IFBLK: kind = "a block device"
            case S_IFSOCK: kind = "a socket"
            default: kind = "a special file"
            }
            throw TokenizerError.unreadableFile(file: url.path, reason: "it is \(kind), not a regular file (or a symbolic link to one)")
        }
        do { return try Data(contentsOf: url) } catch {
            throw TokenizerError.unreadableFile(file: url.path, reason: error.localizedDescription)
        }
    }

    /// Encodes one text, or a pair (`[CLS] A [SEP] B [SEP]` for BERT), as HF `Tokenizer.encode`.
    ///
    /// - Parameters:
    ///   - addSpecialTokens: wrap in the post-processor's special tokens (HF `add_special_tokens`).
    ///   - maxLength: truncate to this many ids (special tokens included), with the strategy of
    ///     `truncation` (longest first when none); `nil` uses `truncation` as it is.
    /// - Throws: `TokenizerError.truncationImpossible` when the strategy cannot reach the length
    ///   (`OnlyFirst` with a first sequence too short, or fewer ids than special tokens).
    public func encode(_ text: String, pair: String? = nil, addSpecialTokens: Bool = true, maxLength: Int? = nil) throws -> Encoding {
        var first = tokenize(text)
        var second = pair.map(tokenize)
        var limits = truncation
        if let maxLength { limits = Truncation(maxLength: maxLength, strategy: truncation?.strategy ?? .longestFirst,
                                               direction: truncation?.direction ?? .right) }
        if let limits {
            var effective = limits
            if addSpecialTokens, let postProcessor {
                let added = postProcessor.addedTokenCount(pair: second != nil)
                guard limits.maxLength >= added else {
                    throw TokenizerError.truncationImpossible(
                        maxLength: limits.maxLength, strategy: limits.strategy.rawValue,
                        reason: "the special tokens alone take \(added) ids")
                }
                effective.maxLength -= added
            }
            try Tokenizer.truncate(&first, &second, effective)
        }
        if addSpecialTokens, let postProcessor { return postProcessor.apply(first: first, second: second) }
        return TemplateProcessor.concatenate(first: first, second: second)
    }

    /// Encodes texts one by one (as `encode`, each with `pair` as its second sequence when given) and pads every
    /// row to the batch's longest.
    /// - Throws: as `encode`; `TokenizerError.missingField` when rows differ in length and the
    ///   tokenizer has no pad token.
    public func encodeBatch(_ texts: [String], pair: String? = nil, addSpecialTokens: Bool = true, maxLength: Int? = nil) throws -> BatchEncoding {
        let encodings = try texts.map { try encode($0, pair: pair, addSpecialTokens: addSpecialTokens, maxLength: maxLength) }
        let longest = encodings.map(\.ids.count).max() ?? 0
        var batch = BatchEncoding(ids: [], attentionMask: [], typeIds: [])
        for encoding in encodings {
            let missing = longest - encoding.ids.count
            guard missing > 0 else {
                batch.ids.append(encoding.ids)
                batch.attentionMask.append(encoding.attentionMask)
                batch.typeIds.append(encoding.typeIds)
                continue
            }
            guard let padTokenId else { throw TokenizerError.missingField(file: source, field: "padding.pad_id (no [PAD] or <pad> token)") }
            let pad = (ids: Array(repeating: padTokenId, count: missing), mask: Array(repeating: 0, count: missing),
                       types: Array(repeating: padTypeId, count: missing))
            switch paddingDirection {
            case .right:
                batch.ids.append(encoding.ids + pad.ids)
                batch.attentionMask.append(encoding.attentionMask + pad.mask)
                batch.typeIds.append(encoding.typeIds + pad.types)
            case .left:
                batch.ids.append(pad.ids + encoding.ids)
                batch.attentionMask.append(pad.mask + encoding.attentionMask)
                batch.typeIds.append(pad.types + encoding.typeIds)
            }
        }
        return batch
    }

    /// The vocabulary string of an id, if the tokenizer has it.
    public func token(forId id: Int) -> String? { tokenStrings[id] }

    /// HF `truncate_encodings`.
    static func truncate(_ first: inout TokenSequence, _ second: inout TokenSequence?, _ limits: Truncation) throws {
        let maxLength = limits.maxLength
        if maxLength == 0 {
            first.truncate(to: 0, direction: limits.direction)
            second?.truncate(to: 0, direction: limits.direction)
            return
        }
        let total = first.ids.count + (second?.ids.count ?? 0)
        guard total > maxLength else { return }
        let toRemove = total - maxLength
        switch limits.strategy {
        case .longestFirst:
            guard var other = second else {
                first.truncate(to: maxLength, direction: limits.direction)
                return
            }
            var shorter = first.ids.count, longer = other.ids.count
            let swapped = shorter > longer
            if swapped { swap(&shorter, &longer) }
            longer = shorter > maxLength ? shorter : max(shorter, maxLength - shorter)
            if shorter + longer > maxLength {
                shorter = maxLength / 2
                longer = shorter + maxLength % 2
            }
            if swapped { swap(&shorter, &longer) }
            first.truncate(to: shorter, direction: limits.direction)
            other.truncate(to: longer, direction: limits.direction)
            second = other
        case .onlyFirst, .onlySecond:
            let onFirst = limits.strategy == .onlyFirst
            guard onFirst || second != nil else {
                throw TokenizerError.truncationImpossible(maxLength: maxLength, strategy: limits.strategy.rawValue,
                                                          reason: "there is no second sequence")
            }
            let length = onFirst ? first.ids.count : (second?.ids.count ?? 0)
            guard length > toRemove else {
                throw TokenizerError.truncationImpossible(
                    maxLength: maxLength, strategy: limits.strategy.rawValue,
                    reason: "the sequence to truncate has \(length) ids but \(toRemove) must go")
            }
            if onFirst { first.truncate(to: length - toRemove, direction: limits.direction) }
            else { second?.truncate(to: length - toRemove, direction: limits.direction) }
        }
    }

    /// One text through added-token splitting, normalisation, pre-tokenization and the model.
    func tokenize(_ text: String) -> TokenSequence {
        var sequence = TokenSequence()
        for rawSegment in addedTokens.split(Array(text.unicodeScalars), normalizedTokens: false) {
            switch rawSegment {
            case .token(let id, let matched):
                sequence.ids.append(id)
                sequence.tokens.append(matched)
            case .text(let raw):
                let normalized = normalizer?.apply(raw) ?? raw
                for segment in addedTokens.split(normalized, normalizedTokens: true) {
                    switch segment {
                    case .token(let id, let matched):
                        sequence.ids.append(id)
                        sequence.tokens.append(matched)
                    case .text(let scalars):
                        guard !scalars.isEmpty else { continue }
                        let words = preTokenizer?.split(scalars) ?? [scalars]
                        for word in words where !word.isEmpty {
                            for id in model.encode(word) {
                                sequence.ids.append(id)
                                sequence.tokens.append(tokenStrings[id] ?? "")
                            }
                        }
                    }
                }
            }
        }
        return sequence
    }
}
