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

/// Error messages as the CLI prints them: the library's typed errors rendered with the flags that fix them here.
///
/// The one table from library settings (``Setting``, ``ReaderLimit``) to the flags of this executable.
enum ErrorText {
    /// The `--max-…` flag that raises each reader limit.
    static let limitFlags: [ReaderLimit: String] = [
        .headerBytes: "--max-header-bytes", .tensorCount: "--max-tensor-count",
        .rank: "--max-rank", .totalBytes: "--max-total-bytes", .amplifiedBytes: "--max-total-bytes",
    ]

    /// The flag (or command) that sets each library setting a message names.
    static func flag(for setting: Setting) -> String {
        switch setting {
        case .configURL: return "--config"
        case .tokenizerURL: return "--tokenizer"
        case .outputFormat: return "--to"
        case .strict: return "--strict"
        case .mappingReport: return "--json"
        case .maxLength: return "--max-length"
        case .batchSize: return "--batch-size"
        case .givenInputs: return "--input-ids"
        case .randomInputs: return "--random-inputs"
        case .graftLayers: return "--layers"
        case .graftHyperParameters: return "--n-keys/--heads/--knn/--k-dim/--query-*"
        case .exportLayout: return "--export-memory-layout"
        case .diffTolerance: return "--atol"
        case .referenceRecipe: return "`pkm-convert run CHECKPOINT --random-inputs 4x24 --seed 0 -o reference.h5`"
        }
    }

    /// The one line printed for `error`, control characters escaped (a file's names cannot write to the terminal).
    static func render(_ error: Error) -> String { text(error).escapedForTerminal }

    static func text(_ error: Error) -> String {
        if let pipeline = error as? PipelineError { return pipeline.rendered(naming: flag(for:)) }
        guard let format = error as? FormatError else { return String(describing: error) }
        switch format {
        case .isolatedReadTimedOut(let path, let seconds):
            return "\(path): the isolated HDF5 reader did not finish within \(String(format: "%g", seconds)) s (killed): libhdf5 loops on damaged metadata, or the disk is very slow (then raise --hdf5-probe-timeout)"
        case .isolatedReaderUnavailable(let path, _, let message):
            return "\(path): could not start the isolated HDF5 reader: \(message); pass --hdf5-probe off to read it in this process only"
        default:
            return format.rendered(raising: { "raise it with \(limitFlags[$0] ?? "--max-…")" })
        }
    }
}
