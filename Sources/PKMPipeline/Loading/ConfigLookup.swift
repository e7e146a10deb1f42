import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTensor

extension ResolvedCheckpoint {
    /// The config JSON and a description of where it came from.
    static func findConfig(checkpoint: URL, reader: any CheckpointReader, explicit: URL?,
                           maxBytes: Int = ReaderLimits().maxHeaderBytes) throws -> (Data, String) {
        if let explicit {
            guard let data = try readConfigFile(explicit, maxBytes: maxBytes) else { throw FormatError.fileNotFound(path: explicit.path) }
            return (data, explicit.path)
        }
        var looked: [String] = []
        if let embedded = reader.metadata["config"] {
            let origin: String
            switch reader.format {
            case .hdf5: origin = "HDF5 root attribute 'config'"
            case .safetensors: origin = "safetensors __metadata__[\"config\"]"
            case .pkmz: origin = "pkmz header config"
            case .pytorch: origin = "PyTorch checkpoint metadata"
            }
            return (Data(embedded.utf8), "\(reader.url.path) (\(origin))")
        }
        looked.append("the file's embedded config")
        let beside = ModelFolder(holding: checkpoint).configURL
        if let data = try readConfigFile(beside, maxBytes: maxBytes) { return (data, beside.path) }
        looked.append(beside.path)
        throw PipelineError.configNotFound(checkpoint: checkpoint.path, looked: looked)
    }

    /// Reads a config file after checking its size against `maxBytes` (the header limit), so a
    /// `config.json` that is really a multi-gigabyte file is refused before it is read.
    /// Returns nil when there is no regular file at `url`.
    static func readConfigFile(_ url: URL, maxBytes: Int, what: String = "a config file") throws -> Data? {
        // Nothing there: the caller looks elsewhere. Something that is not a regular file (a FIFO, a device, a
        // folder) is an error naming what it is, never opened for reading (a FIFO would block, /dev/zero never ends).
        // Symbolic links are followed (HF caches link config.json into blobs/).
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try RegularFile.contents(of: url, what: what, maxBytes: maxBytes)
    }
}
