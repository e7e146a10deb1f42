import ArgumentParser
import Foundation
import PKMCheckpoints
import PKMFormats
import PKMHDF5
import PKMModel
import PKMPipeline
import PKMTensor
#if canImport(Glibc)
import Glibc
#endif

/// "1 tensor", "2 tensors", "22,713,216 parameters".
enum Count {
    static func of(_ count: Int, _ singular: String, plural: String? = nil) -> String {
        "\(Console.number(count)) \(count == 1 ? singular : (plural ?? singular + "s"))"
    }
}

/// Rendering helpers: JSON on stdout, diagnostics and errors on stderr.
enum Console {
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    /// Prints text from a file (names, metadata, config) line by line with control characters escaped, so a
    /// checkpoint cannot write escape sequences to the user's terminal (`--json` output stays exact).
    static func show(_ text: String) {
        print(text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0).escapedForTerminal }.joined(separator: "\n"))
    }

    static func error(_ message: String) {
        fflush(nil)
        FileHandle.standardError.write(Data("pkm-convert: error: \(message)\n".utf8))
    }

    static func diagnostics(_ diagnostics: [Diagnostic]) {
        fflush(nil)
        for diagnostic in diagnostics {
            FileHandle.standardError.write(Data("pkm-convert: \(diagnostic.severity.rawValue): \(diagnostic.message.escapedForTerminal)\n".utf8))
        }
    }

    static func printJSON<T: Encodable>(_ value: T) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // dtypes as in the text output (float32, bfloat16), not as safetensors codes.
        encoder.userInfo[DType.encodeDisplayNameKey] = true
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
    }

    /// A progress callback writing one updating line to stderr (count, rate, ETA), only when stderr
    /// is a terminal; the line is cleared when `done == total`.
    static func progress(_ label: String, unit: String = "tensors", enabled: Bool = true) -> ((Int, Int) -> Void)? {
        guard enabled, stderrIsTerminal else { return nil }
        let start = Date()
        return { done, total in
            let elapsed = Date().timeIntervalSince(start)
            let rate = elapsed > 0 ? String(format: ", %.1f %@/s", Double(done) / elapsed, unit) : ""
            let line = "\r\u{1B}[2K\(label): \(number(done))/\(number(total)) \(unit)\(rate)\(eta(done: done, total: total, elapsed: elapsed))"
            FileHandle.standardError.write(Data((done >= total ? "\r\u{1B}[2K" : line).utf8))
        }
    }

    /// A progress callback for (bytes done, total bytes): percentage, bytes, rate and ETA, only when
    /// stderr is a terminal; the line is cleared when `done == total`.
    static func byteProgress(_ label: String, enabled: Bool = true) -> ((Int, Int) -> Void)? {
        guard enabled, stderrIsTerminal else { return nil }
        let start = Date()
        return { done, total in
            let elapsed = Date().timeIntervalSince(start)
            let percent = total > 0 ? 100 * Double(done) / Double(total) : 100
            let rate = elapsed > 0 ? ", \(bytes(Int(Double(done) / elapsed)))/s" : ""
            let line = "\r\u{1B}[2K\(label): " + String(format: "%3.0f %%", percent)
                + " (\(bytes(done)) of \(bytes(total)))\(rate)\(eta(done: done, total: total, elapsed: elapsed))"
            FileHandle.standardError.write(Data((done >= total ? "\r\u{1B}[2K" : line).utf8))
        }
    }

    /// A progress callback for a corpus pass: share of the file read, sequences, tokens/s and ETA,
    /// only when stderr is a terminal; the line is cleared at the end of the file.
    static func corpusProgress(_ label: String, enabled: Bool = true) -> ((CorpusProgress) -> Void)? {
        guard enabled, stderrIsTerminal else { return nil }
        return { state in
            let percent = state.totalBytes > 0 ? 100 * Double(state.bytesRead) / Double(state.totalBytes) : 100
            let rate = state.seconds > 0 ? String(format: ", %.0f tokens/s", Double(state.tokens) / state.seconds) : ""
            let line = "\r\u{1B}[2K\(label): " + String(format: "%3.0f %%", percent)
                + " of \(bytes(state.totalBytes)), \(number(state.sequences)) sequences, \(number(state.tokens)) tokens\(rate)"
                + eta(done: state.bytesRead, total: state.totalBytes, elapsed: state.seconds)
            FileHandle.standardError.write(Data((state.bytesRead >= state.totalBytes ? "\r\u{1B}[2K" : line).utf8))
        }
    }

    static func eta(done: Int, total: Int, elapsed: Double) -> String {
        guard done > 0, done < total, elapsed > 0.5 else { return "" }
        let seconds = elapsed / Double(done) * Double(total - done)
        return seconds >= 90 ? String(format: ", ETA %.0f min", seconds / 60) : String(format: ", ETA %.0f s", seconds)
    }

    /// An integer with thousands separators: 22,713,216.
    static func number(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(character)
        }
        return (value < 0 ? "-" : "") + grouped
    }

    static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.2f %@", value, units[unit])
    }

    /// Runs `body`, turning any error into a one-line message and exit status 2.
    static func run(json: Bool, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let exit as ExitCode {
            throw exit
        } catch {
            let message = ErrorText.render(error)
            if json { printJSON(["error": message]) }
            Console.error(message)
            throw ExitCode(2)
        }
    }
}
