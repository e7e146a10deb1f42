import Foundation

/// Parallel loops for the pkmz reader and writer (internal).
enum PKMZParallel {
    /// Runs `body(worker)` for `worker` in `0..<workers`, concurrently when `workers > 1`, and returns
    /// when all are done.
    ///
    /// `DispatchQueue.concurrentPerform` wants a `@Sendable` closure; the pkmz loops share raw
    /// buffers on purpose (each worker reads shared input and writes only its own slots and frame
    /// ranges), which the compiler cannot verify, so the closure is passed through an unchecked box.
    /// Callers keep that discipline: no worker writes memory another worker reads or writes.
    static func run(workers: Int, _ body: (Int) -> Void) {
        guard workers > 1 else {
            if workers == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            let box = UncheckedBox(escapable)
            DispatchQueue.concurrentPerform(iterations: workers) { box.value($0) }
        }
    }

    private struct UncheckedBox<Value>: @unchecked Sendable {
        let value: Value
        init(_ value: Value) { self.value = value }
    }
}
