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

    /// The most compression threads accepted: each holds frame buffers, and no machine this runs on has more cores.
    static let maximumThreads = 1024
    var maximumThreads: Int { Self.maximumThreads }

    func validate() throws {
        guard (1...22).contains(level) else { throw ValidationError("--level must be between 1 and 22") }
        // Checked before anything is allocated per thread: a mistyped count must not reserve gigabytes first.
        guard (0...maximumThreads).contains(threads) else {
            throw ValidationError("--threads must be between 0 (all cores) and \(maximumThreads), is \(threads)")
        }
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
