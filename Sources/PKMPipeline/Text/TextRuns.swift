import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor
import PKMTokenizers

/// One sequence of a text run: its tokens and a look at its outputs.
public struct TextSequenceResult: Sendable, Codable {
    public var text: String
    public var tokens: [String]
    public var ids: [Int]
    /// Euclidean norm of the pooled output (or of the first token's final hidden state without a pooler).
    public var pooledNorm: Double
    /// Its first 8 values.
    public var pooledFirstValues: [Float]
    /// What the model's task head says (nil for a bare encoder).
    public var head: HeadReading?
}

/// Result of ``LoadedCheckpoint/run(texts:options:)``.
public struct TextRunResult: Sendable, Codable {
    public var checkpoint: String
    public var tokenizer: String
    public var sequences: [TextSequenceResult]
    public var tokens: Int
    /// Wall time of tokenising and running every batch (loading excluded), and the rate.
    public var seconds: Double
    public var tokensPerSecond: Double
    public var batchSize: Int
    public var output: String?
}

/// Progress of a corpus pass: lines and tokens so far, bytes of the file read.
public struct CorpusProgress: Sendable {
    public var sequences: Int
    public var tokens: Int
    public var bytesRead: Int
    public var totalBytes: Int
    public var seconds: Double
}

/// Options of ``LoadedCheckpoint/run(texts:options:)``.
public struct TextOptions: Sendable {
    /// Sequences per forward pass, each batch padded to its longest sequence.
    public var batchSize = 8
    /// Truncate to this many tokens (default: the tokenizer's truncation, else the model's positions).
    public var maxLength: Int?
    /// Where to write inputs and outputs in the reference layout (HDF5; every sequence padded to the longest of all).
    public var outputURL: URL?
    /// A second sequence encoded with every text (`[CLS] text [SEP] pair [SEP]`): for question answering the text is
    /// the question and the pair the context the answer is looked for in.
    public var pair: String?
    public init(batchSize: Int = 8, maxLength: Int? = nil, outputURL: URL? = nil, pair: String? = nil) {
        self.pair = pair
        self.batchSize = batchSize
        self.maxLength = maxLength
        self.outputURL = outputURL
    }
}

extension LoadedCheckpoint {
    /// `run` on text: tokenises `texts` (one sequence each) with the checkpoint's tokenizer and runs them through the
    /// model in batches, each padded to its longest sequence; with ``TextOptions/outputURL``, every sequence is padded
    /// to the longest of all (one `[B, T]` reference file, `schemas/pkm-checkpoints.md` §5 layout, `/inputs` included).
    /// - Throws: ``PipelineError``, ``FormatError``, the tokenizer's errors.
    public func run(texts: [String], options: TextOptions = TextOptions()) throws -> TextRunResult {
        let batchSize = options.batchSize, maxLength = options.maxLength, outputURL = options.outputURL, pair = options.pair
        guard batchSize > 0 else { throw PipelineError.invalidSetting(.batchSize, value: nil, reason: "must be at least 1, is \(batchSize)") }
        let (tokenizer, tokenizerSource) = try tokenizer()
        let model = try model()
        let config = model.config, d = config.hiddenSize
        let start = Date()
        var padTo: Int?
        if outputURL != nil {
            padTo = try TextInputs.encode(texts, pair: pair, tokenizer: tokenizer, config: config, maxLength: maxLength).sequenceLength
        }
        // Without -o, lines are grouped by token count within pools of 16 batches, so each batch pads to
        // a length near its own lines'; results are reported in the input order.
        var order = Array(texts.indices)
        if outputURL == nil {
            let limit = maxLength ?? (tokenizer.truncation == nil ? config.maxPositionEmbeddings - (config.modelType == .roberta ? config.padTokenId + 1 : 0) : nil)
            let lengths = try texts.map { try tokenizer.encode($0, pair: pair, maxLength: limit).ids.count }
            order = []
            for poolStart in stride(from: 0, to: texts.count, by: batchSize * 16) {
                order += (poolStart..<min(texts.count, poolStart + batchSize * 16)).sorted { lengths[$0] < lengths[$1] }
            }
        }
        var results = [TextSequenceResult?](repeating: nil, count: texts.count), tokens = 0
        var written: [(ModelInputs, ModelOutputs)] = []
        for batchStart in stride(from: 0, to: order.count, by: batchSize) {
            let positions = Array(order[batchStart..<min(order.count, batchStart + batchSize)])
            let lines = positions.map { texts[$0] }
            let inputs = try TextInputs.encode(lines, pair: pair, tokenizer: tokenizer, config: config, maxLength: maxLength, padTo: padTo)
            let outputs: ModelOutputs
            do {
                outputs = try model.forward(inputs, collectHiddenStates: outputURL != nil, collectMemoryTraces: outputURL != nil)
            } catch let error as ModelError {
                throw PipelineError.model(checkpoint: url.path, underlying: error)
            }
            for (row, text) in lines.enumerated() {
                let t = inputs.sequenceLength
                let mask = inputs.attentionMask.map { Array($0[(row * t)..<((row + 1) * t)]) } ?? Array(repeating: 1, count: t)
                let kept = Array(inputs.inputIds[(row * t)..<((row + 1) * t)]).enumerated().filter { mask[$0.offset] != 0 }
                let ids = kept.map(\.element)
                let strings = ids.map { tokenizer.token(forId: $0) ?? "<\($0)>" }
                let reading = outputs.head.flatMap { HeadReading.read($0, row: row, sequenceLength: t, positions: kept.map(\.offset),
                                                                        tokens: strings, config: config, tokenizer: tokenizer,
                                                                        answerInSecondSequence: pair != nil) }
                tokens += ids.count
                let pooled = outputs.poolerOutput.map { Array($0[(row * d)..<((row + 1) * d)]) }
                    ?? Array(outputs.lastHiddenState[(row * t * d)..<(row * t * d + d)])
                let norm = pooled.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
                results[positions[row]] = TextSequenceResult(text: text, tokens: strings, ids: ids,
                                                             pooledNorm: norm, pooledFirstValues: Array(pooled.prefix(8)), head: reading)
            }
            if outputURL != nil { written.append((inputs, outputs)) }
        }
        let sequences = results.compactMap { $0 }
        let seconds = Date().timeIntervalSince(start)
        if let outputURL {
            try Checkpoints.write(try Self.referenceTensors(joining: written, config: config), to: outputURL, format: .hdf5)
        }
        return TextRunResult(checkpoint: url.path, tokenizer: tokenizerSource, sequences: sequences, tokens: tokens, seconds: seconds,
                             tokensPerSecond: seconds > 0 ? Double(tokens) / seconds : 0, batchSize: batchSize, output: outputURL?.path)
    }

    /// The reference layout of several batches of one sequence length, joined along the batch axis.
    static func referenceTensors(joining batches: [(ModelInputs, ModelOutputs)], config: ModelConfig) throws -> StateDict {
        guard let first = batches.first else { throw PipelineError.unusableInput(path: "text", reason: "no sequences") }
        var inputs = first.0, outputs = first.1
        for (moreInputs, moreOutputs) in batches.dropFirst() {
            inputs.batchSize += moreInputs.batchSize
            inputs.inputIds += moreInputs.inputIds
            inputs.attentionMask = (inputs.attentionMask ?? []) + (moreInputs.attentionMask ?? [])
            inputs.tokenTypeIds = (inputs.tokenTypeIds ?? []) + (moreInputs.tokenTypeIds ?? [])
            outputs.lastHiddenState += moreOutputs.lastHiddenState
            if let pooled = moreOutputs.poolerOutput { outputs.poolerOutput = (outputs.poolerOutput ?? []) + pooled }
            for index in outputs.hiddenStates.indices { outputs.hiddenStates[index] += moreOutputs.hiddenStates[index] }
            for (layer, trace) in moreOutputs.memoryTraces {
                guard var joined = outputs.memoryTraces[layer] else { continue }
                joined.indices += trace.indices
                joined.weights += trace.weights
                joined.queries += trace.queries
                joined.shape[0] += trace.shape[0]
                outputs.memoryTraces[layer] = joined
            }
        }
        return try ReferenceLayout.tensors(inputs: inputs, outputs: outputs, config: config)
    }
}

extension LoadedCheckpoint {
    /// `usage` over a text corpus (one sequence per non-empty line), streamed in batches of ``UsageOptions/batchSize``
    /// lines: memory holds one batch and the per-slot tables, whatever the corpus size.
    /// - Parameter progress: called after each batch.
    /// - Throws: ``PipelineError``, ``FormatError``, the tokenizer's errors.
    public func usage(textFile: URL, options: UsageOptions = UsageOptions(),
                      progress: ((CorpusProgress) -> Void)? = nil) throws -> UsageReport {
        let batchSize = options.batchSize, maxLength = options.maxLength
        guard batchSize > 0 else { throw PipelineError.invalidSetting(.batchSize, value: nil, reason: "must be at least 1, is \(batchSize)") }
        let model = try model()
        guard let memory = model.config.memory else {
            throw PipelineError.unusableInput(path: url.path, reason: "the checkpoint has no memory layers (its config has no pkm object)")
        }
        let (tokenizer, _) = try tokenizer()
        var accumulators = memory.layers.sorted().map {
            UsageAccumulator(layer: $0, mode: memory.mode(ofLayer: $0) ?? .residual, slots: memory.slotCount, heads: memory.headCount)
        }
        // Lines are read in pools of 16 batches and grouped by token count, so a batch pads to a
        // length near its own lines' (usage counts do not depend on the order of the sequences).
        var pools = try TextLines(url: textFile, batchSize: batchSize * 16).batches()
        let start = Date()
        var sequences = 0, tokens = 0, longest = 0
        let limit = maxLength ?? (tokenizer.truncation == nil ? model.config.maxPositionEmbeddings - (model.config.modelType == .roberta ? model.config.padTokenId + 1 : 0) : nil)
        while let pool = try pools.next() {
            let lengths = try pool.lines.map { try tokenizer.encode($0, maxLength: limit).ids.count }
            let order = pool.lines.indices.sorted { lengths[$0] < lengths[$1] }
            for batchStart in stride(from: 0, to: order.count, by: batchSize) {
                let lines = order[batchStart..<min(order.count, batchStart + batchSize)].map { pool.lines[$0] }
                let inputs = try TextInputs.encode(lines, tokenizer: tokenizer, config: model.config, maxLength: maxLength)
                let outputs: ModelOutputs
                do {
                    outputs = try model.forward(inputs, collectMemoryTraces: true)
                } catch let error as ModelError {
                    throw PipelineError.model(checkpoint: url.path, underlying: error)
                }
                for index in accumulators.indices {
                    if let trace = outputs.memoryTraces[accumulators[index].layer] { accumulators[index].add(trace, mask: inputs.attentionMask) }
                }
                sequences += inputs.batchSize
                tokens += inputs.attentionMask?.reduce(0, +) ?? inputs.inputIds.count
                longest = max(longest, inputs.sequenceLength)
                // Bytes: this pool's share, in proportion to the lines done.
                let poolStart = pool.bytesRead - pool.lines.reduce(0) { $0 + $1.utf8.count + 1 }
                let done = max(0, poolStart) + (pool.bytesRead - max(0, poolStart)) * min(order.count, batchStart + batchSize) / max(order.count, 1)
                progress?(CorpusProgress(sequences: sequences, tokens: tokens, bytesRead: min(done, pool.totalBytes),
                                         totalBytes: pool.totalBytes, seconds: Date().timeIntervalSince(start)))
            }
        }
        guard sequences > 0 else { throw PipelineError.unusableInput(path: textFile.path, reason: "the file has no non-empty lines") }
        return UsageReport(checkpoint: url.path, inputs: textFile.path, batchSize: sequences, sequenceLength: longest,
                           layers: accumulators.map(\.usage))
    }
}
