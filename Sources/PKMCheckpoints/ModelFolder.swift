import Foundation
import PKMFormats
import PKMTensor

/// A Hugging Face model folder, read and written in one place: the weights (one file, or shards
/// plus `model.safetensors.index.json`), `config.json`, and the tokenizer files.
///
/// Reading picks the weights file with ``Checkpoints/checkpointFile(inFolder:)``; writing follows
/// what `save_pretrained` and `huggingface_hub` write, byte for byte where a tool compares bytes
/// (the index JSON is `json.dumps(index, indent=2, sort_keys=True) + "\n"`).
public struct ModelFolder: Sendable, Equatable {
    /// The folder.
    public let url: URL

    public init(_ url: URL) { self.url = url }

    /// The config file name.
    public static let configFileName = "config.json"
    /// The index of a sharded safetensors checkpoint.
    public static let shardIndexFileName = "model.safetensors.index.json"
    /// Tokenizer files, in the order they are looked for and copied.
    public static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                                        "vocab.json", "merges.txt", "added_tokens.json"]

    /// Whether `url` is an existing folder (symbolic links followed).
    public static func isFolder(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Whether a destination means a model folder: an existing folder, or a path without an extension.
    public static func isFolderDestination(_ url: URL) -> Bool {
        if FileManager.default.fileExists(atPath: url.path) { return isFolder(url) }
        return url.pathExtension.isEmpty
    }

    /// The folder a checkpoint's side files (config.json, tokenizer files) live in: the checkpoint
    /// itself when it is a folder, else the folder holding the file.
    public init(holding checkpoint: URL) {
        url = ModelFolder.isFolder(checkpoint) ? checkpoint : checkpoint.deletingLastPathComponent()
    }

    /// `config.json` in the folder.
    public var configURL: URL { url.appendingPathComponent(Self.configFileName) }

    /// Weights files of a model folder, most preferred first: safetensors over `torch.save`
    /// pickles (as transformers prefers them), sharded indexes before single files.
    public static let preferredWeightsFiles = [
        "model.safetensors.index.json", "model.safetensors", "model.pkmz", "model.h5",
        "pytorch_model.bin.index.json", "pytorch_model.bin",
    ]

    /// Files HF's Trainer and training loops keep next to the weights: never the model.
    public static let trainingStateFiles: Set<String> = [
        "training_args.bin", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state.pth",
    ]

    /// The weights file (or index) the folder holds: the first of ``preferredWeightsFiles`` present, else the
    /// folder's only checkpoint file (shards of an index, training state such as `optimizer.pt` and
    /// `rng_state_N.pth` are not candidates).
    /// - Throws: ``FormatError/noCheckpointInFolder(path:found:)`` when the folder holds none (the message lists
    ///   what it does hold), or ``FormatError/unknownFormat(path:reason:)`` when it holds several.
    public func weightsFile() throws -> URL {
        let folder = url
        for preferred in Self.preferredWeightsFiles {
            let candidate = folder.appendingPathComponent(preferred)
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
        }
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { !$0.hasPrefix(".") }
        let candidates = contents.filter { name in
            guard CheckpointFormat(pathExtension: (name as NSString).pathExtension) != nil || name.hasSuffix(".index.json") else { return false }
            return !Self.trainingStateFiles.contains(name) && !name.hasPrefix("rng_state")
        }.sorted()
        if candidates.count == 1 { return folder.appendingPathComponent(candidates[0]) }
        if candidates.isEmpty {
            let shown = contents.sorted().prefix(12).joined(separator: ", ")
            throw FormatError.noCheckpointInFolder(path: folder.path, found: contents.isEmpty ? "it is empty" : "it holds \(shown)\(contents.count > 12 ? ", …" : "")")
        }
        throw FormatError.unknownFormat(path: folder.path, reason: "several checkpoint files (\(candidates.joined(separator: ", "))); name one")
    }

    /// The tokenizer files present, by name.
    public var presentTokenizerFiles: [String] {
        Self.tokenizerFiles.filter { FileManager.default.fileExists(atPath: url.appendingPathComponent($0).path) }
    }

    /// Creates the folder (and its parents) if needed.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``.
    public func create() throws {
        // Never over a file, a FIFO or a device: a folder output goes to a folder or to nothing.
        try OutputDestination.checkFolder(url)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw FormatError.writeFailed(path: url.path, reason: "cannot create the folder: \(error.localizedDescription)")
        }
    }

    /// Writes `data` as `name` in the folder, atomically.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``.
    public func write(_ data: Data, as name: String) throws {
        let file = url.appendingPathComponent(name)
        do {
            try data.write(to: file, options: .atomic)
        } catch {
            throw FormatError.writeFailed(path: file.path, reason: error.localizedDescription)
        }
    }

    /// Copies the tokenizer files of `source` that exist into this folder (a file already there is replaced;
    /// copying a folder onto itself does nothing). Returns the names copied.
    /// - Throws: ``FormatError/writeFailed(path:reason:)``.
    public func copyTokenizerFiles(from source: ModelFolder) throws -> [String] {
        var copied: [String] = []
        for file in Self.tokenizerFiles {
            let from = source.url.appendingPathComponent(file), to = url.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: from.path), from.standardizedFileURL != to.standardizedFileURL else { continue }
            do {
                try? FileManager.default.removeItem(at: to)
                try FileManager.default.copyItem(at: from, to: to)
            } catch {
                throw FormatError.writeFailed(path: to.path, reason: "cannot copy \(from.path): \(error.localizedDescription)")
            }
            copied.append(file)
        }
        return copied
    }

    /// Shard file names for `count` shards: `model.safetensors`, or `model-00001-of-00003.safetensors`….
    public static func shardNames(count: Int) -> [String] {
        count <= 1 ? ["model.safetensors"] : (1...count).map { String(format: "model-%05d-of-%05d.safetensors", $0, count) }
    }

    /// Splits tensors of `byteCounts` (in order) into shards exactly as `huggingface_hub` does: in order, a new
    /// shard when the next tensor would pass `maxShardBytes`, and a tensor larger than the limit alone.
    /// Returns the tensor indices of each shard (one shard when `maxShardBytes` is nil).
    public static func shardPlan(byteCounts: [Int], maxShardBytes: Int?) -> [[Int]] {
        var shards: [[Int]] = [], current: [Int] = [], currentBytes = 0
        for (index, bytes) in byteCounts.enumerated() {
            if let limit = maxShardBytes {
                if bytes > limit { shards.append([index]); continue }
                if currentBytes + bytes > limit { shards.append(current); current = []; currentBytes = 0 }
            }
            current.append(index)
            currentBytes += bytes
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }
        return shards
    }

    /// `model.safetensors.index.json` as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
    public static func shardIndexJSON(weightMap: [String: String], totalSize: Int, totalParameters: Int) -> String {
        var text = "{\n  \"metadata\": {\n    \"total_parameters\": \(totalParameters),\n    \"total_size\": \(totalSize)\n  },\n  \"weight_map\": {\n"
        let entries = weightMap.sorted { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) }
        text += entries.map { "    \(pythonJSONString($0.key)): \(pythonJSONString($0.value))" }.joined(separator: ",\n")
        text += "\n  }\n}\n"
        return text
    }

    /// A JSON string literal as Python's `json.dumps` writes it (`ensure_ascii=True`).
    static func pythonJSONString(_ text: String) -> String {
        var output = "\""
        for unit in text.utf16 {
            switch unit {
            case 0x22: output += "\\\""
            case 0x5C: output += "\\\\"
            case 0x0A: output += "\\n"
            case 0x0D: output += "\\r"
            case 0x09: output += "\\t"
            case 0x08: output += "\\b"
            case 0x0C: output += "\\f"
            case 0x20..<0x7F: output.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
            default: output += String(format: "\\u%04x", unit)
            }
        }
        return output + "\""
    }
}
