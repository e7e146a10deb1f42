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
        case .halfHeadRows, .headHalfRows:
            // Blocks of d rows; block (head h, half p) sits at h·2 + p canonically, at p·H + h in lucidrains' order.
            let rows = tensor.shape[0], d = heads > 0 ? rows / (2 * heads) : 0
            let blockBytes = rows > 0 ? bytes.count / rows * d : 0
            let toCanonical = self == .halfHeadRows
            out = Self.gatherBlocks(bytes, blockBytes: blockBytes, count: 2 * heads) { target in
                let (head, half) = toCanonical ? (target / 2, target % 2) : (target % heads, target / heads)
                return toCanonical ? half * heads + head : head * 2 + half
            }
        case .keysSwapKeyHalf, .keysToLucidrains:
            // Blocks of one sub-key (D values): [H, N, 2, D] (lucidrains) ⇄ [H, 2, N, D] (canonical).
            let toCanonical = self == .keysSwapKeyHalf
            let (h, n, d) = (tensor.shape[0], toCanonical ? tensor.shape[1] : tensor.shape[2], tensor.shape[3])
            out = Self.gatherBlocks(bytes, blockBytes: d * size, count: h * 2 * n) { target in
                if toCanonical {
                    let (head, half, key) = (target / (2 * n), target / n % 2, target % n)
                    return (head * n + key) * 2 + half
                }
                let (head, key, half) = (target / (2 * n), target / 2 % n, target % 2)
                return (head * 2 + half) * n + key
            }
        }
        return try Tensor(dtype: tensor.dtype, shape: canonicalShape, storage: out)
    }

    /// `count` blocks of `blockBytes`, block `t` copied from block `source(t)` of `bytes` (a block outside `bytes`
    /// stays zero: shapes are validated before a transform runs, so that never happens for a checked tensor).
    static func gatherBlocks(_ bytes: Data, blockBytes: Int, count: Int, source: (Int) -> Int) -> Data {
        var out = Data(count: blockBytes * count)
        guard blockBytes > 0 else { return out }
        out.withUnsafeMutableBytes { target in
            bytes.withUnsafeBytes { from in
                guard let targetBase = target.baseAddress, let fromBase = from.baseAddress else { return }
                for block in 0..<count {
                    let start = source(block) * blockBytes
                    guard start >= 0, start + blockBytes <= from.count else { continue }
                    (targetBase + block * blockBytes).copyMemory(from: fromBase + start, byteCount: blockBytes)
                }
            }
        }
        return out
    }
}
