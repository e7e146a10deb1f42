import Foundation

/// Character classes as HF `tokenizers` computes them.
///
/// `tokenizers` classifies control characters, punctuation and non-spacing marks with the
/// `unicode_categories` crate, whose tables are Unicode 8.0: a character assigned later (U+2E43 and
/// after in Supplemental Punctuation, U+0D00, ...) is neither punctuation nor a mark there. We take
/// the general category from the platform and keep only characters assigned by Unicode 8.0, which
/// reproduces those tables without copying them. Whitespace and lowercasing use the current Unicode
/// data on both sides (Rust's `char`, Swift's `Unicode.Scalar.Properties`).
enum CharacterClass {
    /// True when the scalar was assigned in Unicode 8.0 or earlier.
    static func isInUnicode8(_ scalar: Unicode.Scalar) -> Bool {
        guard let age = scalar.properties.age else { return false }
        return age.major < 8 || (age.major == 8 && age.minor == 0)
    }

    /// Rust `char::is_whitespace` (the White_Space property), plus tab, newline and return.
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.isWhitespace }

    /// `unicode_categories::is_other` minus tab, newline and return: Cc, Cf, Co, Cs (not Cn).
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "\t", "\n", "\r": return false
        default: break
        }
        switch scalar.properties.generalCategory {
        case .control, .format, .privateUse, .surrogate: return isInUnicode8(scalar)
        default: return false
        }
    }

    /// BERT punctuation: ASCII punctuation (which includes symbols such as `$`, `+`, `^`) or a P* category.
    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if (0x21...0x2F).contains(value) || (0x3A...0x40).contains(value) || (0x5B...0x60).contains(value)
            || (0x7B...0x7E).contains(value) { return true }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return isInUnicode8(scalar)
        default:
            return false
        }
    }

    /// A non-spacing mark (Mn), as `strip_accents` drops them after NFD.
    static func isNonspacingMark(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .nonspacingMark && isInUnicode8(scalar)
    }

    /// The CJK ideograph ranges BERT surrounds with spaces (the CJK Unified Ideographs blocks and
    /// their extensions and compatibility blocks, not Hangul, Hiragana or Katakana).
    static func isChineseCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }

    /// Letter (L*), as the GPT-2 pattern's `\p{L}`.
    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    /// Number (N*), as the GPT-2 pattern's `\p{N}`.
    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
}

/// Unicode normalisation forms a `normalizer` can ask for, through Foundation.
enum UnicodeForm: String, Sendable {
    case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD"

    func apply(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var text = String()
        text.unicodeScalars.append(contentsOf: scalars)
        let normalized: String
        switch self {
        case .nfc: normalized = text.precomposedStringWithCanonicalMapping
        case .nfd: normalized = text.decomposedStringWithCanonicalMapping
        case .nfkc: normalized = text.precomposedStringWithCompatibilityMapping
        case .nfkd: normalized = text.decomposedStringWithCompatibilityMapping
        }
        return Array(normalized.unicodeScalars)
    }
}

/// HF's `BertNormalizer`: clean text, space out CJK ideographs, strip accents, lowercase, in that order.
struct BertNormalizer: Sendable, Equatable {
    /// Drop NUL, U+FFFD and control characters; turn every whitespace character into a space.
    var cleanText = true
    /// Put spaces around CJK ideographs so each becomes its own word.
    var handleChineseCharacters = true
    /// NFD then drop non-spacing marks; `nil` follows `lowercase`, as in BERT's uncased checkpoints.
    var stripAccents: Bool?
    /// Lowercase scalar by scalar (full mappings, no context, as Rust's `char::to_lowercase`).
    var lowercase = true

    func apply(_ input: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var scalars = input
        if cleanText {
            scalars = scalars.compactMap { scalar in
                if scalar.value == 0 || scalar.value == 0xFFFD || CharacterClass.isControl(scalar) { return nil }
                return CharacterClass.isWhitespace(scalar) ? " " : scalar
            }
        }
        if handleChineseCharacters {
            var spaced: [Unicode.Scalar] = []
            spaced.reserveCapacity(scalars.count)
            for scalar in scalars {
                if CharacterClass.isChineseCharacter(scalar) {
                    spaced.append(" ")
                    spaced.append(scalar)
                    spaced.append(" ")
                } else {
                    spaced.append(scalar)
                }
            }
            scalars = spaced
        }
        if stripAccents ?? lowercase {
            scalars = UnicodeForm.nfd.apply(scalars).filter { !CharacterClass.isNonspacingMark($0) }
        }
        if lowercase { scalars = Normalizer.lowercase(scalars) }
        return scalars
    }
}

/// One `normalizer` of a tokenizer.json, applied to the text between added tokens.
indirect enum Normalizer: Sendable, Equatable {
    case bert(BertNormalizer)
    case unicode(UnicodeForm)
    case lowercase
    /// HF's `StripAccents`: drops non-spacing marks only (pipelines put an `NFD` before it).
    case stripAccents
    case sequence([Normalizer])

    func apply(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        switch self {
        case .bert(let bert): return bert.apply(scalars)
        case .unicode(let form): return form.apply(scalars)
        case .lowercase: return Normalizer.lowercase(scalars)
        case .stripAccents: return scalars.filter { !CharacterClass.isNonspacingMark($0) }
        case .sequence(let steps): return steps.reduce(scalars) { $1.apply($0) }
        }
    }

    static func lowercase(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(scalars.count)
        for scalar in scalars {
            if scalar.isASCII {
                let value = scalar.value
                result.append((0x41...0x5A).contains(value) ? Unicode.Scalar(UInt8(value + 32)) : scalar)
            } else {
                result.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return result
    }
}
