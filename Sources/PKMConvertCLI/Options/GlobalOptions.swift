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
        return limits
    }

    /// How files are read: the limits, HDF5 isolation by this executable (it serves the probe itself), the state-dict key.
    var read: ReadOptions {
        ReadOptions(limits: limits,
                    hdf5Isolation: hdf5Probe.depth.map { HDF5Probe(command: ProbeHDF5.command, depth: $0, timeoutSeconds: hdf5ProbeTimeout) },
                    stateDictKey: stateDictKey)
    }

    /// How the library opens a checkpoint: the limits, with the config, tokenizer and memory options of a command.
    func open(config: String? = nil, tokenizer: String? = nil, memory: ModelArguments? = nil) -> OpenOptions {
        OpenOptions(read: read, configURL: config.map { URL(fileURLWithPath: $0) }, tokenizerURL: tokenizer.map { URL(fileURLWithPath: $0) },
                    memory: memory?.options ?? MemoryImportOptions())
    }

    /// Opens the checkpoint at `path` once, to hand to the library's operations.
    func load(_ path: String, config: String? = nil, tokenizer: String? = nil, memory: ModelArguments? = nil) throws -> LoadedCheckpoint {
        try LoadedCheckpoint(URL(fileURLWithPath: path), options: open(config: config, tokenizer: tokenizer, memory: memory))
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
