import Foundation

/// Tolerances for comparing float outputs.
///
/// Semantics (as swift-numerics' `isApproximatelyEqual`): `a` and `b` agree when
/// `|a − b| ≤ atol` or `|a − b| ≤ rtol · max(|a|, |b|)`. Two NaNs agree; a NaN and a number do not;
/// infinities agree only with the same infinity.
public struct Tolerance: Sendable, Codable, Equatable {
    public var absolute: Double
    public var relative: Double

    public init(absolute: Double, relative: Double) {
        self.absolute = absolute
        self.relative = relative
    }

    /// Whether `actual` agrees with `expected`.
    @inlinable
    public func accepts(_ actual: Float, _ expected: Float) -> Bool {
        if actual.isNaN || expected.isNaN { return actual.isNaN && expected.isNaN }
        if actual.isInfinite || expected.isInfinite { return actual == expected }
        let difference = Double(abs(actual - expected))
        return difference <= absolute || difference <= relative * Double(max(abs(actual), abs(expected)))
    }
}

/// How one output compared with its reference.
public struct OutputComparison: Sendable, Codable {
    /// Output path in the reference file (`outputs/last_hidden_state`, …).
    public var name: String
    public var shape: [Int]
    /// `values` for float outputs, `indices` for memory slot ids.
    public var kind: String
    /// Elements (or, for indices, selected slots) compared.
    public var count: Int
    /// Largest |actual − expected| (float outputs).
    public var maxAbsoluteDifference: Double
    /// Largest |actual − expected| / max(|actual|, |expected|) over elements with a non-zero magnitude.
    public var maxRelativeDifference: Double
    /// Multi-index of the element with the largest absolute difference.
    public var worstIndex: [Int]
    public var worstActual: Double?
    public var worstExpected: Double?
    /// Elements beyond tolerance (float outputs) or slot ids that differ at different weights (indices).
    public var beyondTolerance: Int
    /// Slot ids that differ where the weights are tied (indices only): not failures.
    public var ties: Int
    public var passed: Bool
}

enum Compare {
    static func multiIndex(_ flat: Int, shape: [Int]) -> [Int] {
        var index = [Int](repeating: 0, count: shape.count)
        var rest = flat
        for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] > 0 {
            index[axis] = rest % shape[axis]
            rest /= shape[axis]
        }
        return index
    }

    /// Element-wise comparison of float outputs.
    static func values(name: String, actual: [Float], expected: [Float], shape: [Int], tolerance: Tolerance) -> OutputComparison {
        var maxAbsolute = 0.0, maxRelative = 0.0, worst = 0, beyond = 0
        var worstIsNaN = false
        for i in 0..<min(actual.count, expected.count) {
            let a = actual[i], e = expected[i]
            if !tolerance.accepts(a, e) { beyond += 1 }
            if a.isNaN || e.isNaN || a.isInfinite || e.isInfinite {
                if !(a.isNaN && e.isNaN) && a != e && !worstIsNaN {
                    worstIsNaN = true
                    worst = i
                    maxAbsolute = .infinity
                }
                continue
            }
            let difference = Double(abs(a - e))
            if difference > maxAbsolute && !worstIsNaN { maxAbsolute = difference; worst = i }
            let magnitude = Double(max(abs(a), abs(e)))
            if magnitude > 0 { maxRelative = max(maxRelative, difference / magnitude) }
        }
        if actual.count != expected.count { beyond += abs(actual.count - expected.count) }
        return OutputComparison(name: name, shape: shape, kind: "values", count: expected.count,
                                maxAbsoluteDifference: maxAbsolute, maxRelativeDifference: maxRelative,
                                worstIndex: multiIndex(worst, shape: shape),
                                worstActual: worst < actual.count ? Double(actual[worst]) : nil,
                                worstExpected: worst < expected.count ? Double(expected[worst]) : nil,
                                beyondTolerance: beyond, ties: 0, passed: beyond == 0)
    }

    /// Slot-id comparison. Rows are `[…, k]`, score-descending.
    ///
    /// A differing id at rank j counts as a tie (not a failure) only when the two results agree on
    /// the weight at rank j and that weight is tied in the reference: either with another rank of
    /// the same row (equal scores listed in another order) or with every rank from j to the last
    /// (equal scores at the top-k boundary, where the reference kept a slot this run did not).
    /// PyTorch's top-k gives no order among equal scores; this run breaks ties by lower slot id.
    static func indices(name: String, actual: [Int32], expected: [Int64], actualWeights: [Float], expectedWeights: [Float]?,
                        shape: [Int], tolerance: Tolerance) -> OutputComparison {
        let k = max(shape.last ?? 1, 1)
        var mismatches = 0, ties = 0, firstBad = -1
        let count = min(actual.count, expected.count)
        var rowStart = 0
        while rowStart < count {
            let rowEnd = min(count, rowStart + k)
            for i in rowStart..<rowEnd where Int64(actual[i]) != expected[i] {
                var tied = false
                if let weights = expectedWeights, rowEnd <= weights.count, rowEnd <= actualWeights.count,
                   tolerance.accepts(actualWeights[i], weights[i]) {
                    let withinRow = (rowStart..<rowEnd).contains { $0 != i && tolerance.accepts(weights[$0], weights[i]) }
                    let atBoundary = (i..<rowEnd).allSatisfy { tolerance.accepts(weights[$0], weights[i]) }
                    tied = withinRow || atBoundary
                }
                if tied { ties += 1 } else {
                    mismatches += 1
                    if firstBad < 0 { firstBad = i }
                }
            }
            rowStart = rowEnd
        }
        if actual.count != expected.count { mismatches += abs(actual.count - expected.count) }
        let worst = max(firstBad, 0)
        return OutputComparison(name: name, shape: shape, kind: "indices", count: expected.count,
                                maxAbsoluteDifference: 0, maxRelativeDifference: 0,
                                worstIndex: firstBad >= 0 ? multiIndex(worst, shape: shape) : [],
                                worstActual: firstBad >= 0 && worst < actual.count ? Double(actual[worst]) : nil,
                                worstExpected: firstBad >= 0 && worst < expected.count ? Double(expected[worst]) : nil,
                                beyondTolerance: mismatches, ties: ties, passed: mismatches == 0)
    }
}
