// swift-tools-version: 6.1
// pkm-convert: portable, verified Product Key Memory checkpoints.
//
// Dependency direction (one way):
//   PKMTensor ← PKMFormats (+ CHDF5, CZstd, COpenSSL, CSystemShims, ZIPFoundation) ← PKMModel (+ CBLAS) ← PKMPipeline ← pkm-convert
import PackageDescription

let releaseFlags: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
]
let releaseCFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-march=x86-64-v3"], .when(configuration: .release)),
]

let package = Package(
    name: "pkm-convert",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "PKMTensor", targets: ["PKMTensor"]),
        .library(name: "PKMFormats", targets: ["PKMFormats"]),
        .library(name: "PKMModel", targets: ["PKMModel"]),
        .library(name: "PKMPipeline", targets: ["PKMPipeline"]),
        .executable(name: "pkm-convert", targets: ["PKMConvertCLI"]),
        .executable(name: "pkm-script-example", targets: ["PKMScriptingExample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL"),
        .systemLibrary(name: "CSystemShims", path: "Sources/CSystemShims"),
        .target(name: "PKMTensor", swiftSettings: releaseFlags),
        .target(name: "PKMFormats", dependencies: ["PKMTensor", "CHDF5", "CZstd", "COpenSSL", "CSystemShims", .product(name: "ZIPFoundation", package: "ZIPFoundation")], swiftSettings: releaseFlags),
        .target(name: "PKMModel", dependencies: ["PKMTensor", "CBLAS"], swiftSettings: releaseFlags),
        .target(name: "PKMPipeline", dependencies: ["PKMTensor", "PKMFormats", "PKMModel"], swiftSettings: releaseFlags),
        .executableTarget(
            name: "PKMConvertCLI",
            dependencies: ["PKMPipeline", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: releaseFlags),
        .executableTarget(name: "PKMScriptingExample", dependencies: ["PKMPipeline"]),
        .target(name: "PKMTestSupport", dependencies: ["PKMTensor", "PKMModel"], path: "Tests/PKMTestSupport"),
        .testTarget(name: "PKMTensorTests", dependencies: ["PKMTensor"]),
        .testTarget(name: "PKMFormatsTests", dependencies: ["PKMFormats", "PKMTestSupport"], exclude: ["Regressions/Inputs", "Regressions/README.md"]),
        .testTarget(name: "PKMModelTests", dependencies: ["PKMModel", "PKMFormats", "PKMTestSupport"]),
        .testTarget(name: "PKMPipelineTests", dependencies: ["PKMPipeline", "PKMTestSupport"]),
        // Depends on the executable so `swift test` builds `pkm-convert`, which these tests run as a process.
        .testTarget(name: "PKMConvertCLITests", dependencies: ["PKMConvertCLI", "PKMScriptingExample", "PKMPipeline", "PKMTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
