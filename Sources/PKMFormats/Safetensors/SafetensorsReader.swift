import Foundation
import PKMTensor

/// Reads one Hugging Face safetensors file.
///
/// The file is memory-mapped (`Data(contentsOf:options: .alwaysMapped)`), and each tensor's
/// storage is a slice of that mapping: nothing is copied until the values are used, and a
/// tensor stays valid after the reader is released (the slice keeps the mapping alive). The
/// file must not be truncated or rewritten in place while tensors from it are in use (the
/// writers in this module replace files by renaming, which is safe).
///
/// Opening validates the whole header (see the validation list on `SafetensorsHeader` in
/// `SafetensorsHeader.swift`): framing, JSON, duplicate keys, dtypes, shapes, limits, and
/// that the data offsets tile the data buffer exactly. So ``tensor(named:)`` cannot fail for
/// a tensor listed in ``tensorInfos``.
public final class SafetensorsReader: CheckpointReader {
    /// The file this reader opened.
    public let url: URL
    /// Always ``CheckpointFormat/safetensors``.
    public var format: CheckpointFormat { .safetensors }
    /// Tensors in file order: by data offset (zero-size tensors sharing an offset keep their
    /// header order).
    public let tensorInfos: [TensorInfo]
    /// The header's `__metadata__` map without `pkm_provenance`; `config`, when present, is the
    /// model config JSON.
    public let metadata: [String: String]
    /// `__metadata__["pkm_provenance"]`, decoded.
    public let provenance: Provenance?
    /// N, the length of the JSON header in bytes; the data buffer starts at byte `8 + N`.
    public let headerByteCount: Int

    private let mapping: Data
    /// The mapped file (see ``CheckpointReader/mappedFileBytes``).
    public var mappedFileBytes: Data? { mapping }
    /// Each tensor's info and absolute byte range in the file.
    private let entries: [String: (info: TensorInfo, range: Range<Int>)]

    /// Maps `url` and validates its header.
    /// - Throws: ``FormatError``: `.fileNotFound`; `.io` for a folder or a file that cannot be
    ///   mapped; `.truncated` for an empty file, a file shorter than 8 bytes, a header length
    ///   beyond the file, or tensor data beyond the end of the file; `.limitExceeded` for a header
    ///   longer than `limits.maxHeaderBytes` (refused before it is read) or too many tensors, too
    ///   high a rank, too many bytes; `.invalidHeader` for a header that does not start with `{`,
    ///   invalid UTF-8 or JSON, a malformed `__metadata__`, or bytes after the last tensor;
    ///   `.duplicateTensor`; `.invalidTensor` for malformed entries (wrong field types, negative
    ///   dimensions); `.unsupportedDType` naming the tensor; `.invalidOffsets` for offsets that
    ///   overflow, disagree with shape × dtype, overlap or leave gaps.
    public init(url: URL, limits: ReaderLimits = ReaderLimits()) throws {
        self.url = url
        let path = url.path
        let file = try MappedFile.checkpoint(at: url, kind: "a .safetensors file")
        let (header, dataStart) = try SafetensorsHeader.read(file: file, path: path, limits: limits)
        mapping = file
        headerByteCount = dataStart - 8
        tensorInfos = header.entries.map(\.info)
        var byName: [String: (info: TensorInfo, range: Range<Int>)] = [:]
        byName.reserveCapacity(header.entries.count)
        for entry in header.entries {
            // The header's key scan already refused duplicates; this only restates the invariant.
            guard byName.updateValue((entry.info, (dataStart + entry.begin)..<(dataStart + entry.end)), forKey: entry.info.name) == nil else {
                throw FormatError.duplicateTensor(path: path, tensor: entry.info.name)
            }
        }
        entries = byName
        metadata = header.metadata
        provenance = header.provenance
    }

    /// The absolute byte range of a tensor's data in the file, or nil for an unknown name.
    public func byteRange(ofTensor name: String) -> Range<Int>? {
        entries[name]?.range
    }

    /// Drops the resident pages wholly inside the tensor's byte range (see ``CheckpointReader/releasePages(ofTensor:)``).
    public func releasePages(ofTensor name: String, upTo: Int) {
        guard let range = entries[name]?.range, upTo > 0 else { return }
        let end = range.lowerBound + min(upTo, range.count)
        mapping.withUnsafeBytes { bytes in MappedPages.release(bytes, range: range.lowerBound..<end) }
    }

    /// One tensor: a slice of the mapped file (no copy).
    /// - Throws: ``FormatError/tensorNotFound(path:tensor:)``.
    public func tensor(named name: String) throws -> Tensor {
        guard let entry = entries[name] else { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
        let start = mapping.startIndex
        let storage = mapping[(start + entry.range.lowerBound)..<(start + entry.range.upperBound)]
        do {
            return try Tensor(dtype: entry.info.dtype, shape: entry.info.shape, storage: storage, name: name)
        } catch {
            throw FormatError.tensor(path: url.path, tensor: name, underlying: error)
        }
    }
}
