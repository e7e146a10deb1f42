import Foundation
import PKMTensor

/// Writes one safetensors file that the Hugging Face `safetensors` package reads.
///
/// The header is computed from the tensor table alone, before any data is asked for:
/// `__metadata__` first (the `metadata` map, keys sorted, plus `pkm_provenance` as JSON when
/// `options.provenance` is set, replacing any `pkm_provenance` already in `metadata`), then each
/// tensor in the order given, with consecutive `data_offsets` from 0. The JSON is padded with
/// spaces to a multiple of 8 bytes, as the reference writer does, so that the data buffer starts
/// 8-byte aligned. An empty metadata map writes no `__metadata__` key.
///
/// Tensors are then streamed one at a time through ``AtomicOutputFile``: nothing appears at
/// `url` unless every tensor was written, and an existing file there stays untouched until
/// then. The same inputs always give the same bytes.
public enum SafetensorsWriter: CheckpointWriter {
    /// Writes `tensorInfos` in order, asking `tensor` for each one's data just before writing it.
    /// - Parameters:
    ///   - metadata: `__metadata__` strings; `config` is the model config JSON.
    ///   - options: only `provenance` is used.
    ///   - progress: called after each tensor with (tensors written, total).
    /// - Throws: ``FormatError``: `.duplicateTensor`; `.invalidTensor` for the reserved name
    ///   `__metadata__`, or data whose dtype or shape differs from its entry; `.tensor` for a
    ///   shape that is negative or overflows; `.io` when the folder is not writable;
    ///   `.writeFailed`; or whatever `tensor` throws. Nothing is left at `url` on failure.
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                             options: WriteOptions = WriteOptions(), progress: ((Int, Int) -> Void)? = nil,
                             tensor: (TensorInfo) throws -> Tensor) throws {
        let path = url.path
        let layout = try header(for: tensorInfos, metadata: metadata, provenance: try options.resolvedProvenance(), path: path)
        try AtomicOutputFile.write(to: url) { output in
            try output.write(layout.prefix)
            for (index, info) in tensorInfos.enumerated() {
                let data = try tensor(info)
                guard data.dtype == info.dtype, data.shape == info.shape else {
                    throw FormatError.invalidTensor(path: path, tensor: info.name, reason:
                        "the data supplied is \(data.dtype.rawValue) \(data.shape) but the tensor table declares \(info.dtype.rawValue) \(info.shape)")
                }
                guard data.storage.count == layout.byteCounts[index] else {
                    throw FormatError.invalidTensor(path: path, tensor: info.name, reason:
                        "the data supplied holds \(data.storage.count) bytes, \(layout.byteCounts[index]) expected")
                }
                try output.write(data.storage)
                progress?(index + 1, tensorInfos.count)
            }
            guard output.bytesWritten == layout.fileSize else {
                throw FormatError.writeFailed(path: path, reason: "wrote \(output.bytesWritten) bytes, \(layout.fileSize) expected")
            }
        }
    }

    /// The start of a safetensors file for a tensor table: the 8-byte length, then the padded JSON.
    struct HeaderLayout {
        /// Length field and JSON header, ready to write.
        let prefix: Data
        /// Bytes of each tensor, in table order.
        let byteCounts: [Int]
        /// The whole file's size.
        let fileSize: Int
    }

    /// Builds the header of a file holding `tensorInfos` (exposed to tests; see the type's documentation).
    /// - Throws: ``FormatError`` for duplicate or reserved names and invalid shapes.
    static func header(for tensorInfos: [TensorInfo], metadata: [String: String], provenance: Provenance?,
                       path: String) throws -> HeaderLayout {
        var fullMetadata = metadata
        if let provenance {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            fullMetadata[SafetensorsNames.provenanceKey] = String(decoding: try encoder.encode(provenance), as: UTF8.self)
        }

        var json = "{"
        var first = true
        if !fullMetadata.isEmpty {
            json += JSONText.quoted(SafetensorsNames.metadataKey) + ":{"
            json += fullMetadata.sorted { $0.key < $1.key }
                .map { JSONText.quoted($0.key) + ":" + JSONText.quoted($0.value) }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var seen: Set<String> = []
        var byteCounts: [Int] = []
        byteCounts.reserveCapacity(tensorInfos.count)
        var offset = 0
        for info in tensorInfos {
            guard info.name != SafetensorsNames.metadataKey else {
                throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "'\(SafetensorsNames.metadataKey)' is reserved for metadata in safetensors; rename the tensor")
            }
            guard seen.insert(info.name).inserted else { throw FormatError.duplicateTensor(path: path, tensor: info.name) }
            let byteCount: Int
            do { byteCount = try ShapeMath.checkedByteCount(info.shape, dtype: info.dtype) } catch {
                throw FormatError.tensor(path: path, tensor: info.name, underlying: error)
            }
            let (end, overflow) = offset.addingReportingOverflow(byteCount)
            guard !overflow else {
                throw FormatError.invalidTensor(path: path, tensor: info.name, reason: "the tensors' total size overflows 64-bit offsets")
            }
            if !first { json += "," }
            first = false
            json += JSONText.quoted(info.name)
            json += ":{\"dtype\":\"\(info.dtype.rawValue)\",\"shape\":[\(info.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}"
            byteCounts.append(byteCount)
            offset = end
        }
        json += "}"
        var headerBytes = Data(json.utf8)
        let padding = (8 - headerBytes.count % 8) % 8
        headerBytes.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: padding))

        var prefix = Data()
        prefix.reserveCapacity(8 + headerBytes.count)
        let length = UInt64(headerBytes.count)
        for shift in stride(from: 0, to: 64, by: 8) { prefix.append(UInt8(truncatingIfNeeded: length >> UInt64(shift))) }
        prefix.append(headerBytes)
        let (fileSize, overflow) = prefix.count.addingReportingOverflow(offset)
        guard !overflow else {
            throw FormatError.writeFailed(path: path, reason: "the file's size overflows 64-bit offsets")
        }
        return HeaderLayout(prefix: prefix, byteCounts: byteCounts, fileSize: fileSize)
    }
}
