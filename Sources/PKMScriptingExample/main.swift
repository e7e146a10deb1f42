// A checkpoint pipeline scripted in Swift with the PKMPipeline library:
// open → import → verify → graft (zero values) → run the base → verify the graft against it → usage.
//
//   swift run pkm-script-example fixtures/models/bert_base_plain [work-folder]
//
// The folder must hold a checkpoint (model.h5 / model.safetensors), config.json and reference.h5.
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMPipeline

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: pkm-script-example MODEL_FOLDER [WORK_FOLDER]\n".utf8))
    exit(2)
}
let folder = URL(fileURLWithPath: arguments[1])
let work = URL(fileURLWithPath: arguments.count > 2 ? arguments[2] : NSTemporaryDirectory()).appendingPathComponent("pkm-script-example")
let reference = folder.appendingPathComponent("reference.h5")

do {
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)

    // 1. Open any checkpoint and look at it.
    let checkpoint = try ResolvedCheckpoint(url: folder)
    print("opened \(checkpoint.reader.url.lastPathComponent): \(checkpoint.reader.tensorInfos.count) tensors, "
          + "\(checkpoint.config.modelType.rawValue), \(checkpoint.config.layerCount) layers, config from \(checkpoint.report.configSource)")

    // 2. Import to the native format (canonical names + config + provenance).
    let imported = work.appendingPathComponent("base.pkmz")
    let importResult = try Importer.run(source: folder, destination: imported)
    print("imported -> \(imported.path): \(importResult.tensorCount) tensors, \(importResult.fileBytes) bytes")

    // 3. Verify the import against PyTorch's outputs.
    let baseReport = try Verifier.run(checkpoint: imported, reference: reference)
    print("verify base: \(baseReport.passed ? "PASS" : "FAIL"), worst max |Δ| "
          + String(format: "%.3g", baseReport.outputs.map(\.maxAbsoluteDifference).max() ?? 0))

    // 4. Graft a zero-valued residual memory: the model must still compute the base model exactly.
    var options = GraftOptions(layers: [1])
    options.mode = .residual
    options.keyCount = 16
    options.headCount = 2
    options.knn = 4
    options.keyDimension = 16
    options.valueInit = .zero
    options.seed = 7
    let grafted = work.appendingPathComponent("grafted.pkmz")
    let graftResult = try Grafter.run(base: imported, destination: grafted, options: options)
    print("grafted \(graftResult.created.count) memory tensors into layer(s) \(options.layers)")
    // The base model's own Swift outputs are the reference for "computes exactly the base model".
    let inputs = try ReferenceLayout.readInputs(from: try Checkpoints.open(reference))
    let baseOutputs = work.appendingPathComponent("base-outputs.h5")
    _ = try Runner.run(checkpoint: imported, inputs: inputs, outputURL: baseOutputs)
    let graftReport = try Verifier.run(checkpoint: grafted, reference: baseOutputs, atol: 1e-6, rtol: 0)
    print("verify grafted (zero values) against the base model's outputs at atol 1e-6: \(graftReport.passed ? "PASS" : "FAIL"), "
          + String(format: "max |Δ| %.3g", graftReport.outputs.map(\.maxAbsoluteDifference).max() ?? 0))

    // 5. Memory usage over the reference inputs.
    let usage = try UsageAnalyzer.run(checkpoint: grafted, inputs: reference)
    for layer in usage.layers {
        print(String(format: "usage layer %d: %.1f %% of %d slots, KL(weights) %.3f", layer.layer, layer.usagePercent, layer.slots, layer.klWeights))
    }
    exit(baseReport.passed && graftReport.passed ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("pkm-script-example: error: \(error)\n".utf8))
    exit(2)
}
