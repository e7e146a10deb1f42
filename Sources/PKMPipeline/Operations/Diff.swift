import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

/// How one tensor differs between two checkpoints.
public struct TensorDifference: Sendable, Codable, Equatable {
    /// Canonical name (`schemas/pkm-checkpoints.md` §1; the source names of A and B may differ by prefix or alias).
    public var name: String
    public var nameInA: String
    public var nameInB: String
    public var dtypeA: DType
    public var dtypeB: DType
    public var shapeA: [Int]
    public var shapeB: [Int]
    /// Elements compared (0 when the shapes differ).
    public var elements: Int
    /// Elements whose values differ by more than `atol` (all of them when the shapes differ).
    public var changedElements: Int
    /// Largest |a − b| over the elements (infinity when a NaN meets a number or the shapes differ).
    public var maxAbsoluteDifference: Double
    /// Whether the shapes agree (values are compared only then).
    public var sameShape: Bool
}

/// How one memory layer's value table changed: the paper's "slots never updated" measure.
public struct MemoryDifference: Sendable, Codable, Equatable {
    public var layer: Int
    /// Value rows (slots) with at least one element changed by more than `atol`.
    public var updatedSlots: Int
    /// Rows of the value table (N²).
    public var slotCount: Int
    /// 100 · updatedSlots / slotCount.
    public var updatedPercent: Double
}

/// Result of `diff A B`.
public struct DiffReport: Sendable, Codable {
    public var a: String
    public var b: String
    public var atol: Double
    /// Every tensor both checkpoints hold, in A's order.
    public var tensors: [TensorDifference]
    /// Every memory layer whose value table both hold with the same shape.
    public var memories: [MemoryDifference]
    /// Canonical names only A holds / only B holds.
    public var onlyInA: [String]
    public var onlyInB: [String]
    /// True when every shared tensor is equal within `atol` and neither side has extra tensors.
    public var identical: Bool
}

/// `diff`: compares two checkpoints tensor by tensor under canonical names, streaming (two tensors
/// in memory at a time, never a whole checkpoint).
public enum CheckpointDiff {
    /// Canonical names of a reader's tensors (first occurrence wins), in file order.
    static func canonicalNames(_ reader: any CheckpointReader) -> [(source: String, canonical: String)] {
        var seen = Set<String>()
        return reader.tensorInfos.compactMap { info in
            let canonical = KeyMapping.canonicalName(for: info.name).canonical
            return seen.insert(canonical).inserted ? (info.name, canonical) : nil
        }
    }

    /// The layer of `encoder.layer.{i}.memory.values.weight`, else nil.
    static func memoryLayer(ofValues name: String) -> Int? {
        let prefix = "encoder.layer.", suffix = "." + ParameterNames.Layer.memory + "." + ParameterNames.Memory.values
        guard name.hasPrefix(prefix), name.hasSuffix(suffix) else { return nil }
        return Int(name.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// Element and row counts of differences (rows = first dimension).
    /// Floats differ where ``Tolerance/accepts(_:_:)`` refuses them (the comparison `verify` uses); integers differ when unequal.
    static func compare(_ a: Tensor, _ b: Tensor, tolerance: Tolerance) -> (elements: Int, changed: Int, changedRows: Int, maxDifference: Double) {
        guard a.shape == b.shape else {
            return (0, max(a.elementCount, b.elementCount), a.shape.first ?? 0, .infinity)
        }
        let count = a.elementCount
        let rowWidth = a.shape.count >= 2 ? a.shape.dropFirst().reduce(1, *) : 1
        var changed = 0, changedRows = 0, maxDifference = 0.0
        if !a.dtype.isFloatingPoint && !b.dtype.isFloatingPoint {
            let x = a.int64Values(), y = b.int64Values()
            var rowChanged = false
            for i in 0..<count {
                if x[i] != y[i] {
                    changed += 1; rowChanged = true
                    maxDifference = max(maxDifference, Double(x[i].distance(to: y[i]).magnitude))
                }
                if (i + 1) % rowWidth == 0 { if rowChanged { changedRows += 1 }; rowChanged = false }
            }
            return (count, changed, changedRows, maxDifference)
        }
        let x = a.floatValues(), y = b.floatValues()
        var rowChanged = false
        x.withUnsafeBufferPointer { xs in
            y.withUnsafeBufferPointer { ys in
                for i in 0..<count {
                    let p = xs[i], q = ys[i]
                    let differs = !tolerance.accepts(p, q)
                    if p.isNaN || q.isNaN || p.isInfinite || q.isInfinite {
                        if differs { maxDifference = .infinity }
                    } else {
                        maxDifference = max(maxDifference, Double(abs(p - q)))
                    }
                    if differs { changed += 1; rowChanged = true }
                    if (i + 1) % rowWidth == 0 { if rowChanged { changedRows += 1 }; rowChanged = false }
                }
            }
        }
        return (count, changed, changedRows, maxDifference)
    }
}

/// Options of ``LoadedCheckpoint/diff(against:options:progress:)``.
public struct DiffOptions: Sendable {
    /// How far two values may be apart and still count as unchanged (``Tolerance``, the type `verify` compares with;
    /// `diff` uses an absolute tolerance only, relative 0).
    public var tolerance = Tolerance(absolute: 0, relative: 0)
    public init(atol: Double = 0) { tolerance = Tolerance(absolute: atol, relative: 0) }
}

extension LoadedCheckpoint {
    /// `diff`: compares this checkpoint (a) with `other` (b) tensor by tensor under canonical names, streaming
    /// (two tensors in memory at a time, never a whole checkpoint).
    ///
    /// Values are compared as float32 with ``DiffOptions/tolerance`` (integer and bool tensors exactly, as
    /// integers); a NaN equals only a NaN, ±infinity only itself. For `encoder.layer.{i}.memory.values.weight`
    /// present in both with the same shape, a row counts as an updated slot when any of its elements differs.
    /// - Throws: ``FormatError`` for unreadable data; ``PipelineError/invalidSetting(_:value:reason:)`` for a negative
    ///   or non-finite tolerance.
    public func diff(against other: LoadedCheckpoint, options: DiffOptions = DiffOptions(),
                     progress: ((Int, Int) -> Void)? = nil) throws -> DiffReport {
        let atol = options.tolerance.absolute
        guard atol >= 0, atol.isFinite, options.tolerance.relative >= 0, options.tolerance.relative.isFinite else {
            throw PipelineError.invalidSetting(.diffTolerance, value: nil, reason: "must be a non-negative number, is \(atol)")
        }
        let readerA = reader, readerB = other.reader
        let namesA = CheckpointDiff.canonicalNames(readerA), namesB = CheckpointDiff.canonicalNames(readerB)
        let sourceB = Dictionary(namesB.map { ($0.canonical, $0.source) }, uniquingKeysWith: { first, _ in first })
        let canonicalA = Set(namesA.map(\.canonical))
        var tensors: [TensorDifference] = [], memories: [MemoryDifference] = []
        let shared = namesA.filter { sourceB[$0.canonical] != nil }
        for (index, entry) in shared.enumerated() {
            guard let nameB = sourceB[entry.canonical] else { continue }
            let tensorA = try readerA.tensor(named: entry.source), tensorB = try readerB.tensor(named: nameB)
            let comparison = CheckpointDiff.compare(tensorA, tensorB, tolerance: options.tolerance)
            tensors.append(TensorDifference(name: entry.canonical, nameInA: entry.source, nameInB: nameB,
                                            dtypeA: tensorA.dtype, dtypeB: tensorB.dtype, shapeA: tensorA.shape, shapeB: tensorB.shape,
                                            elements: comparison.elements, changedElements: comparison.changed,
                                            maxAbsoluteDifference: comparison.maxDifference, sameShape: tensorA.shape == tensorB.shape))
            if let layer = CheckpointDiff.memoryLayer(ofValues: entry.canonical), tensorA.shape == tensorB.shape, tensorA.shape.count == 2 {
                let slots = tensorA.shape[0]
                memories.append(MemoryDifference(layer: layer, updatedSlots: comparison.changedRows, slotCount: slots,
                                                 updatedPercent: slots > 0 ? 100 * Double(comparison.changedRows) / Double(slots) : 0))
            }
            readerA.releasePages(ofTensor: entry.source)
            readerB.releasePages(ofTensor: nameB)
            progress?(index + 1, shared.count)
        }
        let onlyInA = namesA.map(\.canonical).filter { sourceB[$0] == nil }
        let onlyInB = namesB.map(\.canonical).filter { !canonicalA.contains($0) }
        let identical = onlyInA.isEmpty && onlyInB.isEmpty && tensors.allSatisfy { $0.sameShape && $0.changedElements == 0 }
        return DiffReport(a: url.path, b: other.url.path, atol: atol, tensors: tensors, memories: memories.sorted { $0.layer < $1.layer },
                          onlyInA: onlyInA, onlyInB: onlyInB, identical: identical)
    }
}
