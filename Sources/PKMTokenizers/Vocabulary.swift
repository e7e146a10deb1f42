/// A vocabulary key compared scalar by scalar.
///
/// Swift's `String` equality is canonical equivalence ("é" == "e\u{301}"), but HF vocabularies are
/// byte-exact maps: a decomposed word must not find a precomposed entry, and two canonically
/// equivalent entries must stay two entries.
struct VocabularyKey: Hashable, Sendable {
    let scalars: [Unicode.Scalar]

    init(_ scalars: [Unicode.Scalar]) { self.scalars = scalars }
    init(_ text: String) { self.scalars = Array(text.unicodeScalars) }
    init(_ text: Substring) { self.scalars = Array(text.unicodeScalars) }

    var string: String {
        var text = String()
        text.unicodeScalars.append(contentsOf: scalars)
        return text
    }
}
