import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

/// Slot-id verification on a PyTorch fixture whose memory meets exact ties (sub-keys from three
/// integer prototypes, so many sub-keys are identical): tie orders pass, real mismatches never do.
@Suite("Verification of slot ids at exact ties")
struct TieVerificationTests {
    static let folder = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_exact_ties")
    static var checkpoint: URL { folder.appendingPathComponent("model.safetensors") }
    static var reference: URL { folder.appendingPathComponent("reference.h5") }
    static let indicesName = "outputs.memory.1.indices", scoresName = "outputs.memory.1.scores"
    static let heads = 2, knn = 4, keyCount = 16, half = 8

    /// The reference with its slot ids replaced, written as a spec §5 HDF5 file.
    static func reference(with indices: [Int64], in folder: TemporaryFolder) throws -> URL {
        var dict = try Checkpoints.open(reference).readAll()
        dict.set(try Tensor(int64: indices, shape: dict[indicesName]!.shape), named: indicesName)
        var slashed = StateDict(metadata: dict.metadata)
        for (name, tensor) in dict.entries { try slashed.insert(tensor, named: name.replacingOccurrences(of: ".", with: "/")) }
        let url = folder.file("reference-\(UUID().uuidString.prefix(8)).h5")
        try Checkpoints.write(slashed, to: url, format: .hdf5)
        return url
    }

    static func indexReport(_ report: VerifyReport) throws -> OutputComparison {
        try #require(report.outputs.first { $0.name == "outputs/memory/1/indices" })
    }

    /// Sub-key rows `[H, 2, N, K/2]` of the memory.
    static func keys() throws -> [Float] {
        try Checkpoints.open(checkpoint).tensor(named: "bert.encoder.layer.1.memory.keys").floatValues()
    }

    @Test("the fixture really has exact ties, and verifies as PyTorch wrote it")
    func fixtureHasTies() throws {
        let dict = try Checkpoints.open(Self.reference).readAll()
        let weights = dict[Self.scoresName]!.floatValues()
        let rowsWithTies = stride(from: 0, to: weights.count, by: Self.knn).filter { start in
            (start..<(start + Self.knn - 1)).contains { weights[$0] == weights[$0 + 1] }
        }
        #expect(rowsWithTies.count > 10, "only \(rowsWithTies.count) rows with an exact tie")
        #expect(try LoadedCheckpoint(Self.checkpoint).verify(against: LoadedCheckpoint(Self.reference)).passed)
    }

    @Test("tied slots listed in another order are ties, not failures")
    func reorderedTies() throws {
        let dict = try Checkpoints.open(Self.reference).readAll()
        let weights = dict[Self.scoresName]!.floatValues()
        var indices = dict[Self.indicesName]!.int64Values()
        var swapped = 0
        for start in stride(from: 0, to: indices.count, by: Self.knn) {
            for j in start..<(start + Self.knn - 1) where weights[j] == weights[j + 1] && indices[j] != indices[j + 1] {
                indices.swapAt(j, j + 1)
                swapped += 1
                break
            }
        }
        try #require(swapped > 0)
        let folder = try TemporaryFolder()
        let report = try LoadedCheckpoint(Self.checkpoint).verify(against: LoadedCheckpoint(try Self.reference(with: indices, in: folder)))
        let ids = try Self.indexReport(report)
        #expect(report.passed)
        #expect(ids.beyondTolerance == 0 && ids.ties == 2 * swapped)
    }

    /// For each (row, rank): a slot with the same score under the model (its first-half sub-key
    /// has an identical twin) that the row does not hold, i.e. what another tie order would pick.
    static func twins(indices: [Int64], keys: [Float]) -> [(position: Int, slot: Int64)] {
        var result: [(Int, Int64)] = []
        for position in indices.indices {
            let row = position / knn, head = row % heads, slot = indices[position]
            let a = Int(slot) / keyCount, b = Int(slot) % keyCount
            func key(_ n: Int) -> ArraySlice<Float> { keys[(((head * 2) * keyCount + n) * half)..<(((head * 2) * keyCount + n + 1) * half)] }
            let rowSlots = indices[(row * knn)..<((row + 1) * knn)]
            if let twin = (0..<keyCount).first(where: { $0 != a && key($0) == key(a) && !rowSlots.contains(Int64($0 * keyCount + b)) }) {
                result.append((position, Int64(twin * keyCount + b)))
            }
        }
        return result
    }

    @Test("a different slot of exactly equal score (the other twin of a tie) is a tie")
    func equalScoreTwin() throws {
        var indices = try Checkpoints.open(Self.reference).readAll()[Self.indicesName]!.int64Values()
        let twins = Self.twins(indices: indices, keys: try Self.keys())
        try #require(!twins.isEmpty)
        // One twin per row, at the row's last rank where one exists (the top-k boundary).
        var used = Set<Int>()
        for twin in twins.reversed() where used.insert(twin.position / Self.knn).inserted { indices[twin.position] = twin.slot }
        let folder = try TemporaryFolder()
        let report = try LoadedCheckpoint(Self.checkpoint).verify(against: LoadedCheckpoint(try Self.reference(with: indices, in: folder)))
        let ids = try Self.indexReport(report)
        #expect(report.passed, "\(ids)")
        #expect(ids.ties == used.count && ids.beyondTolerance == 0)
    }

    @Test("a slot the model never picks, with the reference's weights kept, fails even at --atol 0.05",
          arguments: [0, 3, 40, 215])
    func wrongSlotFails(position: Int) throws {
        var indices = try Checkpoints.open(Self.reference).readAll()[Self.indicesName]!.int64Values()
        let keys = try Self.keys()
        let row = position / Self.knn, head = row % Self.heads
        let slot = Int(indices[position]), a = slot / Self.keyCount, b = slot % Self.keyCount
        func key(_ n: Int) -> ArraySlice<Float> { keys[(((head * 2) * Self.keyCount + n) * Self.half)..<(((head * 2) * Self.keyCount + n + 1) * Self.half)] }
        // A first-half sub-key that differs from the chosen one: a different score under the model.
        let other = try #require((0..<Self.keyCount).first { key($0) != key(a) })
        indices[position] = Int64(other * Self.keyCount + b)
        let folder = try TemporaryFolder()
        let report = try LoadedCheckpoint(Self.checkpoint).verify(against: LoadedCheckpoint(try Self.reference(with: indices, in: folder)), options: VerifyOptions(atol: 0.05, rtol: 0))
        let ids = try Self.indexReport(report)
        #expect(!report.passed)
        #expect(ids.beyondTolerance == 1 && ids.ties == 0, "\(ids)")
        #expect(ids.worstIndex == Compare.multiIndex(position, shape: ids.shape))
    }

    @Test("comparison rules on hand-made rows: groups by exact weight, model scores decide set differences")
    func rules() {
        let tolerance = Tolerance(absolute: 0.05, relative: 0)
        // One head, k = 4. Model scores: slot s scores s / 10, except 7 and 9 tie with 5 (0.5).
        let score: (Int, Int, Int64) -> Float? = { _, _, slot in [7, 9].contains(slot) ? 0.5 : Float(slot) / 10 }
        func compare(_ actual: [Int64], _ expected: [Int64], _ weights: [Float]?) -> OutputComparison {
            Compare.indices(name: "x", actual: actual, expected: expected, expectedWeights: weights, shape: [1, 4],
                            heads: 1, tolerance: tolerance, score: score)
        }
        #expect(compare([8, 6, 5, 4], [8, 6, 5, 4], [0.4, 0.3, 0.2, 0.1]).passed)
        // Reordered inside an exact tie group: ties.
        let reordered = compare([8, 6, 5, 4], [8, 5, 6, 4], [0.4, 0.25, 0.25, 0.1])
        #expect(reordered.passed && reordered.ties == 2)
        // Reordered where the weights differ: mismatches, however close the weights are.
        #expect(!compare([8, 6, 5, 4], [8, 5, 6, 4], [0.4, 0.25, 0.2499999, 0.1]).passed)
        // A reference slot the model scores like the one chosen (9 and 5 both 0.5): a tie.
        let twin = compare([8, 6, 5, 4], [8, 6, 9, 4], [0.4, 0.3, 0.2, 0.1])
        #expect(twin.passed && twin.ties == 1)
        // A reference slot the model scores differently (3 → 0.3 vs 0.5 for 5): a mismatch, at any rank.
        let wrongLast = compare([8, 6, 5, 4], [8, 6, 5, 3], [0.4, 0.3, 0.2, 0.1])
        #expect(!wrongLast.passed && wrongLast.beyondTolerance == 1 && wrongLast.worstIndex == [0, 3])
        #expect(!compare([8, 6, 5, 4], [2, 6, 5, 4], [0.4, 0.3, 0.2, 0.1]).passed)
        // Without weights, the model's scores still decide.
        #expect(compare([8, 6, 5, 4], [8, 6, 7, 4], nil).passed)
        #expect(!compare([8, 6, 5, 4], [8, 6, 1, 4], nil).passed)
        // An out-of-range slot (no score) is never excused.
        let unknown: (Int, Int, Int64) -> Float? = { _, _, _ in nil }
        #expect(!Compare.indices(name: "x", actual: [1, 2], expected: [1, 3], expectedWeights: [0.5, 0.5], shape: [1, 2], heads: 1,
                                 tolerance: tolerance, score: unknown).passed)
    }
}
