// A checkpoint pipeline scripted in Swift with the PKMPipeline library:
// open → import → verify → graft (zero values) → run the base → verify the graft against it → usage.
// Each checkpoint is opened once (`LoadedCheckpoint`) and handed from step to step: the base model's
// weights file is opened by the format sniff and by its mapping, and nothing else.
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

    // 1. Open the checkpoint once and look at it; every step below is handed this value, not a path.
    let base = try LoadedCheckpoint(folder)
    let resolved = try base.resolved()
    print("opened \(base.reader.url.lastPathComponent): \(base.reader.tensorInfos.count) tensors, "
          + "\(resolved.config.modelType.rawValue), \(resolved.config.layerCount) layers, config from \(resolved.report.configSource)")
    let referenceFile = try LoadedCheckpoint(reference)

    // 2. Import to the native format (canonical names + config + provenance with the source's SHA-256).
    let importedURL = work.appendingPathComponent("base.pkmz")
    let importResult = try base.import(to: importedURL)
    print("imported -> \(importedURL.path): \(importResult.tensorCount) tensors, \(importResult.fileBytes) bytes")

    // 3. Verify the import against PyTorch's outputs.
    let imported = try LoadedCheckpoint(importedURL)
    let baseReport = try imported.verify(against: referenceFile)
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
    let graftedURL = work.appendingPathComponent("grafted.pkmz")
    let graftResult = try imported.graft(options, to: graftedURL)
    print("grafted \(graftResult.created.count) memory tensors into layer(s) \(options.layers)")
    // The base model's own Swift outputs (the model built for step 3, reused) are the reference for
    // "computes exactly the base model".
    let baseOutputs = work.appendingPathComponent("base-outputs.h5")
    _ = try imported.run(.reference(referenceFile), options: RunOptions(outputURL: baseOutputs))
    let grafted = try LoadedCheckpoint(graftedURL)
    let graftReport = try grafted.verify(against: try LoadedCheckpoint(baseOutputs), options: VerifyOptions(atol: 1e-6, rtol: 0))
    print("verify grafted (zero values) against the base model's outputs at atol 1e-6: \(graftReport.passed ? "PASS" : "FAIL"), "
          + String(format: "max |Δ| %.3g", graftReport.outputs.map(\.maxAbsoluteDifference).max() ?? 0))

    // 5. Memory usage over the reference inputs (the grafted model built for step 4, reused).
    let usage = try grafted.usage(.reference(referenceFile))
    for layer in usage.layers {
        print(String(format: "usage layer %d: %.1f %% of %d slots, KL(weights) %.3f", layer.layer, layer.usagePercent, layer.slots, layer.klWeights))
    }
    exit(baseReport.passed && graftReport.passed ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("pkm-script-example: error: \(error)\n".utf8))
    exit(2)
}
