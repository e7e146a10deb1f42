import CBLAS
import Foundation
import PKMTensor

/// One transformer encoder layer, optionally carrying a product-key memory (`schemas/pkm-checkpoints.md` §3).
public struct EncoderLayer: Sendable {
    let index: Int
    let config: ModelConfig
    let qkvWeight: [Float]   // [3d, d]: query, key, value stacked
    let qkvBias: [Float]     // [3d]
    let attentionOutputWeight: [Float]
    let attentionOutputBias: [Float]
    let attentionNormWeight: [Float]
    let attentionNormBias: [Float]
    let intermediateWeight: [Float]?
    let intermediateBias: [Float]?
    let outputWeight: [Float]?
    let outputBias: [Float]?
    let outputNormWeight: [Float]
    let outputNormBias: [Float]
    /// The memory and how it attaches, if this layer has one.
    public let memory: ProductKeyMemory?
    /// The memory's mode, if any.
    public let memoryMode: MemoryMode?

    /// The tensors layer `index` owns under `config`.
    public static func parameterSpecs(_ config: ModelConfig, index: Int) -> [ParameterSpec] {
        let p = ParameterNames.layerPrefix(index), d = config.hiddenSize, ff = config.intermediateSize
        typealias L = ParameterNames.Layer
        var specs: [ParameterSpec] = []
        for name in [L.query, L.key, L.value, L.attentionOutput] {
            specs.append(ParameterSpec(name: p + name + ".weight", shape: [d, d]))
            specs.append(ParameterSpec(name: p + name + ".bias", shape: [d]))
        }
        specs.append(ParameterSpec(name: p + L.attentionNorm + ".weight", shape: [d]))
        specs.append(ParameterSpec(name: p + L.attentionNorm + ".bias", shape: [d]))
        let mode = config.memory?.mode(ofLayer: index)
        if mode != .replace {
            specs.append(ParameterSpec(name: p + L.intermediate + ".weight", shape: [ff, d]))
            specs.append(ParameterSpec(name: p + L.intermediate + ".bias", shape: [ff]))
            specs.append(ParameterSpec(name: p + L.output + ".weight", shape: [d, ff]))
            specs.append(ParameterSpec(name: p + L.output + ".bias", shape: [d]))
        }
        specs.append(ParameterSpec(name: p + L.outputNorm + ".weight", shape: [d]))
        specs.append(ParameterSpec(name: p + L.outputNorm + ".bias", shape: [d]))
        if let memoryConfig = config.memory, mode != nil {
            specs += ProductKeyMemory.parameterSpecs(prefix: p + L.memory + ".", config: memoryConfig, inputWidth: d,
                                                     ownsValues: memoryConfig.valueOwner(ofLayer: index) == index)
        }
        return specs
    }

    init(config: ModelConfig, index: Int, loader: WeightLoader) throws {
        self.index = index
        self.config = config
        let p = ParameterNames.layerPrefix(index), d = config.hiddenSize, ff = config.intermediateSize
        typealias L = ParameterNames.Layer
        qkvWeight = try loader.floats(p + L.query + ".weight", [d, d]) + loader.floats(p + L.key + ".weight", [d, d])
            + loader.floats(p + L.value + ".weight", [d, d])
        qkvBias = try loader.floats(p + L.query + ".bias", [d]) + loader.floats(p + L.key + ".bias", [d])
            + loader.floats(p + L.value + ".bias", [d])
        attentionOutputWeight = try loader.floats(p + L.attentionOutput + ".weight", [d, d])
        attentionOutputBias = try loader.floats(p + L.attentionOutput + ".bias", [d])
        attentionNormWeight = try loader.floats(p + L.attentionNorm + ".weight", [d])
        attentionNormBias = try loader.floats(p + L.attentionNorm + ".bias", [d])
        let mode = config.memory?.mode(ofLayer: index)
        memoryMode = mode
        if mode == .replace {
            intermediateWeight = nil; intermediateBias = nil; outputWeight = nil; outputBias = nil
        } else {
            intermediateWeight = try loader.floats(p + L.intermediate + ".weight", [ff, d])
            intermediateBias = try loader.floats(p + L.intermediate + ".bias", [ff])
            outputWeight = try loader.floats(p + L.output + ".weight", [d, ff])
            outputBias = try loader.floats(p + L.output + ".bias", [d])
        }
        outputNormWeight = try loader.floats(p + L.outputNorm + ".weight", [d])
        outputNormBias = try loader.floats(p + L.outputNorm + ".bias", [d])
        if let memoryConfig = config.memory, mode != nil {
            let owner = memoryConfig.valueOwner(ofLayer: index)
            memory = try ProductKeyMemory(prefix: p + L.memory + ".", valuesPrefix: ParameterNames.layerPrefix(owner) + L.memory + ".",
                                          config: memoryConfig, inputWidth: d, loader: loader)
        } else {
            memory = nil
        }
    }

    /// Runs the layer in place on `hidden` `[batch·sequence, d]`.
    func forward(_ hidden: UnsafeMutablePointer<Float>, batch: Int, sequence: Int, additiveMask: [Float],
                 trace: ProductKeyMemory.Trace?,
                 profile: ForwardProfile? = nil, workspace: ForwardWorkspace = ForwardWorkspace()) {
        var mark = ForwardProfile.now()
        let d = config.hiddenSize, rows = batch * sequence
        let heads = config.attentionHeadCount, headSize = config.attentionHeadSize
        let scale = 1 / Float(headSize).squareRoot()
        // Self-attention. Every buffer below is fully overwritten before it is read.
        let qkv = workspace.buffer(.qkv, count: rows * 3 * d)
        let context = workspace.buffer(.context, count: rows * d)
        Compute.linear(hidden, rows: rows, inFeatures: d, weight: qkvWeight, bias: qkvBias, outFeatures: 3 * d, into: qkv, blockRows: sequence)
        additiveMask.withUnsafeBufferPointer { mask in
            let base = UnsafePointer(qkv), out = context
            _ = Compute.singleThreadedBLAS
            Compute.parallelChunks(batch * heads) { start, end in
                var probabilities = [Float](repeating: 0, count: sequence * sequence)
                probabilities.withUnsafeMutableBufferPointer { pBuffer in
                    let p = pBuffer.baseAddress!
                    for job in start..<end {
                        let b = job / heads, head = job % heads
                        let q = base + b * sequence * 3 * d + head * headSize
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(sequence), Int32(sequence), Int32(headSize),
                                    scale, q, Int32(3 * d), q + d, Int32(3 * d), 0, p, Int32(sequence))
                        for i in 0..<sequence {
                            Compute.maskedSoftmax(p + i * sequence, mask: mask.baseAddress! + b * sequence, count: sequence)
                        }
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(sequence), Int32(headSize), Int32(sequence),
                                    1, p, Int32(sequence), q + 2 * d, Int32(3 * d), 0,
                                    out + b * sequence * d + head * headSize, Int32(d))
                    }
                }
            }
        }
        profile?.add("attention", since: &mark)
        // a = LN(x + Wo·context)
        let a = workspace.buffer(.attention, count: rows * d)
        let epsilon = Float(config.layerNormEpsilon)
        Compute.linearResidualLayerNorm(context, rows: rows, inFeatures: d, weight: attentionOutputWeight, bias: attentionOutputBias,
                                        outFeatures: d, residual: hidden, normWeight: attentionNormWeight, normBias: attentionNormBias,
                                        epsilon: epsilon, into: a, blockRows: sequence)
        profile?.add("attention", since: &mark)
        // y = LN_out(a + FFN(a) [+ M(a)]) per mode; the sum is built in `hidden`.
        let memoryInSum = memory != nil && (memoryMode == .replace || memoryMode == .residual)
        if let intermediateWeight, let intermediateBias, let outputWeight, let outputBias {
            let ff = config.intermediateSize
            let intermediate = workspace.buffer(.intermediate, count: rows * ff)
            Compute.linear(a, rows: rows, inFeatures: d, weight: intermediateWeight, bias: intermediateBias, outFeatures: ff, into: intermediate,
                           blockRows: sequence, gelu: true)
            if !memoryInSum {
                // No memory in the sum: bias, residual and LayerNorm run inside the GEMM jobs.
                Compute.linearResidualLayerNorm(intermediate, rows: rows, inFeatures: ff, weight: outputWeight, bias: outputBias,
                                                outFeatures: d, residual: a, normWeight: outputNormWeight, normBias: outputNormBias,
                                                epsilon: epsilon, into: hidden, blockRows: sequence)
                profile?.add("feed_forward", since: &mark)
                applyMemoryAfter(hidden, rows: rows, sequence: sequence, trace: trace, profile: profile, mark: &mark, workspace: workspace)
                return
            }
            Compute.linear(intermediate, rows: rows, inFeatures: ff, weight: outputWeight, bias: outputBias, outFeatures: d, into: hidden, blockRows: sequence)
        } else {
            hidden.update(repeating: 0, count: rows * d)
        }
        profile?.add("feed_forward", since: &mark)
        // hidden = FFN(a) (or 0); add a, then memory for replace/residual (the order PyTorch adds them).
        if let memory, memoryMode == .replace || memoryMode == .residual {
            let m = workspace.zeroed(.memoryOutput, count: rows * d)
            memory.forward(a, rows: rows, blockRows: sequence, addingInto: m, trace: trace,
                           workspace: workspace)
            if memoryMode == .replace {
                for i in 0..<(rows * d) { hidden[i] = m[i] + a[i] }
            } else {
                Compute.addRows(hidden, m, a, count: rows * d)
            }
            profile?.add("memory", since: &mark)
        } else {
            Compute.add(hidden, a, count: rows * d)
        }
        Compute.layerNorm(hidden, rows: rows, width: d, weight: outputNormWeight, bias: outputNormBias, epsilon: epsilon)
        profile?.add("feed_forward", since: &mark)
        applyMemoryAfter(hidden, rows: rows, sequence: sequence, trace: trace, profile: profile, mark: &mark, workspace: workspace)
    }

    /// Adds the memory of an `after` layer to the layer's output `hidden` `[rows, d]`.
    private func applyMemoryAfter(_ hidden: UnsafeMutablePointer<Float>, rows: Int, sequence: Int, trace: ProductKeyMemory.Trace?,
                                  profile: ForwardProfile?, mark: inout UInt64, workspace: ForwardWorkspace) {
        guard let memory, memoryMode == .after else { return }
        let m = workspace.zeroed(.memoryOutput, count: rows * config.hiddenSize)
        memory.forward(hidden, rows: rows, blockRows: sequence, addingInto: m, trace: trace, workspace: workspace)
        Compute.add(hidden, m, count: rows * config.hiddenSize)
        profile?.add("memory", since: &mark)
    }
}
