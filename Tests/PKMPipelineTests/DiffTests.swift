import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTensor
import PKMTestSupport
import Testing
@testable import PKMPipeline

@Suite("diff: tensors and updated memory slots between checkpoints")
struct DiffTests {
    static let base = PipelineFixtures.repositoryRoot.appendingPathComponent("fixtures/models/bert_base_plain")

    /// A small graft of `base` at layer 1 (16² = 256 slots × 32).
    static func graft(to url: URL, seed: UInt64) throws {
        var options = GraftOptions(layers: [1])
        options.keyCount = 16; options.headCount = 2; options.knn = 4; options.keyDimension = 16; options.seed = seed
        _ = try LoadedCheckpoint(base).graft(options, to: url)
    }

    @Test("a checkpoint equals itself and its conversion to another format with other names")
    func identical() throws {
        let folder = try TemporaryFolder(prefix: "pkm-diff")
        let grafted = folder.file("g.pkmz")
        try Self.graft(to: grafted, seed: 1)
        // Same tensors under `bert.`-prefixed names in safetensors.
        var dict = StateDict()
        let reader = try Checkpoints.open(grafted)
        for info in reader.tensorInfos { try dict.insert(try reader.tensor(named: info.name), named: "bert." + info.name) }
        let renamed = folder.file("renamed.safetensors")
        try Checkpoints.write(dict, to: renamed, format: .safetensors)
        let report = try LoadedCheckpoint(grafted).diff(against: LoadedCheckpoint(renamed))
        #expect(report.identical && report.onlyInA.isEmpty && report.onlyInB.isEmpty)
        #expect(report.memories == [MemoryDifference(layer: 1, updatedSlots: 0, slotCount: 256, updatedPercent: 0)])
        #expect(report.tensors.count == reader.tensorInfos.count)
    }

    @Test("updated slots are counted exactly: rows changed beyond atol, and only those")
    func updatedSlots() throws {
        let folder = try TemporaryFolder(prefix: "pkm-diff")
        let grafted = folder.file("g.pkmz")
        try Self.graft(to: grafted, seed: 1)
        var dict = try Checkpoints.open(grafted).readAll()
        let name = "encoder.layer.1.memory.values.weight"
        var values = try #require(dict[name]).floatValues()
        let width = 32
        for row in [3, 7, 255] { values[row * width + 5] += 1 }     // three slots, one element each
        values[10 * width] += 1e-4                                    // a fourth, below atol 1e-3
        dict.set(try Tensor(float32: values, shape: [256, width]), named: name)
        let trained = folder.file("trained.safetensors")
        try Checkpoints.write(dict, to: trained, format: .safetensors)

        let strict = try LoadedCheckpoint(grafted).diff(against: LoadedCheckpoint(trained))
        #expect(!strict.identical)
        #expect(strict.memories.first?.updatedSlots == 4)
        let tolerant = try LoadedCheckpoint(grafted).diff(against: LoadedCheckpoint(trained), options: DiffOptions(atol: 1e-3))
        let memory = try #require(tolerant.memories.first)
        #expect(memory.updatedSlots == 3 && memory.slotCount == 256)
        #expect(abs(memory.updatedPercent - 100 * 3.0 / 256) < 1e-12)
        let values1 = try #require(tolerant.tensors.first { $0.name == name })
        #expect(values1.changedElements == 3 && abs(values1.maxAbsoluteDifference - 1) < 1e-6)
        #expect(tolerant.tensors.filter { $0.changedElements > 0 }.count == 1)

        // Another seed changes every value row.
        let other = folder.file("other.pkmz")
        try Self.graft(to: other, seed: 2)
        #expect(try LoadedCheckpoint(grafted).diff(against: LoadedCheckpoint(other)).memories.first?.updatedSlots == 256)
    }

    @Test("tensors only on one side and shape changes are reported")
    func onlyOnOneSide() throws {
        let folder = try TemporaryFolder(prefix: "pkm-diff")
        let grafted = folder.file("g.pkmz")
        try Self.graft(to: grafted, seed: 1)
        let report = try LoadedCheckpoint(Self.base.appendingPathComponent("model.safetensors")).diff(against: LoadedCheckpoint(grafted))
        #expect(!report.identical && report.onlyInA.isEmpty)
        #expect(report.onlyInB.contains("encoder.layer.1.memory.values.weight"))
        #expect(throws: PipelineError.self) { try LoadedCheckpoint(grafted).diff(against: LoadedCheckpoint(grafted), options: DiffOptions(atol: -1)) }
    }
}
