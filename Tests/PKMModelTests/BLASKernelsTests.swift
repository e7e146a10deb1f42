import Foundation
import Testing
@testable import PKMModel

@Suite("OpenBLAS kernel choice")
struct BLASKernelsTests {
    @Test("the preferred kernels follow the CPU's features, as OpenBLAS's own detection would")
    func preferred() {
        #expect(BLASKernels.preferredCoreType(cpuFlags: ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"]) == "SkylakeX")
        #expect(BLASKernels.preferredCoreType(cpuFlags: ["avx512f", "avx2", "fma"]) == "Haswell")
        #expect(BLASKernels.preferredCoreType(cpuFlags: ["avx2", "fma", "sse3"]) == "Haswell")
        #expect(BLASKernels.preferredCoreType(cpuFlags: ["avx", "sse3"]) == nil)
    }

    @Test("no restart when the user chose the kernels or a restart already happened")
    func noRestart() {
        #expect(BLASKernels.restartCoreType(environment: ["OPENBLAS_CORETYPE": "Haswell"]) == nil)
        #expect(BLASKernels.restartCoreType(environment: [BLASKernels.restartMarker: "1"]) == nil)
        // Otherwise a restart is asked for exactly when OpenBLAS fell back and the CPU can do better.
        let expected = BLASKernels.fallbacks.contains(BLASKernels.coreName) ? BLASKernels.preferredCoreType(cpuFlags: BLASKernels.cpuFlags) : nil
        #expect(BLASKernels.restartCoreType(environment: [:]) == expected)
    }
}
