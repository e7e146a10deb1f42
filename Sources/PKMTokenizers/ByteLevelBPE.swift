import Foundation

/// GPT-2's byte-level alphabet and split pattern, as HF's `ByteLevel` pre-tokenizer applies them.
enum ByteLevel {
    /// Byte → printable scalar: printable Latin-1 bytes map to themselves, the other 68 bytes to
    /// U+0100 upwards in byte order (GPT-2's `bytes_to_unicode`).
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(next) ?? " "
                next += 1
            }
        }
        return table
    }()

    /// The UTF-8 bytes of `word`, each as its byte-level scalar.
    static func mapBytes(_ word: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(word.count)
        for scalar in word {
            for byte in String(Character(scalar)).utf8 { result.append(byteToScalar[Int(byte)]) }
        }
        return result
    }

    /// Splits like `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
    /// alternatives tried in order at each position as a backtracking regex engine does.
    ///
    /// `\s` is the White_Space property (Oniguruma's Unicode `\s`), `\p{L}` / `\p{N}` the letter and
    /// number general categories.
    static func splitGPT2(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        enum Kind { case letter, number, space, other }
        func kind(_ scalar: Unicode.Scalar) -> Kind {
            if CharacterClass.isWhitespace(scalar) { return .space }
            if CharacterClass.isLetter(scalar) { return .letter }
            if CharacterClass.isNumber(scalar) { return .number }
            return .other
        }
        let kinds = text.map(kind)
        let count = text.count
        var pieces: [[Unicode.Scalar]] = []
        var start = 0
        /// The end of the run of `wanted` starting at `from`.
        func run(_ wanted: Kind, from: Int) -> Int {
            var end = from
            while end < count && kinds[end] == wanted { end += 1 }
            return end
        }
        while start < count {
            var end = start
            // 's 't 're 've 'm 'll 'd (case-sensitive, as the pattern is).
            if text[start] == "'" && start + 1 < count {
                let next = text[start + 1]
                if next == "s" || next == "t" || next == "m" || next == "d" {
                    end = start + 2
                } else if start + 2 < count {
                    let third = text[start + 2]
                    if (next == "r" && third == "e") || (next == "v" && third == "e") || (next == "l" && third == "l") {
                        end = start + 3
                    }
                }
            }
            if end == start {
                let body = text[start] == " " && start + 1 < count && kinds[start + 1] != .space ? start + 1 : start
                switch kinds[body] {
                case .letter, .number, .other:
                    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
                    end = run(kinds[body], from: body)
                case .space:
                    // `\s+(?!\S)` backs off one character when a non-space follows; else `\s+`.
                    let spaceEnd = run(.space, from: start)
                    if spaceEnd == count || spaceEnd - start == 1 {
                        end = spaceEnd
                    } else {
                        end = spaceEnd - 1
                    }
                }
            }
            pieces.append(Array(text[start..<end]))
            start = end
        }
        return pieces
    }
}

/// HF's `BPE` model: a word's characters merged pair by pair, lowest merge rank first.
final class BytePairEncoding: @unchecked Sendable {
    /// Token → id (byte-exact keys).
    let vocabulary: [VocabularyKey: Int]
    /// (left id, right id) → (rank, merged id).
    let merges: [MergePair: (rank: Int, merged: Int)]
    let unknownTokenId: Int?
    let fuseUnknown: Bool
    let continuingSubwordPrefix: String
    let endOfWordSuffix: String
    /// `ignore_merges`: a word already in the vocabulary is one token.
    let ignoreMerges: Bool

    /// Words already encoded (HF caches likewise); cleared when it reaches `cacheCapacity`.
    private var cache: [[Unicode.Scalar]: [Int]] = [:]
    private let lock = NSLock()
    private let cacheCapacity = 10_000

    struct MergePair: Hashable { let left: Int, right: Int }

    init(vocabulary: [VocabularyKey: Int], merges: [MergePair: (rank: Int, merged: Int)], unknownTokenId: Int?,
         fuseUnknown: Bool, continuingSubwordPrefix: String, endOfWordSuffix: String, ignoreMerges: Bool) {
        self.vocabulary = vocabulary
        self.merges = merges
        self.unknownTokenId = unknownTokenId
        self.fuseUnknown = fuseUnknown
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.endOfWordSuffix = endOfWordSuffix
        self.ignoreMerges = ignoreMerges
    }

    /// The ids of one pre-tokenized word.
    func encode(_ word: [Unicode.Scalar]) -> [Int] {
        lock.lock()
        let cached = cache[word]
        lock.unlock()
        if let cached { return cached }
        let ids = merge(word)
        lock.lock()
        if cache.count >= cacheCapacity { cache.removeAll(keepingCapacity: true) }
        cache[word] = ids
        lock.unlock()
        return ids
    }

    private func merge(_ word: [Unicode.Scalar]) -> [Int] {
        if ignoreMerges, let id = vocabulary[VocabularyKey(word)] { return [id] }
        var symbols: [Int] = []
        symbols.reserveCapacity(word.count)
        var previousWasUnknown = false
        for (index, scalar) in word.enumerated() {
            var piece = String(Character(scalar))
            if index > 0 && !continuingSubwordPrefix.isEmpty { piece = continuingSubwordPrefix + piece }
            if index == word.count - 1 && !endOfWordSuffix.isEmpty { piece += endOfWordSuffix }
            if let id = vocabulary[VocabularyKey(piece)] {
                symbols.append(id)
                previousWasUnknown = false
            } else if let unknown = unknownTokenId {
                if !(fuseUnknown && previousWasUnknown) { symbols.append(unknown) }
                previousWasUnknown = true
            }
        }
        while symbols.count > 1 {
            var best: (rank: Int, merged: Int)?
            var bestPair = MergePair(left: 0, right: 0)
            for index in 0..<(symbols.count - 1) {
                let pair = MergePair(left: symbols[index], right: symbols[index + 1])
                if let found = merges[pair], found.rank < (best?.rank ?? Int.max) {
                    best = found
                    bestPair = pair
                }
            }
            guard let chosen = best else { break }
            var merged: [Int] = []
            merged.reserveCapacity(symbols.count)
            var index = 0
            while index < symbols.count {
                if index + 1 < symbols.count && symbols[index] == bestPair.left && symbols[index + 1] == bestPair.right {
                    merged.append(chosen.merged)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        return symbols
    }
}
