import Foundation
import PKMCheckpoints
import PKMFormats
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMPipeline

/// Large tensors are converted through a ``TensorSource`` (chunk by chunk, pages released as consumed).
@Suite("Convert streaming")
struct ConvertStreamingTests {
    @Test("a tensor above the streaming threshold converts bit-exactly to pkmz, safetensors and HDF5", arguments: ["pkmz", "safetensors", "h5"])
    func largeTensor(extension ext: String) throws {
        let folder = try TemporaryFolder()
        let count = LoadedCheckpoint.streamedTensorBytes / 4 + 1_234
        let values = (0..<count).map { Float(bitPattern: UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) & 0x3FFF_FFFF) }
        let small = try Tensor(float32: [1, 2, 3], shape: [3])
        var dict = StateDict(metadata: [:])
        try dict.insert(small, named: "a")
        try dict.insert(try Tensor(float32: values, shape: [count]), named: "big")
        let source = folder.file("in.safetensors")
        try Checkpoints.write(dict, to: source, format: .safetensors)
        let out = folder.file("out.\(ext)")
        _ = try LoadedCheckpoint(source).convert(to: out)
        let reader = try Checkpoints.open(out)
        #expect(try reader.tensor(named: "big").floatValues() == values)
        #expect(try reader.tensor(named: "a").floatValues() == [1, 2, 3])
    }
}
