import Foundation
import PKMTensor

/// A JSON object read from a tokenizer file, with the file and key path for messages.
struct JSONObject {
    let values: [String: Any]
    let file: String
    let path: String

    init(_ values: [String: Any], file: String, path: String) {
        self.values = values
        self.file = file
        self.path = path
    }

    static func parse(_ data: Data, file: String) throws -> JSONObject {
        let value: Any
        // Foundation's parser traps past 512 levels: a crafted file is refused before it gets there.
        if let depth = JSONSyntax.depthError(in: data) { throw TokenizerError.malformedJSON(file: file, reason: "the JSON is \(depth)") }
        do { value = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            // Foundation's message has no position; find the first syntax error ourselves.
            throw TokenizerError.malformedJSON(file: file, reason: JSONSyntax.firstError(in: data) ?? error.localizedDescription)
        }
        guard let object = value as? [String: Any] else {
            throw TokenizerError.malformedJSON(file: file, reason: "the top level is not a JSON object")
        }
        return JSONObject(object, file: file, path: "")
    }

    func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The value, or nil when absent or JSON null.
    func value(_ key: String) -> Any? {
        guard let value = values[key], !(value is NSNull) else { return nil }
        return value
    }

    func string(_ key: String) throws -> String {
        guard let value = value(key) else { throw TokenizerError.missingField(file: file, field: field(key)) }
        guard let string = value as? String else { throw invalid(key, "expected a string") }
        return string
    }

    func optionalString(_ key: String) throws -> String? {
        guard value(key) != nil else { return nil }
        return try string(key)
    }

    func int(_ key: String) throws -> Int {
        guard let value = value(key) else { throw TokenizerError.missingField(file: file, field: field(key)) }
        return try JSONObject.integer(value, file: file, field: field(key))
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard value(key) != nil else { return nil }
        return try int(key)
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = value(key) else { return fallback }
        guard let bool = value as? Bool else { throw invalid(key, "expected true or false") }
        return bool
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard value(key) != nil else { return nil }
        return try bool(key, default: false)
    }

    func object(_ key: String) throws -> JSONObject? {
        guard let value = value(key) else { return nil }
        guard let object = value as? [String: Any] else { throw invalid(key, "expected an object") }
        return JSONObject(object, file: file, path: field(key))
    }

    func array(_ key: String) throws -> [Any]? {
        guard let value = value(key) else { return nil }
        guard let array = value as? [Any] else { throw invalid(key, "expected an array") }
        return array
    }

    /// The elements of an array of objects.
    func objects(_ key: String) throws -> [JSONObject]? {
        guard let array = try array(key) else { return nil }
        return try array.enumerated().map { index, element in
            guard let object = element as? [String: Any] else { throw invalid("\(key)[\(index)]", "expected an object") }
            return JSONObject(object, file: file, path: field("\(key)[\(index)]"))
        }
    }

    func invalid(_ key: String, _ reason: String) -> TokenizerError {
        .invalidField(file: file, field: field(key), reason: reason)
    }

    static func integer(_ value: Any, file: String, field: String) throws -> Int {
        if let number = value as? NSNumber, let exact = Int(exactly: number.doubleValue), exact >= 0 {
            return exact
        }
        throw TokenizerError.invalidField(file: file, field: field, reason: "expected a non-negative integer, found \(value)")
    }
}

/// Reading HF tokenizer.json (the `tokenizers` serialisation, version 1.0).
enum TokenizerJSON {
    static func parse(_ data: Data, source: String) throws -> Tokenizer {
        let root = try JSONObject.parse(data, file: source)
        guard let modelObject = try root.object("model") else { throw TokenizerError.missingField(file: source, field: "model") }
        let (model, vocabulary) = try parseModel(modelObject)
        let normalizer = try root.object("normalizer").map(parseNormalizer)
        let preTokenizer = try root.object("pre_tokenizer").map(parsePreTokenizer)
        let postProcessor = try root.object("post_processor").flatMap(parsePostProcessor)

        var addedTokens: [AddedToken] = []
        for entry in try root.objects("added_tokens") ?? [] {
            let content = try entry.string("content")
            guard !content.isEmpty else { throw entry.invalid("content", "an added token cannot be empty") }
            addedTokens.append(AddedToken(
                id: try entry.int("id"), content: Array(content.unicodeScalars), special: try entry.bool("special", default: false),
                singleWord: try entry.bool("single_word", default: false), leftStrip: try entry.bool("lstrip", default: false),
                rightStrip: try entry.bool("rstrip", default: false), normalized: try entry.bool("normalized", default: true)))
        }

        var truncation: Tokenizer.Truncation?
        if let object = try root.object("truncation") {
            let strategyName = try object.optionalString("strategy") ?? "LongestFirst"
            guard let strategy = Tokenizer.TruncationStrategy(rawValue: strategyName) else {
                throw object.invalid("strategy", "unknown truncation strategy \"\(strategyName)\"")
            }
            let directionName = try object.optionalString("direction") ?? "Right"
            guard let direction = Tokenizer.TruncationDirection(rawValue: directionName) else {
                throw object.invalid("direction", "unknown truncation direction \"\(directionName)\"")
            }
            truncation = Tokenizer.Truncation(maxLength: try object.int("max_length"), strategy: strategy, direction: direction)
        }

        var tokenStrings: [Int: String] = [:]
        for (key, id) in vocabulary { tokenStrings[id] = key.string }
        for token in addedTokens {
            var text = String()
            text.unicodeScalars.append(contentsOf: token.content)
            tokenStrings[token.id] = text
        }
        func idOf(_ token: String) -> Int? {
            addedTokens.first { $0.content.elementsEqual(token.unicodeScalars) }?.id ?? vocabulary[VocabularyKey(token)]
        }

        var padTokenId = idOf("[PAD]") ?? idOf("<pad>")
        var padTypeId = 0
        var paddingDirection = Tokenizer.TruncationDirection.right
        if let padding = try root.object("padding") {
            if let id = try padding.optionalInt("pad_id") { padTokenId = id }
            padTypeId = try padding.optionalInt("pad_type_id") ?? 0
            let directionName = try padding.optionalString("direction") ?? "Right"
            guard let direction = Tokenizer.TruncationDirection(rawValue: directionName) else {
                throw padding.invalid("direction", "unknown padding direction \"\(directionName)\"")
            }
            paddingDirection = direction
        }

        return Tokenizer(
            truncation: truncation, padTokenId: padTokenId, padTypeId: padTypeId, paddingDirection: paddingDirection,
            vocabSize: tokenStrings.count, maxTokenId: tokenStrings.keys.max() ?? 0, serialized: data, source: source,
            model: model, normalizer: normalizer, preTokenizer: preTokenizer, postProcessor: postProcessor,
            addedTokens: AddedTokens(addedTokens, normalizer: normalizer), tokenStrings: tokenStrings)
    }

    /// The vocabulary object, checked to have distinct ids.
    ///
    /// Foundation's JSON parser builds a Swift dictionary, whose keys merge canonically equivalent
    /// strings; a vocabulary that loses entries that way is reported rather than used.
    static func vocabulary(_ object: JSONObject) throws -> [VocabularyKey: Int] {
        guard let raw = object.value("vocab") else { throw TokenizerError.missingField(file: object.file, field: object.field("vocab")) }
        guard let entries = raw as? [String: Any] else { throw object.invalid("vocab", "expected an object of token → id") }
        var vocabulary: [VocabularyKey: Int] = [:]
        vocabulary.reserveCapacity(entries.count)
        var seenIds = Set<Int>()
        for (token, value) in entries {
            let id = try JSONObject.integer(value, file: object.file, field: object.field("vocab[\(token)]"))
            guard seenIds.insert(id).inserted else { throw object.invalid("vocab", "id \(id) is used by two tokens") }
            vocabulary[VocabularyKey(token)] = id
        }
        if let largest = seenIds.max(), largest + 1 != seenIds.count {
            throw object.invalid("vocab", "ids are not 0..<\(seenIds.count) (largest \(largest)); canonically equivalent tokens may have been merged")
        }
        return vocabulary
    }

    static func parseModel(_ object: JSONObject) throws -> (Tokenizer.Model, [VocabularyKey: Int]) {
        let type = try object.optionalString("type") ?? (object.value("merges") != nil ? "BPE" : "")
        let vocabulary: [VocabularyKey: Int]
        switch type {
        case "WordPiece":
            vocabulary = try self.vocabulary(object)
            let unknown = try object.string("unk_token")
            guard let unknownId = vocabulary[VocabularyKey(unknown)] else {
                throw TokenizerError.unknownToken(file: object.file, token: unknown, usedBy: object.field("unk_token"))
            }
            let model = WordPiece(vocabulary: vocabulary, unknownTokenId: unknownId,
                                  continuingSubwordPrefix: Array((try object.optionalString("continuing_subword_prefix") ?? "##").unicodeScalars),
                                  maxInputCharactersPerWord: try object.optionalInt("max_input_chars_per_word") ?? 100)
            return (.wordPiece(model), vocabulary)
        case "BPE":
            vocabulary = try self.vocabulary(object)
            if try object.bool("byte_fallback", default: false) {
                throw TokenizerError.unsupportedComponent(file: object.file, component: object.field("byte_fallback"), type: "BPE with byte_fallback")
            }
            if let dropout = object.value("dropout") as? NSNumber, dropout.doubleValue > 0 {
                throw TokenizerError.unsupportedComponent(file: object.file, component: object.field("dropout"), type: "BPE with dropout \(dropout)")
            }
            var unknownId: Int?
            if let unknown = try object.optionalString("unk_token") {
                guard let id = vocabulary[VocabularyKey(unknown)] else {
                    throw TokenizerError.unknownToken(file: object.file, token: unknown, usedBy: object.field("unk_token"))
                }
                unknownId = id
            }
            let prefix = try object.optionalString("continuing_subword_prefix") ?? ""
            let suffix = try object.optionalString("end_of_word_suffix") ?? ""
            var merges: [BytePairEncoding.MergePair: (rank: Int, merged: Int)] = [:]
            for (rank, entry) in (try object.array("merges") ?? []).enumerated() {
                let pair: [String]
                if let text = entry as? String {
                    pair = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                } else if let strings = entry as? [String] {
                    pair = strings
                } else {
                    throw object.invalid("merges[\(rank)]", "expected \"left right\" or [left, right]")
                }
                guard pair.count == 2 else { throw object.invalid("merges[\(rank)]", "expected exactly two tokens, found \(pair.count)") }
                let mergedToken = pair[0] + String(pair[1].unicodeScalars.dropFirst(prefix.unicodeScalars.count))
                guard let left = vocabulary[VocabularyKey(pair[0])], let right = vocabulary[VocabularyKey(pair[1])],
                      let merged = vocabulary[VocabularyKey(mergedToken)] else {
                    throw object.invalid("merges[\(rank)]", "merge \"\(pair[0]) \(pair[1])\" uses a token missing from the vocabulary")
                }
                let key = BytePairEncoding.MergePair(left: left, right: right)
                if merges[key] == nil { merges[key] = (rank, merged) }
            }
            let model = BytePairEncoding(vocabulary: vocabulary, merges: merges, unknownTokenId: unknownId,
                                         fuseUnknown: try object.bool("fuse_unk", default: false),
                                         continuingSubwordPrefix: prefix, endOfWordSuffix: suffix,
                                         ignoreMerges: try object.bool("ignore_merges", default: false))
            return (.bytePairEncoding(model), vocabulary)
        case "":
            throw TokenizerError.missingField(file: object.file, field: object.field("type"))
        default:
            throw TokenizerError.unsupportedComponent(file: object.file, component: object.path, type: type)
        }
    }

    static func parseNormalizer(_ object: JSONObject) throws -> Normalizer {
        let type = try object.string("type")
        switch type {
        case "BertNormalizer":
            return .bert(BertNormalizer(cleanText: try object.bool("clean_text", default: true),
                                        handleChineseCharacters: try object.bool("handle_chinese_chars", default: true),
                                        stripAccents: try object.optionalBool("strip_accents"),
                                        lowercase: try object.bool("lowercase", default: true)))
        case "NFC", "NFD", "NFKC", "NFKD":
            return .unicode(UnicodeForm(rawValue: type) ?? .nfc)
        case "Lowercase":
            return .lowercase
        case "StripAccents":
            return .stripAccents
        case "Sequence":
            guard let steps = try object.objects("normalizers") else {
                throw TokenizerError.missingField(file: object.file, field: object.field("normalizers"))
            }
            return .sequence(try steps.map(parseNormalizer))
        default:
            throw TokenizerError.unsupportedComponent(file: object.file, component: object.path, type: type)
        }
    }

    static func parsePreTokenizer(_ object: JSONObject) throws -> PreTokenizer {
        let type = try object.string("type")
        switch type {
        case "BertPreTokenizer":
            return .bert
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: try object.bool("add_prefix_space", default: true),
                              useRegex: try object.bool("use_regex", default: true))
        case "WhitespaceSplit":
            return .whitespaceSplit
        case "Sequence":
            guard let steps = try object.objects("pretokenizers") else {
                throw TokenizerError.missingField(file: object.file, field: object.field("pretokenizers"))
            }
            return .sequence(try steps.map(parsePreTokenizer))
        default:
            throw TokenizerError.unsupportedComponent(file: object.file, component: object.path, type: type)
        }
    }

    /// The template, or nil for processors that add no tokens (`ByteLevel` only trims offsets).
    static func parsePostProcessor(_ object: JSONObject) throws -> TemplateProcessor? {
        let type = try object.string("type")
        switch type {
        case "TemplateProcessing":
            return try parseTemplate(object)
        case "BertProcessing", "RobertaProcessing":
            let cls = try tokenAndId(object, "cls"), sep = try tokenAndId(object, "sep")
            return type == "BertProcessing" ? .bert(cls: cls, sep: sep) : .roberta(cls: cls, sep: sep)
        case "ByteLevel":
            return nil
        case "Sequence":
            let templates = try (object.objects("processors") ?? []).compactMap(parsePostProcessor)
            guard templates.count <= 1 else {
                throw TokenizerError.unsupportedComponent(file: object.file, component: object.path, type: "Sequence of several token-adding processors")
            }
            return templates.first
        default:
            throw TokenizerError.unsupportedComponent(file: object.file, component: object.path, type: type)
        }
    }

    private static func tokenAndId(_ object: JSONObject, _ key: String) throws -> (String, Int) {
        guard let pair = try object.array(key), pair.count == 2, let token = pair[0] as? String else {
            throw object.invalid(key, "expected [token, id]")
        }
        return (token, try JSONObject.integer(pair[1], file: object.file, field: object.field(key)))
    }

    private static func parseTemplate(_ object: JSONObject) throws -> TemplateProcessor {
        var specials: [String: (ids: [Int], tokens: [String])] = [:]
        if let table = try object.object("special_tokens") {
            for key in table.values.keys {
                guard let entry = try table.object(key) else { continue }
                let ids = try (entry.array("ids") ?? []).map { try JSONObject.integer($0, file: object.file, field: entry.field("ids")) }
                guard let tokens = try entry.array("tokens") as? [String], tokens.count == ids.count else {
                    throw entry.invalid("tokens", "expected as many token strings as ids")
                }
                specials[key] = (ids, tokens)
            }
        }
        func pieces(_ key: String) throws -> [TemplateProcessor.Piece] {
            guard let list = try object.objects(key) else { throw TokenizerError.missingField(file: object.file, field: object.field(key)) }
            return try list.map { piece in
                if let special = try piece.object("SpecialToken") {
                    let id = try special.string("id")
                    guard let entry = specials[id] else {
                        throw TokenizerError.unknownToken(file: object.file, token: id, usedBy: special.path + " (not in special_tokens)")
                    }
                    return .special(ids: entry.ids, tokens: entry.tokens, typeId: try special.optionalInt("type_id") ?? 0)
                }
                if let sequence = try piece.object("Sequence") {
                    let id = try sequence.string("id")
                    guard id == "A" || id == "B" else { throw sequence.invalid("id", "expected A or B, found \(id)") }
                    return .sequence(second: id == "B", typeId: try sequence.optionalInt("type_id") ?? 0)
                }
                throw TokenizerError.unsupportedComponent(file: object.file, component: piece.path,
                                                          type: piece.values.keys.sorted().joined(separator: ","))
            }
        }
        return TemplateProcessor(single: try pieces("single"), pair: try pieces("pair"))
    }
}
