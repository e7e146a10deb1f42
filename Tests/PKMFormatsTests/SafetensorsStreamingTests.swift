import Foundation
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats

/// Tensors written from ``TensorSource``s in chunks give the same file as whole tensors.
@Suite("Safetensors streaming writes")
struct SafetensorsStreamingTests {
    /// Byte `i` of the test pattern (not periodic in the chunk size, so a misplaced chunk shows).
    static func pattern(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 7) }

    static func source(counting calls: Counter? = nil) -> TensorSource {
        TensorSource(fill: { offset, buffer in
            calls?.add(buffer.count)
            for index in 0..<buffer.count { buffer[index] = pattern(offset + index) }
        })
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var bytes: [Int] = []
        func add(_ count: Int) { lock.withLock { bytes.append(count) } }
        var largest: Int { lock.withLock { bytes.max() ?? 0 } }
        var total: Int { lock.withLock { bytes.reduce(0, +) } }
    }

    @Test("a source larger than several chunks, between whole tensors, writes the same bytes", arguments: [1, 2, 3])
    func sameBytes(threads: Int) throws {
        let folder = try TemporaryFolder()
        // 2.5 chunks plus a partial page, float32.
        let elements = (SafetensorsWriter.streamChunkBytes * 5 / 2 + 4_100) / 4
        let infos = [TensorInfo(name: "a", dtype: .float32, shape: [3]),
                     TensorInfo(name: "big", dtype: .float32, shape: [elements]),
                     TensorInfo(name: "z", dtype: .int64, shape: [2])]
        let big = Data((0..<(elements * 4)).map(Self.pattern))
        let small = [try Tensor(float32: [1, 2, 3], shape: [3]), try Tensor(int64: [7, -1], shape: [2])]
        var options = WriteOptions()
        options.threads = threads
        try SafetensorsWriter.write(to: folder.file("whole.safetensors"), tensorInfos: infos, metadata: ["k": "v"], options: options,
                                    progress: nil) { info in
            info.name == "a" ? small[0] : info.name == "z" ? small[1] : try Tensor(dtype: .float32, shape: [elements], storage: big)
        }
        let counter = Counter()
        try SafetensorsWriter.writeStreaming(to: folder.file("streamed.safetensors"), tensorInfos: infos, metadata: ["k": "v"], options: options,
                                    progress: nil, data: { info in
            info.name == "a" ? .tensor(small[0]) : info.name == "z" ? .tensor(small[1]) : .source(Self.source(counting: counter))
        })
        let whole = try Data(contentsOf: folder.file("whole.safetensors"))
        let streamed = try Data(contentsOf: folder.file("streamed.safetensors"))
        #expect(whole == streamed)
        #expect(counter.total == elements * 4)
        #expect(counter.largest <= SafetensorsWriter.streamChunkBytes)
        let reader = try SafetensorsReader(url: folder.file("streamed.safetensors"))
        #expect(try reader.tensor(named: "big").storage == big)
    }

    struct Broken: Error {}

    @Test("a failing source leaves nothing behind")
    func failingSource() throws {
        let folder = try TemporaryFolder()
        let infos = [TensorInfo(name: "big", dtype: .float32, shape: [SafetensorsWriter.streamChunkBytes])]
        #expect(throws: Broken.self) {
            try SafetensorsWriter.writeStreaming(to: folder.file("out.safetensors"), tensorInfos: infos, metadata: [:], options: WriteOptions(),
                                        progress: nil, data: { _ in
                .source(TensorSource(fill: { offset, _ in if offset >= SafetensorsWriter.streamChunkBytes { throw Broken() } }))
            })
        }
        #expect(folder.contents.isEmpty)
    }

    @Test("HDF5 and other writers without streaming get the source materialised")
    func materialised() throws {
        let info = TensorInfo(name: "t", dtype: .uint8, shape: [10_000])
        let tensor = try TensorData.source(Self.source()).materialized(info: info)
        #expect(tensor.storage == Data((0..<10_000).map(Self.pattern)))
    }
}
