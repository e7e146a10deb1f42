import Foundation
import PKMTensor

/// Tokenizers from the older two-file layouts, turned into the tokenizer.json HF's converters
/// (`transformers.convert_slow_tokenizer`) would write, then read like any tokenizer.json.
///
/// Going through tokenizer.json keeps one code path and gives `Tokenizer.serialized` for free.
enum LegacyTokenizerFiles {
    /// `vocab.txt` (one token per line, id = line number) as BERT WordPiece; `tokenizer_config.json`
    /// may set `do_lower_case` (default true), `strip_accents`, `tokenize_chinese_chars` and the
    /// special token strings.
    static func wordPiece(vocabulary: Data, vocabularyPath: String, config: Data?, configPath: String) throws -> Tokenizer {
        let tokens = try lines(vocabulary, file: vocabularyPath)
        var settings = JSONObject([:], file: configPath, path: "")
        if let config { settings = try JSONObject.parse(config, file: configPath) }
        let lowercase = try settings.bool("do_lower_case", default: true)
        let stripAccents = try settings.optionalBool("strip_accents")
        let chinese = try settings.bool("tokenize_chinese_chars", default: true)
        func special(_ key: String, _ fallback: String) throws -> String {
            if let entry = try? settings.object(key), let content = try entry.optionalString("content") { return content }
            return try settings.optionalString(key) ?? fallback
        }
        let unk = try special("unk_token", "[UNK]"), cls = try special("cls_token", "[CLS]"), sep = try special("sep_token", "[SEP]")
        let pad = try special("pad_token", "[PAD]"), mask = try special("mask_token", "[MASK]")
        let ids = try index(tokens, file: vocabularyPath)
        for (token, role) in [(unk, "unk_token"), (cls, "cls_token"), (sep, "sep_token")] where ids[VocabularyKey(token)] == nil {
            throw TokenizerError.unknownToken(file: vocabularyPath, token: token, usedBy: role)
        }
        let added = [pad, unk, cls, sep, mask].compactMap { token in ids[VocabularyKey(token)].map { (token, $0, false) } }
        let template = """
            {"type":"TemplateProcessing",\
            "single":[{"SpecialToken":{"id":\(quote(cls)),"type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":\(quote(sep)),"type_id":0}}],\
            "pair":[{"SpecialToken":{"id":\(quote(cls)),"type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":\(quote(sep)),"type_id":0}},\
            {"Sequence":{"id":"B","type_id":1}},{"SpecialToken":{"id":\(quote(sep)),"type_id":1}}],\
            "special_tokens":{\(quote(cls)):{"id":\(quote(cls)),"ids":[\(ids[VocabularyKey(cls)] ?? 0)],"tokens":[\(quote(cls))]},\
            \(quote(sep)):{"id":\(quote(sep)),"ids":[\(ids[VocabularyKey(sep)] ?? 0)],"tokens":[\(quote(sep))]}}}
            """
        let json = """
            {"version":"1.0","truncation":null,"padding":null,"added_tokens":\(addedTokens(added)),\
            "normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":\(chinese),\
            "strip_accents":\(stripAccents.map(String.init) ?? "null"),"lowercase":\(lowercase)},\
            "pre_tokenizer":{"type":"BertPreTokenizer"},"post_processor":\(template),\
            "decoder":{"type":"WordPiece","prefix":"##","cleanup":true},\
            "model":{"type":"WordPiece","unk_token":\(quote(unk)),"continuing_subword_prefix":"##","max_input_chars_per_word":100,\
            "vocab":\(vocabularyObject(tokens))}}
            """
        return try TokenizerJSON.parse(Data(json.utf8), source: vocabularyPath)
    }

    /// `vocab.json` + `merges.txt` as RoBERTa's byte-level BPE: no prefix space, `<s> … </s>`, the
    /// tokens `<s> <pad> </s> <unk> <mask>` special where the vocabulary has them (`<mask>` with
    /// `lstrip`, as RoBERTa declares it).
    static func bytePairEncoding(vocabulary: Data, vocabularyPath: String, merges: Data, mergesPath: String) throws -> Tokenizer {
        let vocabularyFile = try JSONObject.parse(vocabulary, file: vocabularyPath)
        let ids = try TokenizerJSON.vocabulary(JSONObject(["vocab": vocabularyFile.values], file: vocabularyPath, path: ""))
        var mergeLines = try lines(merges, file: mergesPath)
        if mergeLines.first?.hasPrefix("#version") == true { mergeLines.removeFirst() }
        mergeLines.removeAll { $0.isEmpty }
        guard let cls = ids[VocabularyKey("<s>")], let sep = ids[VocabularyKey("</s>")] else {
            throw TokenizerError.unknownToken(file: vocabularyPath, token: "<s> / </s>", usedBy: "RobertaProcessing")
        }
        let added = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"].compactMap { token in
            ids[VocabularyKey(token)].map { (token, $0, token == "<mask>") }
        }
        let ordered = ids.sorted { $0.value < $1.value }.map { $0.key.string }
        let mergesJSON = "[" + mergeLines.map(quote).joined(separator: ",") + "]"
        let json = """
            {"version":"1.0","truncation":null,"padding":null,"added_tokens":\(addedTokens(added)),"normalizer":null,\
            "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},\
            "post_processor":{"type":"RobertaProcessing","sep":["</s>",\(sep)],"cls":["<s>",\(cls)],"trim_offsets":true,"add_prefix_space":false},\
            "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},\
            "model":{"type":"BPE","dropout":null,"unk_token":\(ids[VocabularyKey("<unk>")] != nil ? "\"<unk>\"" : "null"),\
            "continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,\
            "vocab":\(vocabularyObject(ordered)),"merges":\(mergesJSON)}}
            """
        return try TokenizerJSON.parse(Data(json.utf8), source: vocabularyPath)
    }

    /// UTF-8 lines without their `\n` / `\r\n`; a final empty line (the file's last newline) dropped.
    private static func lines(_ data: Data, file: String) throws -> [String] {
        guard let text = String(data: data, encoding: .utf8) else {
            let valid = JSONSyntax.validUTF8Prefix(data)
            throw TokenizerError.malformedText(file: file, reason: "the bytes at \(JSONSyntax.position(ofOffset: valid, in: data)) are not UTF-8")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    private static func index(_ tokens: [String], file: String) throws -> [VocabularyKey: Int] {
        var ids: [VocabularyKey: Int] = [:]
        for (line, token) in tokens.enumerated() {
            guard ids.updateValue(line, forKey: VocabularyKey(token)) == nil else {
                throw TokenizerError.invalidField(file: file, field: "line \(line + 1)", reason: "token \"\(token)\" appears twice")
            }
        }
        return ids
    }

    private static func vocabularyObject(_ tokensInIdOrder: [String]) -> String {
        "{" + tokensInIdOrder.enumerated().map { "\(quote($0.element)):\($0.offset)" }.joined(separator: ",") + "}"
    }

    private static func addedTokens(_ tokens: [(String, Int, Bool)]) -> String {
        "[" + tokens.sorted { $0.1 < $1.1 }.map { token, id, leftStrip in
            "{\"id\":\(id),\"content\":\(quote(token)),\"single_word\":false,\"lstrip\":\(leftStrip),\"rstrip\":false,\"normalized\":false,\"special\":true}"
        }.joined(separator: ",") + "]"
    }

    /// A JSON string literal (quotes, backslashes and control characters escaped).
    static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 {
                    result += String(format: "\\u%04x", scalar.value)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }
}
