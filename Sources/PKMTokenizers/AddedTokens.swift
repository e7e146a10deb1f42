/// A tokenizer.json `added_tokens` entry: a string matched in the text before the model sees it.
struct AddedToken: Sendable, Equatable {
    let id: Int
    let content: [Unicode.Scalar]
    let special: Bool
    let singleWord: Bool
    let leftStrip: Bool
    let rightStrip: Bool
    /// Matched on the normalised text (true) or on the raw text (false, as special tokens usually are).
    let normalized: Bool
}

/// HF's `AddedVocabulary` splitting: leftmost-longest matches of the added tokens.
struct AddedTokens: Sendable {
    enum Segment: Equatable {
        case text([Unicode.Scalar])
        /// An added token, with the text it covered (its content plus any stripped spaces).
        case token(id: Int, matched: String)
    }

    /// Raw-text tokens, by first scalar, longest first.
    private let raw: [Unicode.Scalar: [AddedToken]]
    /// Normalised-text tokens (contents normalised at load time), by first scalar, longest first.
    private let normalized: [Unicode.Scalar: [AddedToken]]

    init(_ tokens: [AddedToken], normalizer: Normalizer?) {
        func index(_ tokens: [AddedToken]) -> [Unicode.Scalar: [AddedToken]] {
            var byFirst: [Unicode.Scalar: [AddedToken]] = [:]
            for token in tokens {
                guard let first = token.content.first else { continue }
                byFirst[first, default: []].append(token)
            }
            return byFirst.mapValues { $0.sorted { $0.content.count > $1.content.count } }
        }
        raw = index(tokens.filter { !$0.normalized })
        normalized = index(tokens.filter(\.normalized).map { token in
            AddedToken(id: token.id, content: normalizer?.apply(token.content) ?? token.content, special: token.special,
                       singleWord: token.singleWord, leftStrip: token.leftStrip, rightStrip: token.rightStrip,
                       normalized: true)
        })
    }

    /// Splits `text` into plain segments and the added tokens found in it.
    func split(_ text: [Unicode.Scalar], normalizedTokens: Bool) -> [Segment] {
        let table = normalizedTokens ? normalized : raw
        if table.isEmpty || text.isEmpty { return [.text(text)] }
        var segments: [Segment] = []
        var segmentStart = 0
        var position = 0
        while position < text.count {
            guard let candidates = table[text[position]],
                  let token = candidates.first(where: { matches($0.content, in: text, at: position) }) else {
                position += 1
                continue
            }
            var start = position
            var stop = position + token.content.count
            position = stop
            if token.singleWord {
                let wordBefore = start > 0 && CharacterClass.isAlphanumeric(text[start - 1])
                let wordAfter = stop < text.count && CharacterClass.isAlphanumeric(text[stop])
                if wordBefore || wordAfter { continue }
            }
            if token.leftStrip {
                while start > segmentStart && CharacterClass.isWhitespace(text[start - 1]) { start -= 1 }
            }
            if token.rightStrip {
                while stop < text.count && CharacterClass.isWhitespace(text[stop]) { stop += 1 }
                position = stop
            }
            if segmentStart < start { segments.append(.text(Array(text[segmentStart..<start]))) }
            var matched = String()
            matched.unicodeScalars.append(contentsOf: text[start..<stop])
            segments.append(.token(id: token.id, matched: matched))
            segmentStart = stop
        }
        if segmentStart < text.count { segments.append(.text(Array(text[segmentStart...]))) }
        return segments
    }

    private func matches(_ content: [Unicode.Scalar], in text: [Unicode.Scalar], at position: Int) -> Bool {
        guard position + content.count <= text.count else { return false }
        for offset in 0..<content.count where text[position + offset] != content[offset] { return false }
        return true
    }
}

extension CharacterClass {
    /// Rust `char::is_alphanumeric`: Alphabetic or a number (Nd, Nl, No).
    static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isAlphabetic || isNumber(scalar)
    }
}
