// swift-tools-version: 6.1
// pkm-convert: portable, verified Product Key Memory checkpoints.
//
// Dependency direction (one way; each arrow points at what a target depends on):
//
//   PKMTensor ← PKMTokenizers: HF-compatible BERT WordPiece and byte-level BPE tokenizers (uses only the
//     tensor core's text helpers: JSON error positions, terminal escaping)
//   PKMTensor ← PKMFormats (+ CPKMKernels, CZstd, COpenSSL, CSystemShims, ZIPFoundation): safetensors, pkmz, PyTorch pickles, I/O
//   PKMFormats ← PKMHDF5 (+ CHDF5): the only target linking libhdf5
//   PKMFormats, PKMHDF5 ← PKMCheckpoints: picks the reader or writer for a path or model folder
//   PKMTensor ← PKMModel (+ CBLAS, CPKMKernels): the Swift BERT/RoBERTa + PKM forward pass (knows no file format)
//   PKMCheckpoints, PKMModel, PKMTokenizers ← PKMPipeline: import, verify, run, graft, usage, diff
//   PKMPipeline ← pkm-convert (PKMConvertCLI, thin: arguments in, rendering out)
//
// No target uses unsafe build flags by default, so every library product can be depended on by
// version (BENCHMARKS.md records what `-Ounchecked` on the kernels was measured to be worth).
import PackageDescription

/// `PKM_BENCH_UNCHECKED=1 swift build -c release` builds the model's kernels (PKMModel, whose inputs
/// are already validated) with `-Ounchecked`, to re-measure what it is worth (tools/bench_forward.sh).
/// Off by default: the parsers always keep their checks, and the default build has no unsafe flags.
let benchmarkUnchecked: [SwiftSetting] = Context.environment["PKM_BENCH_UNCHECKED"] == "1"
    ? [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))] : []

let package = Package(
    name: "pkm-convert",
    products: [
        .library(name: "PKMTensor", targets: ["PKMTensor"]),
        .library(name: "PKMFormats", targets: ["PKMFormats"]),
        .library(name: "PKMHDF5", targets: ["PKMHDF5"]),
        .library(name: "PKMCheckpoints", targets: ["PKMCheckpoints"]),
        .library(name: "PKMModel", targets: ["PKMModel"]),
        .library(name: "PKMPipeline", targets: ["PKMPipeline"]),
        .library(name: "PKMTokenizers", targets: ["PKMTokenizers"]),
        .executable(name: "pkm-convert", targets: ["PKMConvertCLI"]),
        .executable(name: "pkm-script-example", targets: ["PKMScriptingExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSystemShims", path: "Sources/CSystemShims"),
        // Hot loops in C (byte planes, rANS, the graft generator, AVX-512 GELU chosen at run time): plain C + SSE2, no unsafe flags.
        .target(name: "CPKMKernels"),
        .target(name: "PKMTensor"),
        // HF-compatible tokenizers (BERT WordPiece, byte-level BPE); Foundation and PKMTensor's text helpers only.
        .target(name: "PKMTokenizers", dependencies: ["PKMTensor"]),
        .target(name: "PKMFormats", dependencies: ["PKMTensor", "CPKMKernels", "CZstd", "COpenSSL", "CSystemShims",
                                            .product(name: "ZIPFoundation", package: "ZIPFoundation")]),
        .target(name: "PKMHDF5", dependencies: ["PKMTensor", "PKMFormats", "CHDF5", "CSystemShims"]),
        .target(name: "PKMCheckpoints", dependencies: ["PKMTensor", "PKMFormats", "PKMHDF5"]),
        .target(name: "PKMModel", dependencies: ["PKMTensor", "CBLAS", "CPKMKernels"], swiftSettings: benchmarkUnchecked),
        .target(name: "PKMPipeline", dependencies: ["PKMTensor", "CPKMKernels", "PKMFormats", "PKMHDF5", "PKMCheckpoints", "PKMModel", "PKMTokenizers"]),
        .executableTarget(
            name: "PKMConvertCLI",
            dependencies: ["PKMPipeline", "PKMCheckpoints", "PKMHDF5", "PKMFormats", "PKMModel", "PKMTensor", "PKMTokenizers", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "PKMScriptingExample", dependencies: ["PKMPipeline", "PKMCheckpoints", "PKMFormats", "PKMModel"]),
        .target(name: "PKMTestSupport", dependencies: ["PKMTensor", "PKMModel", "PKMFormats"], path: "Tests/PKMTestSupport"),
        .testTarget(name: "PKMTensorTests", dependencies: ["PKMTensor"]),
        .testTarget(name: "PKMTokenizersTests", dependencies: ["PKMTokenizers", "PKMTestSupport"]),
        .testTarget(name: "PKMFormatsTests", dependencies: ["PKMFormats", "CPKMKernels", "PKMCheckpoints", "PKMTestSupport", .product(name: "ZIPFoundation", package: "ZIPFoundation")],
                    exclude: ["Regressions/Inputs", "Regressions/README.md"]),
        .testTarget(name: "PKMHDF5Tests", dependencies: ["PKMHDF5", "PKMFormats", "PKMCheckpoints", "PKMTestSupport"]),
        .testTarget(name: "PKMModelTests", dependencies: ["PKMModel", "PKMCheckpoints", "PKMTestSupport"]),
        .testTarget(name: "PKMPipelineTests", dependencies: ["PKMPipeline", "PKMTestSupport"]),
        // Depends on the executable so `swift test` builds `pkm-convert`, which these tests run as a process.
        .testTarget(name: "PKMConvertCLITests", dependencies: ["PKMConvertCLI", "PKMScriptingExample", "PKMPipeline", "PKMCheckpoints", "PKMTensor", "PKMTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
