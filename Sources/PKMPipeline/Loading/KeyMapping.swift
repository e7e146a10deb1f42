import Foundation
import PKMModel

/// Maps checkpoint tensor names onto canonical names (`schemas/pkm-checkpoints.md` §1 and §6), as data.
///
/// A name passes through three stages, each a table of rules where the first matching rule of
/// the stage applies (at most once per stage, so rules never chain unpredictably):
/// 1. ``prefixRules``: wrappers stripped from the front (`module.`, `model.`, `bert.`, `roberta.`),
///    repeatedly, so `module.bert.` goes too; `bert.`/`roberta.` record the model type.
/// 2. ``containerRules``: where a memory lives (XLM's `memories.{i}_in` / `_after` → `encoder.layer.{i}.memory`).
/// 3. ``leafRules``: renamed leaves (legacy LayerNorm `gamma`/`beta`, XLM's query network names,
///    a replace layer's `layer_norm`).
/// The peer libraries' own memory leaves are renamed after this, per detected layout (``MemoryLayouts``).
public enum KeyMapping {
    /// One renaming rule: a regular expression over the whole (partially mapped) name and a
    /// replacement template using `$1`, `$2`… for the captures.
    public struct Rule: Sendable {
        /// Short identifier shown in import reports.
        public let id: String
        /// Anchored regular expression.
        public let pattern: String
        /// Replacement template.
        public let template: String
        /// The memory mode the rule implies for layer `$1`, if any.
        public let impliedMode: MemoryMode?

        public init(id: String, pattern: String, template: String, impliedMode: MemoryMode? = nil) {
            self.id = id
            self.pattern = pattern
            self.template = template
            self.impliedMode = impliedMode
        }
    }

    /// Prefixes stripped on import, with the model type they imply.
    public static let prefixRules: [(prefix: String, modelType: ModelConfig.ModelType?)] = [
        ("module.", nil),
        ("model.", nil),
        ("bert.", .bert),
        ("roberta.", .roberta),
    ]

    /// Stage 2: where a memory is attached (XLM's positions, declared with its layout in `PeerLayouts/XLMLayout.swift`).
    public static let containerRules: [Rule] = XLM.containerRules

    /// Stage 3: renamed leaves.
    public static let leafRules: [Rule] = [
        Rule(id: "layernorm-gamma", pattern: #"^(.*)LayerNorm\.gamma$"#, template: "$1LayerNorm.weight"),
        Rule(id: "layernorm-beta", pattern: #"^(.*)LayerNorm\.beta$"#, template: "$1LayerNorm.bias"),
    ] + XLM.queryAliases + [
        Rule(id: "replace-layer-norm", pattern: #"^encoder\.layer\.(\d+)\.layer_norm\.(weight|bias|gamma|beta)$"#, template: "encoder.layer.$1.output.LayerNorm.$2"),
    ]

    /// Result of mapping one name.
    public struct Mapped: Sendable, Equatable {
        /// The canonical name.
        public var canonical: String
        /// Ids of the rules (and stripped prefixes) applied, in order.
        public var applied: [String]
        /// Model type implied by a stripped prefix.
        public var impliedModelType: ModelConfig.ModelType?
        /// Memory mode implied for a layer by the name, as (layer, mode).
        public var impliedMemoryMode: (layer: Int, mode: MemoryMode)?

        public static func == (lhs: Mapped, rhs: Mapped) -> Bool {
            lhs.canonical == rhs.canonical && lhs.applied == rhs.applied && lhs.impliedModelType == rhs.impliedModelType
                && lhs.impliedMemoryMode?.layer == rhs.impliedMemoryMode?.layer && lhs.impliedMemoryMode?.mode == rhs.impliedMemoryMode?.mode
        }
    }

    /// Module attributes under `encoder.layer.{i}.` that hold a memory (`memory` is canonical; lucidrains
    /// users attach `pkm` or `mem`). ``MemoryImportOptions/attribute`` adds one.
    public static let memoryAttributes = ["memory", "pkm", "mem"]

    /// The container rule that renames `encoder.layer.{i}.{attribute}.` to the canonical `memory`.
    static func attributeRule(_ attribute: String) -> Rule {
        Rule(id: "memory-attribute:\(attribute)", pattern: "^encoder\\.layer\\.(\\d+)\\.\(NSRegularExpression.escapedPattern(for: attribute))\\.(.+)$",
             template: "encoder.layer.$1.memory.$2")
    }

    private static let compiledContainers = (containerRules + memoryAttributes.dropFirst().map(attributeRule)).map { ($0, try? NSRegularExpression(pattern: $0.pattern)) }
    private static let compiledLeaves = leafRules.map { ($0, try? NSRegularExpression(pattern: $0.pattern)) }

    /// Maps one source name to its canonical name; `extraAttribute` is one more memory attribute (``MemoryImportOptions/attribute``).
    public static func canonicalName(for source: String, extraAttribute: String? = nil) -> Mapped {
        var name = source
        var applied: [String] = []
        var modelType: ModelConfig.ModelType?
        var stripped = true
        while stripped {
            stripped = false
            for rule in prefixRules where name.hasPrefix(rule.prefix) && name.count > rule.prefix.count {
                name.removeFirst(rule.prefix.count)
                applied.append("strip:\(rule.prefix)")
                if let type = rule.modelType { modelType = type }
                stripped = true
                break
            }
        }
        var impliedMode: (Int, MemoryMode)?
        var containers = compiledContainers
        if let extraAttribute, !memoryAttributes.contains(extraAttribute) {
            let rule = attributeRule(extraAttribute)
            containers.append((rule, try? NSRegularExpression(pattern: rule.pattern)))
        }
        if let (rule, captures, rewritten) = firstMatch(containers, in: name) {
            name = rewritten
            applied.append(rule.id)
            if let mode = rule.impliedMode, let layer = Int(captures.first ?? "") { impliedMode = (layer, mode) }
        }
        if let (rule, _, rewritten) = firstMatch(compiledLeaves, in: name) {
            name = rewritten
            applied.append(rule.id)
            // A replace layer's `layer_norm.gamma` needs the gamma/beta rename too; the leaf table
            // maps it to `output.LayerNorm.gamma`, which one more leaf pass settles.
            if let (second, _, again) = firstMatch(compiledLeaves, in: name), second.id.hasPrefix("layernorm-") {
                name = again
                applied.append(second.id)
            }
        }
        return Mapped(canonical: name, applied: applied, impliedModelType: modelType, impliedMemoryMode: impliedMode)
    }

    private static func firstMatch(_ rules: [(Rule, NSRegularExpression?)], in name: String) -> (Rule, [String], String)? {
        let range = NSRange(name.startIndex..., in: name)
        for (rule, regex) in rules {
            guard let regex, let match = regex.firstMatch(in: name, range: range) else { continue }
            var captures: [String] = []
            for group in 1..<match.numberOfRanges {
                if let r = Range(match.range(at: group), in: name) { captures.append(String(name[r])) } else { captures.append("") }
            }
            let rewritten = regex.replacementString(for: match, in: name, offset: 0, template: rule.template)
            return (rule, captures, rewritten)
        }
        return nil
    }

    /// Whether a canonical name is a non-weight buffer to ignore on import (`schemas/pkm-checkpoints.md` §1: `embeddings.position_ids`).
    public static func isIgnoredBuffer(_ canonical: String) -> Bool {
        canonical == ParameterNames.positionIds
    }
}
