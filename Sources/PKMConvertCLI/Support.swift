import ArgumentParser
import Foundation
import PKMFormats
import PKMHDF5
import PKMPipeline
import PKMTensor
#if canImport(Glibc)
import Glibc
#endif

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .long, help: "Print machine-readable JSON on stdout.")
    var json = false

    @Option(name: .long, help: "Largest header to accept, in bytes (raise only for trusted files).")
    var maxHeaderBytes: Int?

    @Option(name: .long, help: "Largest total of declared tensor bytes to accept.")
    var maxTotalBytes: Int?

    @Option(name: .long, help: "Most tensors to accept in one checkpoint.")
    var maxTensorCount: Int?

    @Option(name: .long, help: "Highest tensor rank to accept.")
    var maxRank: Int?

    @Option(name: .long, help: ArgumentHelp(
        "How HDF5 inputs are vetted before libhdf5 reads them here: data, metadata, or off.",
        discussion: "data (default): a child process reads the whole file first (structure, attributes, every tensor, under a memory cap), so a libhdf5 crash, hang or runaway allocation on a damaged file becomes an error; metadata: the child reads the structure and attributes only (faster on large trusted files); off: read in this process only."))
    var hdf5Probe: HDF5ProbeMode = .data

    @Option(name: .long, help: "PyTorch pickles: the top-level key holding the state dict (default: detect state_dict, model_state_dict, model, module).")
    var stateDictKey: String?

    @Option(name: .long, help: "Deadline of the HDF5 probe in seconds (default 20, plus 1 s per 50 MB of file with --hdf5-probe data).")
    var hdf5ProbeTimeout: Double?

    func validate() throws {
        for (flag, value) in [("--max-header-bytes", maxHeaderBytes), ("--max-total-bytes", maxTotalBytes),
                              ("--max-tensor-count", maxTensorCount), ("--max-rank", maxRank)] {
            if let value, value < 0 { throw ValidationError("\(flag) must be 0 or more") }
        }
        if let hdf5ProbeTimeout, !(hdf5ProbeTimeout > 0) { throw ValidationError("--hdf5-probe-timeout must be above 0") }
    }

    /// The reader limits: ``ReaderLimits``' defaults, raised (or lowered) by the flags.
    var limits: ReaderLimits {
        var limits = ReaderLimits()
        if let maxHeaderBytes { limits.maxHeaderBytes = maxHeaderBytes }
        if let maxTotalBytes { limits.maxTotalBytes = maxTotalBytes }
        if let maxTensorCount { limits.maxTensorCount = maxTensorCount }
        if let maxRank { limits.maxRank = maxRank }
        limits.stateDictKey = stateDictKey
        if let depth = hdf5Probe.depth {
            limits.hdf5Probe = HDF5Probe(command: ProbeHDF5.command, depth: depth, timeoutSeconds: hdf5ProbeTimeout)
        }
        return limits
    }
}

/// `--hdf5-probe`: ``HDF5Probe`` depth, or off.
enum HDF5ProbeMode: String, ExpressibleByArgument, CaseIterable {
    case metadata, data, off

    var depth: HDF5Probe.Depth? {
        switch self {
        case .metadata: return .metadata
        case .data: return .data
        case .off: return nil
        }
    }
}

/// Token-id inputs of `run` and `usage`: a file's `/inputs`, ids on the command line, or seeded random ids.
struct TokenInputArguments: ParsableArguments {
    @Option(name: .long, help: "HDF5 file with /inputs/input_ids (and optionally attention_mask, token_type_ids), e.g. a reference file.")
    var inputs: String?

    @Option(name: .long, help: "One sequence of comma-separated token ids, e.g. 101,7592,102.")
    var inputIds: String?

    @Option(name: .long, help: "BATCHxSEQUENCE random token ids drawn from the model's vocabulary, e.g. 4x24 (see --seed).")
    var randomInputs: String?

    @Option(name: .long, help: "Seed of --random-inputs: the same seed and model give the same ids.")
    var seed: UInt64 = 0

    /// How many of the three were given.
    var givenCount: Int { [inputs != nil, inputIds != nil, randomInputs != nil].filter { $0 }.count }

    /// The inputs named by --inputs, --input-ids or --random-inputs.
    var source: InputSource {
        get throws {
            if let inputs { return .file(URL(fileURLWithPath: inputs)) }
            if let inputIds { return try .ids(inputIds) }
            return try .random(randomInputs ?? "", seed: seed)
        }
    }
}

/// Options of commands that write a checkpoint.
extension MemoryLayoutChoice: ExpressibleByArgument {}

/// `--memory-layout` and `--memory-attribute`, for every command that reads a model.
struct MemoryArguments: ParsableArguments {
    @Option(name: .long, help: "Memory layout: auto (detect from names and shapes), xlm, lucidrains or lingua (Meta).")
    var memoryLayout: MemoryLayoutChoice = .auto

    @Option(name: .long, help: "Module attribute holding the memory under encoder.layer.{i}. (besides memory, pkm, mem).")
    var memoryAttribute: String?

    var options: MemoryImportOptions { MemoryImportOptions(layout: memoryLayout, attribute: memoryAttribute) }
}

struct OutputArguments: ParsableArguments {
    @Option(name: .long, help: "Output format (hdf5, safetensors, pkmz); default from the extension.")
    var to: CheckpointFormat?

    @Option(name: .long, help: "Storage dtype of floating-point tensors: keep, f32, f16, bf16.")
    var dtype: DTypePolicy = .keep

    @Option(name: .long, help: "zstd level for pkmz (1-22; 1 is fastest and, on byte-grouped weights, also smallest).")
    var level: Int32 = 1

    @Flag(name: .long, inversion: .prefixedNo, help: "Byte-group float tensors before compressing (pkmz).")
    var byteGrouping = true

    @Option(name: .long, help: "Compression threads (0 = all cores).")
    var threads: Int = 0

    func validate() throws {
        guard (1...22).contains(level) else { throw ValidationError("--level must be between 1 and 22") }
        guard threads >= 0 else { throw ValidationError("--threads must be 0 or more") }
    }

    var options: OutputOptions {
        var options = OutputOptions()
        options.format = to
        options.dtype = dtype
        options.write.compressionLevel = level
        options.write.byteGrouping = byteGrouping
        options.write.threads = threads
        return options
    }
}

extension CheckpointFormat: ExpressibleByArgument {}
extension DTypePolicy: ExpressibleByArgument {}

/// "1 tensor", "2 tensors", "22,713,216 parameters".
enum Count {
    static func of(_ count: Int, _ singular: String, plural: String? = nil) -> String {
        "\(Console.number(count)) \(count == 1 ? singular : (plural ?? singular + "s"))"
    }
}

/// Rendering helpers: JSON on stdout, diagnostics and errors on stderr.
enum Console {
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    static func error(_ message: String) {
        fflush(nil)
        FileHandle.standardError.write(Data("pkm-convert: error: \(message)\n".utf8))
    }

    static func diagnostics(_ diagnostics: [Diagnostic]) {
        fflush(nil)
        for diagnostic in diagnostics {
            FileHandle.standardError.write(Data("pkm-convert: \(diagnostic.severity.rawValue): \(diagnostic.message)\n".utf8))
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

/// Error messages as the CLI prints them: the library's own text, with its generic remedy
/// (a `ReaderLimits` property, an `HDF5Probe` field) replaced by the flag that does it here.
enum ErrorText {
    /// The `--max-…` flag that raises each reader limit.
    static let limitFlags: [ReaderLimit: String] = [
        .headerBytes: "--max-header-bytes", .tensorCount: "--max-tensor-count",
        .rank: "--max-rank", .totalBytes: "--max-total-bytes",
    ]

    static func render(_ error: Error) -> String {
        guard let format = error as? FormatError else { return String(describing: error) }
        switch format {
        case .limitExceeded(let path, let limit, let value, let maximum):
            return "\(path): \(limit.rawValue) is \(value), above the limit \(maximum); if the file is trusted, raise it with \(limitFlags[limit] ?? "--max-…")"
        case .isolatedReadTimedOut(let path, let seconds):
            return "\(path): the isolated HDF5 reader did not finish within \(String(format: "%g", seconds)) s (killed): libhdf5 loops on damaged metadata, or the disk is very slow (then raise --hdf5-probe-timeout)"
        case .isolatedReaderUnavailable(let path, _, let message):
            return "\(path): could not start the isolated HDF5 reader: \(message); pass --hdf5-probe off to read it in this process only"
        case .isolatedReadFailed:
            // The child's refusal uses the library's wording; give it the CLI's remedies too.
            var text = format.description
            for limit in ReaderLimit.allCases {
                text = text.replacingOccurrences(of: "raise the limit (ReaderLimits.\(limit.propertyName))",
                                                 with: "raise it with \(limitFlags[limit] ?? "--max-…")")
            }
            return text
        default:
            return format.description
        }
    }
}
