/// HF's `BertPreTokenizer`: split on whitespace (dropped), then isolate every punctuation character.
///
/// Input is the normalised text of one segment between added tokens; output its words.
enum BertPreTokenizer {
    static func split(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for scalar in scalars {
            if CharacterClass.isWhitespace(scalar) {
                if !current.isEmpty { words.append(current); current = [] }
            } else if CharacterClass.isPunctuation(scalar) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([scalar])
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }
}

/// One `pre_tokenizer` of a tokenizer.json: turns a normalised segment into words for the model.
indirect enum PreTokenizer: Sendable, Equatable {
    case bert
    /// Byte-level (GPT-2 / RoBERTa): optional prefix space, the GPT-2 split pattern, bytes mapped to
    /// printable characters.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// HF's `WhitespaceSplit`: split on whitespace only.
    case whitespaceSplit
    case sequence([PreTokenizer])

    func split(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        split(words: [scalars])
    }

    private func split(words: [[Unicode.Scalar]]) -> [[Unicode.Scalar]] {
        switch self {
        case .bert:
            return words.flatMap(BertPreTokenizer.split)
        case .whitespaceSplit:
            return words.flatMap { word in
                word.split(whereSeparator: CharacterClass.isWhitespace).map(Array.init)
            }
        case .byteLevel(let addPrefixSpace, let useRegex):
            return words.flatMap { word -> [[Unicode.Scalar]] in
                var text = word
                if addPrefixSpace && text.first != " " { text.insert(" ", at: 0) }
                let pieces = useRegex ? ByteLevel.splitGPT2(text) : (text.isEmpty ? [] : [text])
                return pieces.map(ByteLevel.mapBytes)
            }
        case .sequence(let steps):
            return steps.reduce(words) { $1.split(words: $0) }
        }
    }
}
