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

    /// The tensors one encoder layer owns, each declared once (name, shape, flags):
    /// ``parameterSpecs(_:index:)`` lists them and ``init(config:index:loader:)`` loads them.
    struct Parameters: Sendable, Equatable {
        /// Self-attention projections `[d, d]`, `[d]`.
        let query: AffineParameters
        let key: AffineParameters
        let value: AffineParameters
        let attentionOutput: AffineParameters
        /// LayerNorm `[d]`.
        let attentionNorm: AffineParameters
        /// Feed-forward `[ff, d]` and `[d, ff]`; absent when the memory replaces it (``MemoryMode/replace``).
        let intermediate: AffineParameters?
        let output: AffineParameters?
        /// LayerNorm `[d]`.
        let outputNorm: AffineParameters
        /// The memory's tensors, when the layer has one.
        let memory: ProductKeyMemory.Parameters?

        /// `encoder.layer.{layer}.memory.`.
        static func memoryPrefix(_ layer: Int) -> String { ParameterNames.layerPrefix(layer) + ParameterNames.Layer.memory + "." }

        init(_ config: ModelConfig, index: Int) {
            typealias L = ParameterNames.Layer
            let p = ParameterNames.layerPrefix(index), d = config.hiddenSize, ff = config.intermediateSize
            query = AffineParameters(p + L.query, weight: [d, d], bias: [d])
            key = AffineParameters(p + L.key, weight: [d, d], bias: [d])
            value = AffineParameters(p + L.value, weight: [d, d], bias: [d])
            attentionOutput = AffineParameters(p + L.attentionOutput, weight: [d, d], bias: [d])
            attentionNorm = .norm(p + L.attentionNorm, width: d)
            let mode = config.memory?.mode(ofLayer: index)
            intermediate = mode == .replace ? nil : AffineParameters(p + L.intermediate, weight: [ff, d], bias: [ff])
            output = mode == .replace ? nil : AffineParameters(p + L.output, weight: [d, ff], bias: [d])
            outputNorm = .norm(p + L.outputNorm, width: d)
            if let memoryConfig = config.memory, mode != nil {
                memory = ProductKeyMemory.Parameters(prefix: Self.memoryPrefix(index), config: memoryConfig, inputWidth: d,
                                                     ownsValues: memoryConfig.valueOwner(ofLayer: index) == index)
            } else {
                memory = nil
            }
        }

        /// In canonical order.
        var specs: [ParameterSpec] {
            var specs: [ParameterSpec] = []
            for module in [query, key, value, attentionOutput, attentionNorm, intermediate, output, outputNorm] {
                specs += module?.specs ?? []
            }
            return specs + (memory?.specs ?? [])
        }
    }

    /// The tensors layer `index` owns under `config`.
    public static func parameterSpecs(_ config: ModelConfig, index: Int) -> [ParameterSpec] {
        Parameters(config, index: index).specs
    }

    init(config: ModelConfig, index: Int, loader: WeightLoader) throws {
        self.index = index
        self.config = config
        let parameters = Parameters(config, index: index)
        qkvWeight = try loader.floats(parameters.query.weight) + loader.floats(parameters.key.weight) + loader.floats(parameters.value.weight)
        qkvBias = try loader.floats(parameters.query.bias) + loader.floats(parameters.key.bias) + loader.floats(parameters.value.bias)
        (attentionOutputWeight, attentionOutputBias) = try loader.affine(parameters.attentionOutput)
        (attentionNormWeight, attentionNormBias) = try loader.affine(parameters.attentionNorm)
        memoryMode = config.memory?.mode(ofLayer: index)
        (intermediateWeight, intermediateBias) = try loader.affine(parameters.intermediate)
        (outputWeight, outputBias) = try loader.affine(parameters.output)
        (outputNormWeight, outputNormBias) = try loader.affine(parameters.outputNorm)
        if let memoryConfig = config.memory, let memoryParameters = parameters.memory {
            // Under shared values the table is the owner's memory's own `values` spec.
            let owner = memoryConfig.valueOwner(ofLayer: index)
            let values = owner == index ? memoryParameters.values
                : ProductKeyMemory.Parameters(prefix: Parameters.memoryPrefix(owner), config: memoryConfig, inputWidth: config.hiddenSize).values
            memory = try ProductKeyMemory(parameters: memoryParameters, values: values, config: memoryConfig, inputWidth: config.hiddenSize,
                                          loader: loader)
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
