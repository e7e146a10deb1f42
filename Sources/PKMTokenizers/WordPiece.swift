/// HF's `WordPiece` model: greedy longest-match-first over a word's characters.
///
/// The first piece is looked up as is, later pieces with `continuing_subword_prefix` ("##"); a word
/// with a character no piece covers, or longer than `max_input_chars_per_word` characters, is the
/// unknown token as a whole.
struct WordPiece: Sendable {
    /// Token → id (byte-exact keys).
    let vocabulary: [VocabularyKey: Int]
    let unknownTokenId: Int
    let continuingSubwordPrefix: [Unicode.Scalar]
    let maxInputCharactersPerWord: Int

    /// The ids of one pre-tokenized word.
    func encode(_ word: [Unicode.Scalar]) -> [Int] {
        if word.count > maxInputCharactersPerWord { return [unknownTokenId] }
        var ids: [Int] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int?
            while start < end {
                var piece = start > 0 ? continuingSubwordPrefix : []
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
