/// HF's `WordPiece` model: greedy longest-match-first over a word's characters.
///
/// The first piece is looked up as is, later pieces with `continuing_subword_prefix` ("##"); a word
/// with a character no piece covers, or longer than `max_input_chars_per_word` characters, is the
/// unknown token as a whole.
///
/// Why the candidate pieces are capped at the longest vocabulary entry: the greedy search tries
/// every end from the word's end down, and each try hashes the piece, so a word of n characters
/// cost O(n³) (8,000 characters under `max_input_chars_per_word = 2^62` took minutes, issue 18).
/// No piece longer than the longest token can be in the vocabulary, so starting the search at
/// `start + longestPiece` skips only lookups that must fail: the ids are the same, and the cost is
/// O(n · L²) for tokens of at most L characters, linear in the word.
struct WordPiece: Sendable {
    /// Token → id (byte-exact keys).
    let vocabulary: [VocabularyKey: Int]
    let unknownTokenId: Int
    let continuingSubwordPrefix: [Unicode.Scalar]
    let maxInputCharactersPerWord: Int
    /// Characters of the longest vocabulary entry (prefix included): no longer piece can match.
    let longestPiece: Int

    init(vocabulary: [VocabularyKey: Int], unknownTokenId: Int, continuingSubwordPrefix: [Unicode.Scalar], maxInputCharactersPerWord: Int) {
        self.vocabulary = vocabulary
        self.unknownTokenId = unknownTokenId
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.maxInputCharactersPerWord = maxInputCharactersPerWord
        longestPiece = vocabulary.keys.reduce(0) { max($0, $1.scalars.count) }
    }

    /// The ids of one pre-tokenized word.
    func encode(_ word: [Unicode.Scalar]) -> [Int] {
        if word.count > maxInputCharactersPerWord { return [unknownTokenId] }
        var ids: [Int] = []
        var start = 0
        var piece: [Unicode.Scalar] = []
        piece.reserveCapacity(longestPiece + continuingSubwordPrefix.count)
        while start < word.count {
            // A piece of more than `longestPiece` characters (after the prefix) cannot be a token.
            var end = start + min(word.count - start, longestPiece)
            var found: Int?
            while start < end {
                piece.removeAll(keepingCapacity: true)
                if start > 0 { piece.append(contentsOf: continuingSubwordPrefix) }
                piece.append(contentsOf: word[start..<end])
                if let id = vocabulary[VocabularyKey(piece)] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return [unknownTokenId] }
            ids.append(id)
            start = end
        }
        return ids
    }
}
