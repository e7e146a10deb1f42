import ArgumentParser
import Foundation
import PKMFormats
import PKMModel
#if canImport(Glibc)
import Glibc
#endif

@main
struct PKMConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pkm-convert",
        abstract: "Portable, verified Product Key Memory (PKM) BERT/RoBERTa checkpoints.",
        discussion: """
        Formats: HDF5 state dicts (.h5), safetensors (.safetensors, sharded via *.index.json or an HF folder),
        and the native zstd format (.pkmz, specified in schemas/pkmz.md).
        Exit status: 0 success, 1 verification mismatch, 2 error (including a mistyped command or option).
        """,
        version: PKMVersion.version,
        subcommands: [Inspect.self, Convert.self, Import.self, Verify.self, Run.self, Graft.self, Export.self, Usage.self, Diff.self, Tokenize.self, ProbeHDF5.self]
    )

    /// The exit status of every error, argument errors included (ArgumentParser's default for
    /// those is 64, `EX_USAGE`); 1 stays reserved for a verification beyond tolerance.
    static let errorStatus: Int32 = 2

    /// The entry point: ArgumentParser's `main`, with a mistyped subcommand named as such and
    /// every error leaving with ``errorStatus`` (`--help` and `--version` still exit 0).
    static func main() {
        // First: OpenBLAS's AVX2/AVX-512 kernels where its CPU detection fell back to SSE3 (BLASKernels).
        BLASKernels.restartWithPreferredKernelsIfNeeded()
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let message = SubcommandSpelling.unknownSubcommandMessage(arguments, root: self) {
            Console.error(message)
            Glibc.exit(errorStatus)
        }
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            let code = exitCode(for: error)
            let text = fullMessage(for: error)
            if code.isSuccess {
                if !text.isEmpty { print(text) }
                Glibc.exit(0)
            }
            if !text.isEmpty {
                fflush(nil)
                FileHandle.standardError.write(Data((ArgumentErrorText.oneLine(text, arguments: arguments, root: self) + "\n").utf8))
            }
            // A status a command chose (1: verification mismatch, 2: error) is kept; argument errors become 2.
            Glibc.exit(code.rawValue == ExitCode.validationFailure.rawValue ? errorStatus : code.rawValue)
        }
    }
}

/// Finds a first argument that is meant as a subcommand but names none, and suggests the closest.
/// ArgumentParser's error text as the tool prints it: one line, the tool's error prefix, and where the help is
/// (its "Help:", "Usage:" and "See …" lines are dropped: the help is one command away).
enum ArgumentErrorText {
    static func oneLine(_ text: String, arguments: [String], root: ParsableCommand.Type) -> String {
        guard text.hasPrefix("Error: ") else { return text }
        let first = text.dropFirst("Error: ".count).split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        let names = root.configuration.subcommands.map { $0.configuration.commandName ?? $0._commandName }
        let command = arguments.first.flatMap { names.contains($0) ? "pkm-convert \($0)" : nil } ?? "pkm-convert"
        return "pkm-convert: error: \(first) (see '\(command) --help')"
    }
}

enum SubcommandSpelling {
    /// The message for `arguments` when their first element is not an option and not a subcommand
    /// of `root` (nor `help`), else nil.
    static func unknownSubcommandMessage(_ arguments: [String], root: ParsableCommand.Type) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-") else { return nil }
        let visible = root.configuration.subcommands.filter { $0.configuration.shouldDisplay }
        let names = visible.map { $0.configuration.commandName ?? $0._commandName }
        let all = root.configuration.subcommands.map { $0.configuration.commandName ?? $0._commandName } + ["help"]
        guard !all.contains(first) else { return nil }
        let ranked = names.map { (name: $0, distance: editDistance(first.lowercased(), $0)) }.sorted { $0.distance < $1.distance }
        if let best = ranked.first, best.distance <= max(2, best.name.count / 3) {
            return "unknown subcommand '\(first)'; did you mean '\(best.name)'? (subcommands: \(names.joined(separator: ", ")))"
        }
        return "unknown subcommand '\(first)'; the subcommands are \(names.joined(separator: ", ")) (see pkm-convert --help)"
    }

    /// Levenshtein distance, counting an adjacent transposition as one edit.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}
