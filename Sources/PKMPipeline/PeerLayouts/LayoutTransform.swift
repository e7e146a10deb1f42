import Foundation
import PKMModel
import PKMTensor

/// How a source tensor's bytes become the canonical tensor (a pure re-ordering; values are never changed).
public enum LayoutTransform: String, Sendable, Codable {
    /// Rows in lucidrains' (half p, head h, dim) order → canonical (head, half, dim); for `[H·K, in]` and `[H·K]`.
    case halfHeadRows = "rows (half, head, dim) -> (head, half, dim)"
    /// `[H, N, 2, D]` → `[H, 2, N, D]` (`keys.permute(0, 2, 1, 3)`).
    case keysSwapKeyHalf = "keys [H, N, 2, D] -> [H, 2, N, D]"
    /// `[2·H·N, D]` → `[H, 2, N, D]`, same bytes (Meta).
    case keysReshape = "keys [2HN, D] -> [H, 2, N, D] (reshape)"
    /// `[N, D]` shared by heads and halves → `[H, 2, N, D]` (XLM `mem_use_different_keys=False`).
    case keysBroadcast = "keys [N, D] -> [H, 2, N, D] (broadcast)"
    /// Export: canonical (head, half, dim) rows → lucidrains' (half, head, dim).
    case headHalfRows = "rows (head, half, dim) -> (half, head, dim)"
    /// Export: canonical `[H, 2, N, D]` → lucidrains' `[H, N, 2, D]`.
    case keysToLucidrains = "keys [H, 2, N, D] -> [H, N, 2, D]"

    /// The transform that writes the canonical tensor back in the peer's order on export; nil when the peer reads
    /// the canonical bytes as they are (Meta's reshape) or they cannot go back (XLM's broadcast keeps one copy).
    var inverse: LayoutTransform? {
        switch self {
        case .halfHeadRows: return .headHalfRows
        case .keysSwapKeyHalf: return .keysToLucidrains
        case .headHalfRows: return .halfHeadRows
        case .keysToLucidrains: return .keysSwapKeyHalf
        case .keysReshape, .keysBroadcast: return nil
        }
    }

    /// The shape of the transformed tensor, given the source `shape` and H (nil when the shape does not fit).
    func resultShape(of shape: [Int], heads: Int) -> [Int]? {
        switch self {
        case .halfHeadRows:
            guard heads > 0, let rows = shape.first, rows % (2 * heads) == 0 else { return nil }
            return shape
        case .headHalfRows:
            return shape
        case .keysSwapKeyHalf:
            return shape.count == 4 && shape[2] == 2 ? [shape[0], 2, shape[1], shape[3]] : nil
        case .keysReshape:
            guard heads > 0, shape.count == 2, shape[0] % (2 * heads) == 0 else { return nil }
            return [heads, 2, shape[0] / (2 * heads), shape[1]]
        case .keysBroadcast:
            return shape.count == 2 ? [heads, 2, shape[0], shape[1]] : nil
        case .keysToLucidrains:
            return shape.count == 4 && shape[1] == 2 ? [shape[0], shape[2], 2, shape[3]] : nil
        }
    }

    /// Applies the transform; `heads` is H, `canonicalShape` the result's shape.
    /// - Throws: ``TensorError`` when the element count disagrees (a corrupt shape).
    func apply(to tensor: Tensor, heads: Int, canonicalShape: [Int]) throws -> Tensor {
        let size = tensor.dtype.byteSize
        let bytes = tensor.storage
        var out = Data(count: (ShapeMath.elementCount(canonicalShape) ?? 0) * size)
        switch self {
        case .keysReshape:
            out = bytes
        case .keysBroadcast:
            out = Data()
            for _ in 0..<(2 * heads) { out.append(bytes) }
        case .halfHeadRows:
            let rows = tensor.shape[0], rowBytes = rows > 0 ? bytes.count / rows : 0, d = rows / (2 * heads)
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for h in 0..<heads { for p in 0..<2 {
                        let canonical = (h * 2 + p) * d, original = (p * heads + h) * d
                        target.baseAddress!.advanced(by: canonical * rowBytes)
                            .copyMemory(from: source.baseAddress!.advanced(by: original * rowBytes), byteCount: d * rowBytes)
                    } }
                }
            }
        case .headHalfRows:
            let rows = tensor.shape[0], rowBytes = rows > 0 ? bytes.count / rows : 0, d = rows / (2 * heads)
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for h in 0..<heads { for p in 0..<2 {
                        let canonical = (h * 2 + p) * d, lucidrains = (p * heads + h) * d
                        target.baseAddress!.advanced(by: lucidrains * rowBytes)
                            .copyMemory(from: source.baseAddress!.advanced(by: canonical * rowBytes), byteCount: d * rowBytes)
                    } }
                }
            }
        case .keysToLucidrains:
            let (h, n, d) = (tensor.shape[0], tensor.shape[2], tensor.shape[3]), chunk = d * size
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for head in 0..<h { for key in 0..<n { for p in 0..<2 {
                        target.baseAddress!.advanced(by: ((head * n + key) * 2 + p) * chunk)
                            .copyMemory(from: source.baseAddress!.advanced(by: ((head * 2 + p) * n + key) * chunk), byteCount: chunk)
                    } } }
                }
            }
        case .keysSwapKeyHalf:
            let (h, n, d) = (tensor.shape[0], tensor.shape[1], tensor.shape[3]), chunk = d * size
            out.withUnsafeMutableBytes { target in
                bytes.withUnsafeBytes { source in
                    for head in 0..<h { for key in 0..<n { for p in 0..<2 {
                        target.baseAddress!.advanced(by: ((head * 2 + p) * n + key) * chunk)
                            .copyMemory(from: source.baseAddress!.advanced(by: ((head * n + key) * 2 + p) * chunk), byteCount: chunk)
                    } } }
                }
            }
        }
        return try Tensor(dtype: tensor.dtype, shape: canonicalShape, storage: out)
    }
}
