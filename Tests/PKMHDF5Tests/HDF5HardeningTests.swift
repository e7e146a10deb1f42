import Foundation
import PKMCheckpoints
import PKMTestSupport
import PKMTensor
import Testing
@testable import PKMFormats
@testable import PKMHDF5

/// Issue 18: HDF5 amplification (gzip bombs), the scale-offset filter, and group names `.` / `..`.
@Suite("HDF5 hardening")
struct HDF5HardeningTests {
    @Test("a valid scale-offset file is read with its values, not called damaged")
    func scaleOffset() throws {
        let reader = try HDF5Reader(url: TestPaths.repository("fixtures/hdf5/scaleoffset.h5"), limits: ReaderLimits())
        #expect(try reader.tensor(named: "ints").int64Values() == (0..<64).map { Int64($0 * 3 + 1000) })
        #expect(try reader.tensor(named: "floats").floatValues() == (0..<32).map { Float($0) / 4 })
    }

    @Test("a gzip bomb is refused as amplification before any data is decompressed; a trusted limit reads it")
    func gzipBomb() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("PKMFormatsTests/Regressions/Inputs/hdf5-gzip-bomb-96mib.h5")
        let error = #expect(throws: FormatError.self) { try HDF5Reader(url: url, limits: ReaderLimits()) }
        guard case .amplificationExceeded(_, let tensor, let logical, _, _)? = error else {
            Issue.record("expected amplificationExceeded, got \(String(describing: error))")
            return
        }
        #expect(tensor == "w" && logical == 96 << 20)
        var limits = ReaderLimits()
        limits.maxAmplifiedBytes = 128 << 20
        #expect(try HDF5Reader(url: url, limits: limits).tensorInfos.map(\.byteCount) == [96 << 20])
    }

    @Test("the writer refuses names with '.' or '..' parts, creating nothing", arguments: ["a/../b", "../w", "a/..", "./w", "a/./b"])
    func dotGroups(name: String) throws {
        let folder = try TestPaths.newFolder(prefix: "pkm-hdf5-dots")
        defer { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("out.h5")
        let state = try StateDict([(name, try Tensor(dtype: .float32, shape: [1], storage: Data(count: 4)))])
        let error = #expect(throws: FormatError.self) { try Checkpoints.write(state, to: url, format: .hdf5) }
        #expect(error?.description.contains("'..'") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: url.path))
    }
}
