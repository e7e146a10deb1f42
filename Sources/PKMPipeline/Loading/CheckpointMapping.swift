import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

extension ResolvedCheckpoint {
    /// Maps every tensor name (`schemas/pkm-checkpoints.md` §6 aliases, then the peer memory layouts), fills and checks the
    /// memory config against the weights, validates it, and compares against the model's parameter specs.
    /// - Throws: ``PipelineError/unsupportedMemory(layer:reason:)`` for refused memories,
    ///   ``PipelineError/invalidConfig(source:underlying:)`` when the completed config is invalid.
    static func map(reader: any CheckpointReader, config: inout ModelConfig, memory options: MemoryImportOptions = MemoryImportOptions(),
                    configSource: String = "") throws -> (report: MappingReport, sources: [String: MappedTensor]) {
        var report = MappingReport(checkpoint: reader.url.path, format: reader.format, configSource: "", modelType: config.modelType,
                                   mapped: [], missing: [], unexpected: [], shapeMismatches: [], ignored: [], conflicts: [], warnings: [])
        var sources: [String: MappedTensor] = [:]
        var infoByCanonical: [String: MappedTensor] = [:]
        var order: [String] = []
        var impliedTypes = Set<ModelConfig.ModelType>()
        var entries: [MappedTensor] = []
        for info in reader.tensorInfos {
            let mapped = KeyMapping.canonicalName(for: info.name, extraAttribute: options.attribute)
            let entry = MappedTensor(source: info.name, canonical: mapped.canonical, rules: mapped.applied, dtype: info.dtype, shape: info.shape)
            if let type = mapped.impliedModelType { impliedTypes.insert(type) }
            if let (layer, mode) = mapped.impliedMemoryMode {
                if let configured = config.memory?.mode(ofLayer: layer) {
                    if configured != mode {
                        report.conflicts.append("tensor '\(info.name)' implies a \(mode.rawValue) memory at layer \(layer) but the config says \(configured.rawValue)")
                    }
                } else {
                    report.conflicts.append("tensor '\(info.name)' implies a \(mode.rawValue) memory at layer \(layer) that the config's pkm.layers does not list")
                }
            }
            if KeyMapping.isIgnoredBuffer(mapped.canonical) {
                report.ignored.append(entry)
                continue
            }
            entries.append(entry)
        }
        // Peer layouts: per memory, detect, rename leaves and record the re-ordering.
        var memoryLeaves: [Int: [String: [Int]]] = [:]
        for entry in entries {
            if let (layer, leaf) = memoryLeaf(of: entry.canonical) { memoryLeaves[layer, default: [:]][leaf] = entry.shape }
        }
        var layouts: [Int: (layout: PeerLayout, heads: Int?)] = [:]
        for (layer, leaves) in memoryLeaves.sorted(by: { $0.key < $1.key }) {
            let layout = try MemoryLayouts.detect(layer: layer, leaves: leaves, choice: options.layout)
            layouts[layer] = (layout, layout.heads(leaves))
            report.memoryLayouts[String(layer)] = layout.id
        }
        for index in entries.indices {
            guard let (layer, leaf) = memoryLeaf(of: entries[index].canonical), let (layout, heads) = layouts[layer],
                  let rule = layout.importRule(leaf: leaf, shape: entries[index].shape) else { continue }
            let prefix = ParameterNames.layerPrefix(layer) + ParameterNames.Layer.memory + "."
            if let transform = rule.transform {
                guard let heads, let shape = MemoryLayouts.canonicalShape(entries[index].shape, transform: transform, heads: heads) else {
                    report.conflicts.append("tensor '\(entries[index].source)' has shape \(entries[index].shape), which the \(layout.id.rawValue) memory layout cannot re-order (\(transform.rawValue))")
                    continue
                }
                entries[index].shape = shape
                entries[index].transform = transform
                entries[index].transformHeads = heads
            }
            entries[index].canonical = prefix + rule.canonical
            entries[index].rules.append("\(layout.id.rawValue):\(rule.source)")
        }
        for entry in entries {
            if let previous = infoByCanonical[entry.canonical] {
                report.conflicts.append("tensors '\(previous.source)' and '\(entry.source)' both map to '\(entry.canonical)'")
                continue
            }
            infoByCanonical[entry.canonical] = entry
            order.append(entry.canonical)
        }
        if impliedTypes.count == 1, let type = impliedTypes.first, type != config.modelType {
            report.warnings.append("tensor prefixes say \(type.rawValue) but the config says \(config.modelType.rawValue); using the config")
        }
        // The weights fill what the config's pkm object leaves out, and must agree with what it states.
        if var memory = config.memory {
            var canonicalLeaves: [Int: [String: (source: String, shape: [Int])]] = [:]
            for entry in infoByCanonical.values {
                if let (layer, leaf) = memoryLeaf(of: entry.canonical), memory.layers.contains(layer) {
                    canonicalLeaves[layer, default: [:]][leaf] = (entry.source, entry.shape)
                }
            }
            let (filled, conflicts) = InferredMemory(layers: canonicalLeaves).reconcile(&memory)
            report.conflicts += conflicts
            if !filled.isEmpty {
                report.warnings.append("the config's pkm object leaves pkm.\(filled.joined(separator: ", pkm.")) to the weights: filled from the memory tensors")
            }
            config.memory = memory
        }
        report.headSource = resolveHead(&config, names: Set(infoByCanonical.keys), shapes: infoByCanonical.mapValues(\.shape), warnings: &report.warnings)
        report.architecture = config.architectureName
        do { try config.validate() } catch let error as ModelError {
            throw PipelineError.invalidConfig(source: configSource, underlying: error)
        }
        let specs = PKMBertModel.parameterSpecs(for: config)
        var expected = Set<String>()
        for spec in specs {
            expected.insert(spec.name)
            guard let entry = infoByCanonical[spec.name] else {
                if !spec.isOptional { report.missing.append(spec.name) }
                continue
            }
            sources[spec.name] = entry
            if entry.shape != spec.shape {
                report.shapeMismatches.append(ShapeMismatch(name: entry.source, expected: spec.shape, actual: entry.shape, dtype: nil))
            } else if spec.isUsed && spec.isInteger == entry.dtype.isFloatingPoint {
                report.shapeMismatches.append(ShapeMismatch(name: entry.source, expected: spec.shape, actual: entry.shape, dtype: entry.dtype))
            }
            report.mapped.append(entry)
        }
        if (sources[ParameterNames.poolerWeight] == nil) != (sources[ParameterNames.poolerBias] == nil) {
            report.missing.append(sources[ParameterNames.poolerWeight] == nil ? ParameterNames.poolerWeight : ParameterNames.poolerBias)
        }
        for canonical in order where !expected.contains(canonical) {
            if let entry = infoByCanonical[canonical] {
                report.unexpected.append(entry)
                sources[canonical] = entry
            }
        }
        report.modelType = config.modelType
        return (report, sources)
    }

    /// Tensors whose presence names a head, in the order they are tried, when the config's `architectures` does not
    /// (`schemas/pkm-checkpoints.md` §3b). `classifier.weight` is a BERT sequence classifier when the checkpoint has a
    /// pooler (which it reads), else a token classifier.
    static let headEvidence: [(tensor: String, head: @Sendable (_ type: ModelConfig.ModelType, _ hasPooler: Bool) -> HeadKind)] = [
        (ParameterNames.Head.bertTransform + ".weight", { _, _ in .maskedLM }),
        (ParameterNames.Head.robertaTransform + ".weight", { _, _ in .maskedLM }),
        (ParameterNames.Head.questionAnswering + ".weight", { _, _ in .questionAnswering }),
        (ParameterNames.Head.classifierOutput + ".weight", { _, _ in .sequenceClassification }),
        (ParameterNames.Head.classifier + ".weight", { type, pooler in type == .bert && pooler ? .sequenceClassification : .tokenClassification }),
    ]

    /// Chooses the head: the config's `architectures` when it names a class this model runs, else (no `architectures`)
    /// the tensor names; fills `num_labels` from the classifier's weights when the config leaves it out. A head named
    /// by the config whose tensors are all absent is dropped with a warning (the checkpoint holds only the encoder).
    /// - Returns: where the head came from, nil for a bare encoder.
    static func resolveHead(_ config: inout ModelConfig, names: Set<String>, shapes: [String: [Int]], warnings: inout [String]) -> String? {
        var source: String?
        if let head = config.head {
            let probe = probe(config, head)
            let own = TaskHead.parameterSpecs(probe).filter { !$0.isOptional }.map(\.name)
            if !own.isEmpty, !own.contains(where: names.contains) {
                warnings.append("the config names \(config.architectureName) but the checkpoint holds none of its head's tensors (\(own.joined(separator: ", "))): running the encoder alone")
                config.head = nil
                return nil
            }
            source = "config.json architectures"
        } else if let stated = config.statedArchitectures?.first {
            if ModelConfig.architecture(named: stated) == nil {
                warnings.append("the config names \(stated), a class this model does not run: running the encoder alone; its head's tensors are kept unused")
            }
            return nil
        } else {
            let hasPooler = names.contains(ParameterNames.poolerWeight)
            guard let evidence = headEvidence.first(where: { names.contains($0.tensor) }) else { return nil }
            config.head = evidence.head(config.modelType, hasPooler)
            source = "tensor names (\(evidence.tensor))"
        }
        if let head = config.head, head.usesLabels, config.labelCount == nil {
            let bias = TaskHead.parameterSpecs(probe(config, head)).last?.name ?? ""
            if let shape = shapes[bias], shape.count == 1 {
                config.labelCount = shape[0]
                warnings.append("the config states no num_labels or id2label: \(shape[0]) labels, from '\(bias)'")
            }
        }
        return source
    }

    /// `config` with `head`, and one label when it states none (to list the head's tensor names).
    private static func probe(_ config: ModelConfig, _ head: HeadKind) -> ModelConfig {
        var probe = config
        probe.head = head
        if probe.labelCount == nil { probe.labelCount = 1 }
        return probe
    }

    /// `(layer, leaf)` when `name` is `encoder.layer.{layer}.memory.{leaf}`.
    static func memoryLeaf(of name: String) -> (Int, String)? {
        let head = "encoder.layer."
        guard name.hasPrefix(head) else { return nil }
        let rest = name.dropFirst(head.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let after = rest[rest.index(after: dot)...]
        let memory = ParameterNames.Layer.memory + "."
        guard after.hasPrefix(memory) else { return nil }
        return (layer, String(after.dropFirst(memory.count)))
    }
}
