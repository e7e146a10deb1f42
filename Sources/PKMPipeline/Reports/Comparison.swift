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
    /// Vocabulary logits only: the fraction of compared positions (real tokens) where this run's highest logit is
    /// the reference's (or one of the reference's exactly tied highest).
    public var top1Agreement: Double? = nil
    /// Vocabulary logits only: the positions behind ``top1Agreement`` and ``meanKLDivergence``.
    public var distributionPositions: Int? = nil
    /// Vocabulary logits only: the mean over those positions of KL(reference ‖ this run) between the two softmaxes,
    /// in nats (0 when they agree; a float16 or bfloat16 conversion shows here as a small positive number).
    public var meanKLDivergence: Double? = nil
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

    /// Slot-id comparison. Rows are `[…, heads, k]`, score-descending; row r is head `r % heads`
    /// of token `r / heads`.
    ///
    /// Ties are exact. Within a row, ranks whose reference weights are exactly equal form a tie
    /// group (without reference weights every rank is its own group). A group passes when this
    /// run selected the same set of slot ids at those ranks, in any order (PyTorch's top-k gives
    /// no order among equal scores; this run breaks ties by lower slot id): each id in another
    /// position counts as a tie. A group may hold different members only when this model scores
    /// each reference-only slot the same (within `tolerance`) as each slot it chose instead:
    /// equal scores where the reference kept a slot this run did not. That happens at the top-k
    /// boundary, and also inside the list when two sub-keys tie at a half's top-k boundary (the
    /// XLM search keeps one of the twins, so the grid holds (a, b) here and (a', b) there).
    /// Everything else is a mismatch, whatever the weights: a slot id the model does not score
    /// like the reference's weights say is never excused.
    /// - Parameter score: this model's score of a slot for (token, head), or nil when unknown
    ///   (out of range): then a boundary difference is a mismatch.
    static func indices(name: String, actual: [Int64], expected: [Int64], expectedWeights: [Float]?,
                        shape: [Int], heads: Int, tolerance: Tolerance,
                        score: (_ token: Int, _ head: Int, _ slot: Int64) -> Float?) -> OutputComparison {
        let k = max(shape.last ?? 1, 1)
        var mismatches = 0, ties = 0, firstBad = -1
        let count = min(actual.count, expected.count)
        let weights = expectedWeights.flatMap { $0.count >= count ? $0 : nil }
        func sameWeight(_ a: Float, _ b: Float) -> Bool { a == b || (a.isNaN && b.isNaN) }
        var rowStart = 0
        while rowStart < count {
            let rowEnd = min(count, rowStart + k)
            let row = rowStart / k, token = row / max(heads, 1), head = row % max(heads, 1)
            var groupStart = rowStart
            while groupStart < rowEnd {
                var groupEnd = groupStart + 1
                if let weights {
                    while groupEnd < rowEnd, sameWeight(weights[groupEnd], weights[groupStart]) { groupEnd += 1 }
                }
                let group = groupStart..<groupEnd
                let differing = group.filter { actual[$0] != expected[$0] }
                if !differing.isEmpty {
                    var referenceOnly = expected[group].sorted(), chosenOnly = actual[group].sorted()
                    Self.removeCommon(&referenceOnly, &chosenOnly)
                    var tied = referenceOnly.isEmpty
                    if !tied {
                        // Every slot on either side must score alike under this model.
                        let scores = (referenceOnly + chosenOnly).map { score(token, head, $0) }
                        if let first = scores.first ?? nil, scores.allSatisfy({ $0 != nil }) {
                            tied = scores.allSatisfy { tolerance.accepts($0!, first) }
                        }
                    }
                    if tied { ties += differing.count } else {
                        mismatches += differing.count
                        if firstBad < 0 { firstBad = differing[0] }
                    }
                }
                groupStart = groupEnd
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

    /// Top-1 agreement and mean KL(reference ‖ actual) of the softmaxes of vocabulary logits `[rows, width]`, over the
    /// rows `include` accepts (real tokens). Computed in float64 with the max subtracted, so large logits do not
    /// overflow. Rows holding a NaN or an infinity are counted as disagreeing and left out of the KL mean.
    static func distributions(actual: [Float], expected: [Float], width: Int, include: (Int) -> Bool)
        -> (agreement: Double, positions: Int, meanKL: Double) {
        let rows = width > 0 ? min(actual.count, expected.count) / width : 0
        var positions = 0, agreeing = 0, finiteRows = 0
        var totalKL = 0.0
        for row in 0..<rows where include(row) {
            positions += 1
            let a = actual[(row * width)..<((row + 1) * width)], e = expected[(row * width)..<((row + 1) * width)]
            guard a.allSatisfy(\.isFinite), e.allSatisfy(\.isFinite) else { continue }
            let expectedMax = e.max()!, actualMax = a.max()!
            if let best = a.firstIndex(of: actualMax), e[best] == expectedMax { agreeing += 1 }
            func logSoftmax(_ values: ArraySlice<Float>, _ top: Float) -> [Double] {
                let shifted = values.map { Double($0) - Double(top) }
                let logSum = log(shifted.reduce(0) { $0 + exp($1) })
                return shifted.map { $0 - logSum }
            }
            let logP = logSoftmax(e, expectedMax), logQ = logSoftmax(a, actualMax)
            var kl = 0.0
            for i in 0..<width { kl += exp(logP[i]) * (logP[i] - logQ[i]) }
            totalKL += max(kl, 0)
            finiteRows += 1
        }
        return (positions == 0 ? 1 : Double(agreeing) / Double(positions), positions, finiteRows == 0 ? 0 : totalKL / Double(finiteRows))
    }

    /// Removes the elements two sorted arrays share (as multisets), leaving each side's own.
    static func removeCommon(_ left: inout [Int64], _ right: inout [Int64]) {
        var onlyLeft: [Int64] = [], onlyRight: [Int64] = []
        var i = 0, j = 0
        while i < left.count || j < right.count {
            if j == right.count || (i < left.count && left[i] < right[j]) { onlyLeft.append(left[i]); i += 1 }
            else if i == left.count || right[j] < left[i] { onlyRight.append(right[j]); j += 1 }
            else { i += 1; j += 1 }
        }
        left = onlyLeft
        right = onlyRight
    }
}
