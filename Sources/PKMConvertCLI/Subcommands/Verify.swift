import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMPipeline

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a reference file's inputs through the Swift model and compare every output.",
        discussion: "Exit status: 0 all outputs within tolerance, 1 any output beyond it, 2 error.")

    @Argument(help: "Checkpoint (any format or a model folder).")
    var checkpoint: String

    @Option(name: .long, help: "Reference HDF5 file (schemas/pkm-checkpoints.md §5 layout).")
    var reference: String


    @Option(name: .long, help: "Absolute tolerance (default: the reference's attribute, else 1e-4).")
    var atol: Double?

    @Option(name: .long, help: "Relative tolerance (default: the reference's attribute, else 1e-4).")
    var rtol: Double?

    @Flag(name: .long, help: "Fail when the reference holds an output the model cannot produce (instead of listing it as skipped).")
    var strict = false

    @OptionGroup var model: ModelArguments
    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let atol, !(atol >= 0) { throw ValidationError("--atol must be a non-negative number") }
        if let rtol, !(rtol >= 0) { throw ValidationError("--rtol must be a non-negative number") }
    }

    func run() throws {
        var passed = false
        try Console.run(json: global.json) {
            let model = try model.load(checkpoint, global)
            let report = try model.verify(against: try global.load(reference), options: VerifyOptions(atol: atol, rtol: rtol, strict: strict),
                                          loadProgress: Console.byteProgress("load", enabled: !global.json))
            passed = report.passed
            if global.json { Console.printJSON(report); return }
            print("verify \(report.checkpoint) against \(report.reference)")
            print(String(format: "tolerance: atol %.3g, rtol %.3g (%@); inputs [%d, %d]", report.tolerance.absolute, report.tolerance.relative,
                         report.toleranceSource, report.batchSize, report.sequenceLength))
            for output in report.outputs {
                let status = output.passed ? "ok  " : "FAIL"
                if output.kind == "indices" {
                    print("  \(status) \(output.name): \(Count.of(output.count, "slot id")), \(Console.number(output.beyondTolerance)) differ, \(output.ties) at tied weights"
                          + (output.worstIndex.isEmpty ? "" : ", first at \(output.worstIndex)"))
                } else {
                    print("  \(status) \(output.name): " + String(format: "max |Δ| %.3g, max rel Δ %.3g", output.maxAbsoluteDifference, output.maxRelativeDifference)
                          + " at \(output.worstIndex), \(Console.number(output.beyondTolerance))/\(Console.number(output.count)) beyond tolerance")
                }
                if let agreement = output.top1Agreement, let kl = output.meanKLDivergence, let positions = output.distributionPositions {
                    print("       top-1 agreement " + String(format: "%.2f %%", agreement * 100) + " of \(Count.of(positions, "token"))"
                          + String(format: ", mean KL(reference ‖ this) %.3g nats", kl))
                }
            }
            for skipped in report.skipped { print("  skip \(skipped)") }
            if report.strict, !report.notProduced.isEmpty {
                print("strict: the reference holds \(Count.of(report.notProduced.count, "output")) the model cannot produce: \(report.notProduced.joined(separator: ", "))")
            }
            if let note = report.precisionNote { print("note: \(note)") }
            if let suggested = report.suggestedTolerance, let outcome = report.withSuggestedTolerance {
                let flags = String(format: "--atol %g --rtol %g", suggested.absolute, suggested.relative)
                print("with \(flags) (suggested for \(report.storagePrecision ?? "this storage")): "
                      + (outcome.passed ? "PASS" : "FAIL, \(Count.of(outcome.beyondTolerance, "element")) beyond tolerance in \(outcome.failing.joined(separator: ", "))"))
            }
            print(report.passed ? "PASS" : "FAIL")
        }
        if !passed { throw ExitCode(1) }
    }
}
