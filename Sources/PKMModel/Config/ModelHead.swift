import Foundation

/// The task head on top of the encoder (`schemas/pkm-checkpoints.md` §3b): what a fine-tuned or pretraining checkpoint
/// adds to the bare `BertModel` / `RobertaModel`.
public enum HeadKind: String, Sendable, Codable, CaseIterable {
    /// Vocabulary logits for every token (`BertForMaskedLM`, `RobertaForMaskedLM`; `BertForPreTraining` without its
    /// next-sentence classifier): `[batch, sequence, vocab]`.
    case maskedLM = "masked_lm"
    /// One row of label logits per sequence (`…ForSequenceClassification`): `[batch, num_labels]`.
    case sequenceClassification = "sequence_classification"
    /// Label logits for every token (`…ForTokenClassification`): `[batch, sequence, num_labels]`.
    case tokenClassification = "token_classification"
    /// Answer-span start and end logits for every token (`…ForQuestionAnswering`): each `[batch, sequence]`.
    case questionAnswering = "question_answering"

    /// The Hugging Face class name after the family's prefix (`Bert`, `Roberta`).
    public var architectureSuffix: String {
        switch self {
        case .maskedLM: return "ForMaskedLM"
        case .sequenceClassification: return "ForSequenceClassification"
        case .tokenClassification: return "ForTokenClassification"
        case .questionAnswering: return "ForQuestionAnswering"
        }
    }

    /// Whether the head's width is the config's `num_labels`.
    public var usesLabels: Bool { self == .sequenceClassification || self == .tokenClassification }
}

/// How classification logits are read (`problem_type` of a Hugging Face config).
public enum ProblemType: String, Sendable, Codable, CaseIterable {
    case regression
    case singleLabelClassification = "single_label_classification"
    case multiLabelClassification = "multi_label_classification"
}

extension ModelConfig {
    /// The Hugging Face class this config describes: `BertForMaskedLM`, `RobertaForSequenceClassification`, or the
    /// bare `BertModel` / `RobertaModel` when ``head`` is nil.
    public var architectureName: String {
        ModelConfig.architectureName(modelType, head: head)
    }

    /// `Bert` / `Roberta` + the head's suffix, or `Model`.
    public static func architectureName(_ type: ModelType, head: HeadKind?) -> String {
        (type == .bert ? "Bert" : "Roberta") + (head?.architectureSuffix ?? "Model")
    }

    /// What an entry of `architectures` means: the family and head of a class this model runs, or nil for any other
    /// class (`BertForMultipleChoice`, `BertLMHeadModel`, …). `BertForPreTraining` runs as its masked-LM half (the
    /// next-sentence classifier's tensors are kept, unused).
    public static func architecture(named name: String) -> (type: ModelType, head: HeadKind?)? {
        if name == "BertForPreTraining" { return (.bert, .maskedLM) }
        for type in [ModelType.bert, .roberta] {
            if name == architectureName(type, head: nil) { return (type, nil) }
            for head in HeadKind.allCases where name == architectureName(type, head: head) { return (type, head) }
        }
        return nil
    }

    /// The output width of the head: the vocabulary for ``HeadKind/maskedLM``, `num_labels` for classification, 2
    /// (start, end) for question answering; nil without a head.
    public var headWidth: Int? {
        switch head {
        case nil: return nil
        case .maskedLM: return vocabSize
        case .sequenceClassification, .tokenClassification: return labelCount ?? 0
        case .questionAnswering: return 2
        }
    }

    /// The name of label `id`: `id2label`'s, else `LABEL_{id}` as Hugging Face names them.
    public func labelName(_ id: Int) -> String {
        if let labelNames, id >= 0, id < labelNames.count { return labelNames[id] }
        return "LABEL_\(id)"
    }
}
