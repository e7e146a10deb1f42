/// The special tokens a tokenizer wraps sequences in, as HF's `TemplateProcessing`.
///
/// `BertProcessing` and `RobertaProcessing` are the templates `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B:1
/// [SEP]:1` and `<s> $A </s>` / `<s> $A </s> </s> $B </s>` (RoBERTa's type ids are all 0), so one
/// representation serves all three.
struct TemplateProcessor: Sendable, Equatable {
    enum Piece: Sendable, Equatable {
        /// `$A` (first) or `$B` (second) with the type id its tokens get.
        case sequence(second: Bool, typeId: Int)
        /// Special tokens (usually one) inserted as they are.
        case special(ids: [Int], tokens: [String], typeId: Int)
    }

    var single: [Piece]
    var pair: [Piece]

    /// How many special tokens the template adds (what truncation keeps room for).
    func addedTokenCount(pair isPair: Bool) -> Int {
        (isPair ? pair : single).reduce(0) { count, piece in
            if case .special(let ids, _, _) = piece { return count + ids.count }
            return count
        }
    }

    /// The BERT template around the given `[CLS]` and `[SEP]`.
    static func bert(cls: (String, Int), sep: (String, Int)) -> TemplateProcessor {
        let clsPiece = Piece.special(ids: [cls.1], tokens: [cls.0], typeId: 0)
        return TemplateProcessor(
            single: [clsPiece, .sequence(second: false, typeId: 0), .special(ids: [sep.1], tokens: [sep.0], typeId: 0)],
            pair: [clsPiece, .sequence(second: false, typeId: 0), .special(ids: [sep.1], tokens: [sep.0], typeId: 0),
                   .sequence(second: true, typeId: 1), .special(ids: [sep.1], tokens: [sep.0], typeId: 1)])
    }

    /// The RoBERTa template around the given `<s>` and `</s>`; every type id is 0.
    static func roberta(cls: (String, Int), sep: (String, Int)) -> TemplateProcessor {
        let clsPiece = Piece.special(ids: [cls.1], tokens: [cls.0], typeId: 0)
        let sepPiece = Piece.special(ids: [sep.1], tokens: [sep.0], typeId: 0)
        return TemplateProcessor(
            single: [clsPiece, .sequence(second: false, typeId: 0), sepPiece],
            pair: [clsPiece, .sequence(second: false, typeId: 0), sepPiece, sepPiece, .sequence(second: true, typeId: 0), sepPiece])
    }

    /// Fills the template with the (already truncated) sequences.
    func apply(first: TokenSequence, second: TokenSequence?) -> Encoding {
        var encoding = Encoding()
        for piece in second == nil ? single : pair {
            switch piece {
            case .sequence(let isSecond, let typeId):
                guard let sequence = isSecond ? second : first else { continue }
                encoding.ids += sequence.ids
                encoding.tokens += sequence.tokens
                encoding.typeIds += Array(repeating: typeId, count: sequence.ids.count)
            case .special(let ids, let tokens, let typeId):
                encoding.ids += ids
                encoding.tokens += tokens
                encoding.typeIds += Array(repeating: typeId, count: ids.count)
            }
        }
        encoding.attentionMask = Array(repeating: 1, count: encoding.ids.count)
        return encoding
    }

    /// Without special tokens: the sequences one after the other, type id 0 then 1 (as HF's default).
    static func concatenate(first: TokenSequence, second: TokenSequence?) -> Encoding {
        var encoding = Encoding(ids: first.ids, tokens: first.tokens, typeIds: Array(repeating: 0, count: first.ids.count),
                                attentionMask: [])
        if let second {
            encoding.ids += second.ids
            encoding.tokens += second.tokens
            encoding.typeIds += Array(repeating: 1, count: second.ids.count)
        }
        encoding.attentionMask = Array(repeating: 1, count: encoding.ids.count)
        return encoding
    }
}

/// The tokens of one input sequence before special tokens are added.
struct TokenSequence: Sendable {
    var ids: [Int] = []
    var tokens: [String] = []

    /// Keeps `length` tokens, from the start (`right`) or the end (`left`).
    mutating func truncate(to length: Int, direction: Tokenizer.TruncationDirection) {
        guard length < ids.count else { return }
        switch direction {
        case .right:
            ids.removeLast(ids.count - length)
            tokens.removeLast(tokens.count - length)
        case .left:
            ids.removeFirst(ids.count - length)
            tokens.removeFirst(tokens.count - length)
        }
    }
}
