import ArgumentParser
import Foundation
import PKMPipeline

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two checkpoints tensor by tensor, and count the memory slots whose values changed.",
        discussion: """
        Tensors are matched by canonical name (prefixes and aliases removed), so a grafted pkmz and an exported \
        HF folder compare directly. For every memory layer, updatedSlots counts the value rows with any element \
        changed by more than --atol: between a fresh graft and a trained checkpoint, the slots training updated.
        Exit status: 0 identical within --atol, 1 anything differs, 2 error.
        """)

    @Argument(help: "First checkpoint (any format or a model folder).")
    var a: String

    @Argument(help: "Second checkpoint.")
    var b: String

    @Option(name: .long, help: "Largest |a − b| still counted as equal (default 0: bit-exact values).")
    var atol: Double = 0

    @Flag(name: .long, help: "List every tensor, not only the changed ones.")
    var all = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard atol >= 0, atol.isFinite else { throw ValidationError("--atol must be a non-negative number") }
    }

    func run() throws {
        var identical = false
        try Console.run(json: global.json) {
            let report = try global.load(a).diff(against: try global.load(b), options: DiffOptions(atol: atol),
                                                 progress: Console.progress("diff"))
            identical = report.identical
            if global.json { Console.printJSON(report); return }
            let changed = report.tensors.filter { !$0.sameShape || $0.changedElements > 0 }
            print("diff \(report.a) \(report.b) (atol \(String(format: "%g", report.atol))): \(report.tensors.count) shared \(report.tensors.count == 1 ? "tensor" : "tensors"), \(changed.count) changed")
            for tensor in report.tensors where all || !tensor.sameShape || tensor.changedElements > 0 {
                if !tensor.sameShape {
                    print("  shape \(tensor.name): \(tensor.shapeA) vs \(tensor.shapeB)")
                } else {
                    print("  \(tensor.changedElements == 0 ? "same " : "diff ") \(tensor.name): \(tensor.changedElements)/\(tensor.elements) changed, "
                          + String(format: "max |Δ| %.3g", tensor.maxAbsoluteDifference))
                }
            }
            for memory in report.memories {
                print(String(format: "  memory layer %d: %d of %d slots updated (%.2f %%)", memory.layer, memory.updatedSlots, memory.slotCount, memory.updatedPercent))
            }
            if !report.onlyInA.isEmpty { print("  only in \(report.a): \(report.onlyInA.joined(separator: ", "))") }
            if !report.onlyInB.isEmpty { print("  only in \(report.b): \(report.onlyInB.joined(separator: ", "))") }
            print(report.identical ? "IDENTICAL" : "DIFFERENT")
        }
        if !identical { throw ExitCode(1) }
    }
}
