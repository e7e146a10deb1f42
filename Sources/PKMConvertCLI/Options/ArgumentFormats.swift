import ArgumentParser
import Foundation
import PKMModel
import PKMPipeline

/// The string formats of the command line, parsed here (the library takes typed values):
/// `4x24` (random inputs), `101,7592,102` (token ids), `4,8` (layers), `2GB` (sizes).
/// Each failure is a `ValidationError` naming the flag, printed as one error line.
enum ArgumentFormats {
    /// `BATCHxSEQUENCE` (`4x24`) for `--random-inputs`.
    static func randomInputs(_ text: String, seed: UInt64) throws -> InputSource {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 2, let batch = parts[0], let sequence = parts[1], batch > 0, sequence > 0 else {
            throw ValidationError("--random-inputs: '\(text)' is not BATCHxSEQUENCE with both above 0, e.g. 4x24")
        }
        return .random(batchSize: batch, sequenceLength: sequence, seed: seed)
    }

    /// A comma-separated list of token ids, as one sequence, for `--input-ids`.
    static func tokenIds(_ text: String) throws -> InputSource {
        let ids = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !ids.isEmpty, ids.allSatisfy({ $0 != nil }) else {
            throw ValidationError("--input-ids: '\(text)' is not a comma-separated list of integers")
        }
        do {
            return .given(try ModelInputs(batchSize: 1, sequenceLength: ids.count, inputIds: ids.compactMap { $0 }))
        } catch let error as ModelError {
            throw ValidationError("--input-ids: \(error)")
        }
    }

    /// `--layers 4,8`: comma-separated, non-negative, no repeats.
    static func layers(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var layers: [Int] = []
        for part in parts {
            if let layer = Int(part), layer < 0 {
                throw ValidationError("--layers: layer \(layer) is negative; encoder layers are counted from 0")
            }
            guard let layer = Int(part) else {
                throw ValidationError("--layers: '\(text)' is not a comma-separated list of layer indices (e.g. 4,8)")
            }
            guard !layers.contains(layer) else { throw ValidationError("--layers: layer \(layer) is listed twice") }
            layers.append(layer)
        }
        return layers
    }

    /// `--max-shard-size` as Hugging Face reads it: `2GB` = 2·10⁹ bytes (KB, MB, GB, TB decimal), plus
    /// `KiB`/`MiB`/`GiB` (binary) and plain byte counts.
    static func size(_ text: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
        let upper = trimmed.uppercased()
        for (unit, factor) in units where upper.hasSuffix(unit) {
            if let value = Double(upper.dropLast(unit.count).trimmingCharacters(in: .whitespaces)), value > 0,
               let bytes = Int(exactly: (value * factor).rounded(.down)), bytes > 0 { return bytes }
            break
        }
        if let bytes = Int(trimmed), bytes > 0 { return bytes }
        throw ValidationError("--max-shard-size: '\(text)' is not a size such as 2GB, 500MB or 1000000")
    }
}
