import Foundation
import PKMFormats
import PKMTensor

/// The storage dtype an output asks for: keep each tensor's dtype, or store floating-point tensors as one type.
public enum DTypePolicy: String, Sendable, Codable, CaseIterable {
    case keep, f32, f16, bf16

    /// The target for a tensor currently stored as `dtype` (integers and bools are never changed).
    public func target(for dtype: DType) -> DType {
        guard dtype.isFloatingPoint else { return dtype }
        switch self {
        case .keep: return dtype
        case .f32: return .float32
        case .f16: return .float16
        case .bf16: return .bfloat16
        }
    }

    /// Warnings for a conversion of tensors stored as `sources` to `targets` (pairwise): every
    /// narrowing (to fewer bytes, rounded to nearest even, once), and every float16 ⇄ bfloat16
    /// change, which keeps the size but loses precision (float16 → bfloat16: 10 → 7 mantissa
    /// bits) or range (bfloat16 → float16: values beyond ±65,504 become infinite).
    public static func conversionDiagnostics(from sources: [DType], to targets: [DType]) -> [Diagnostic] {
        var narrowed: [DType: Int] = [:], toBFloat16 = 0, toFloat16 = 0
        for (source, target) in zip(sources, targets) where source != target {
            if source.byteSize > target.byteSize { narrowed[target, default: 0] += 1 }
            if source == .float16 && target == .bfloat16 { toBFloat16 += 1 }
            if source == .bfloat16 && target == .float16 { toFloat16 += 1 }
        }
        var diagnostics: [Diagnostic] = []
        for (target, count) in narrowed.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            diagnostics.append(Diagnostic(.warning, "\(count) \(count == 1 ? "tensor" : "tensors") narrowed to \(target) (rounded to nearest even, once); values change"))
        }
        if toBFloat16 > 0 {
            diagnostics.append(Diagnostic(.warning, "\(toBFloat16) float16 \(toBFloat16 == 1 ? "tensor" : "tensors") stored as bfloat16: same size, but 7 mantissa bits instead of 10; values change"))
        }
        if toFloat16 > 0 {
            diagnostics.append(Diagnostic(.warning, "\(toFloat16) bfloat16 \(toFloat16 == 1 ? "tensor" : "tensors") stored as float16: same size, but values beyond ±65,504 become infinite and tiny values lose precision"))
        }
        return diagnostics
    }
}

/// Options shared by the operations that write a checkpoint.
public struct OutputOptions: Sendable {
    /// Output format; inferred from the destination's extension when nil.
    public var format: CheckpointFormat?
    /// Storage dtype of floating-point tensors.
    public var dtype: DTypePolicy = .keep
    /// Writer options (zstd level, frame size, threads).
    public var write = WriteOptions()
    /// How the output's provenance describes the operation (a front end records its own command);
    /// nil: the operation's own description.
    public var operation: String?
    public init() {}

    /// The destination format: explicit, or from the extension.
    /// - Throws: ``PipelineError/unusableInput(path:reason:)`` naming the extensions and ``Setting/outputFormat``.
    public func resolvedFormat(for destination: URL) throws -> CheckpointFormat {
        if let format { return format }
        guard let inferred = CheckpointFormat(pathExtension: destination.pathExtension) else {
            let named = destination.pathExtension.isEmpty ? "has no extension" : "ends in '.\(destination.pathExtension)', which names no format"
            throw PipelineError.unusableInput(path: destination.path, reason: "could not write: the output \(named); end it in .h5, .safetensors or .pkmz, or pass \(setting: .outputFormat, "hdf5|safetensors|pkmz"); nothing was left at the destination")
        }
        return inferred
    }
}
