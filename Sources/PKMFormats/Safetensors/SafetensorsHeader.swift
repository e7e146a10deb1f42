import Foundation
import PKMTensor

/// Names fixed by the safetensors format and by pkm-convert's use of it, declared once.
enum SafetensorsNames {
    /// The header key holding the string → string metadata map.
    static let metadataKey = "__metadata__"
    /// The `__metadata__` entry holding ``Provenance`` as JSON.
    static let provenanceKey = "pkm_provenance"
    /// The conventional name of a sharded checkpoint's index file.
    static let indexFileName = "model.safetensors.index.json"
}

/// The validated header of one safetensors file (internal to the readers).
///
/// Layout (https://github.com/huggingface/safetensors, "Format"): 8 bytes, a little-endian
/// unsigned 64-bit header length N; N bytes of UTF-8 JSON, starting with `{` and possibly
/// padded at the end with spaces; then the data buffer. The JSON maps each tensor name to
/// `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}` (offsets relative to the
/// data buffer), plus an optional `"__metadata__"` string → string map.
///
/// Validation follows the reference Rust reader, a little stricter where the format's text says
/// MUST but the reference does not enforce it:
/// - N within the file and the header's first byte `{` (else: not a safetensors file), then N at
///   most ``ReaderLimits/maxHeaderBytes`` (100 MiB by default, the reference's cap), checked
///   before the header is parsed;
/// - the header starts with `{`, is valid UTF-8 and valid JSON (trailing JSON whitespace is
///   allowed, as the reference allows it; a trailing NUL is not);
/// - no key appears twice in any object (the format forbids duplicates, but serde and
///   `JSONSerialization` would silently keep the last one, letting two readers see different
///   tensors in one file), found by the strict parser (``StrictJSONParser``, shared with pkmz);
/// - `dtype` is one of ``DType``'s strings; other safetensors dtypes (`F8_E4M3`, `U16`, `U32`,
///   `U64`, …) are refused as unsupported;
/// - `shape` and `data_offsets` hold non-negative JSON integers (not `1.0`, not booleans),
///   `data_offsets` exactly two, with `begin ≤ end`; rank, tensor count and total bytes within
///   ``ReaderLimits``; `end − begin == product(shape) × dtype size`, computed with overflow checks;
/// - sorted by offsets, the tensors tile the data buffer exactly: the first starts at 0, each
///   starts where the previous one ends (no gap, no overlap), the last ends at the end of the file.
///
/// Unknown fields inside a tensor entry are ignored, as the reference ignores them. A
/// `"__metadata__": null` means no metadata (the reference accepts it).
struct SafetensorsHeader {
    /// One tensor's validated entry.
    struct Entry: Sendable {
        let info: TensorInfo
        /// Data range relative to the data buffer.
        let begin: Int
        let end: Int
    }

    /// Entries in file order: by data offset, zero-size tensors at one offset in header order.
    let entries: [Entry]
    /// `__metadata__` without `pkm_provenance`.
    let metadata: [String: String]
    /// `__metadata__["pkm_provenance"]`, decoded.
    let provenance: Provenance?

    /// Validates the framing of a whole safetensors file held in `file` and parses its header.
    /// - Returns: the header and the absolute offset where the data buffer starts.
    /// - Throws: ``FormatError`` naming `path`, the tensor and the byte offset.
    static func read(file: Data, path: String, limits: ReaderLimits) throws -> (header: SafetensorsHeader, dataStart: Int) {
        let size = file.count
        guard size > 0 else {
            throw FormatError.truncated(path: path, what: "safetensors header length (the file is empty)", offset: 0, needed: 8, available: 0)
        }
        guard size >= 8 else {
            throw FormatError.truncated(path: path, what: "safetensors header length", offset: 0, needed: 8, available: size)
        }
        var cursor = ByteCursor(file.prefix(8))
        let rawLength: UInt64
        do { rawLength = try cursor.readLittleEndian() } catch {
            throw FormatError.truncated(path: path, what: "safetensors header length", offset: 0, needed: 8, available: size)
        }
        // A length beyond the file, or a header not starting with '{', is not a safetensors file (a text
        // file named .safetensors declares a "length" of its first 8 characters): say so rather than name
        // the header limit, which only a plausible header that is too large should name.
        guard let headerLength = Int(exactly: rawLength), headerLength <= size - 8 else {
            throw FormatError.invalidHeader(path: path, reason: "not a safetensors file: its first 8 bytes declare a header of \(rawLength) bytes but the file has \(size)")
        }
        if headerLength > 0, file[file.startIndex + 8] != UInt8(ascii: "{") {
            throw FormatError.invalidHeader(path: path, reason: "not a safetensors file (or a damaged one): the JSON header at byte 8 starts with byte 0x\(String(file[file.startIndex + 8], radix: 16, uppercase: true)), not '{'")
        }
        guard headerLength <= limits.maxHeaderBytes else {
            throw FormatError.limitExceeded(path: path, limit: .headerBytes, value: headerLength, maximum: limits.maxHeaderBytes)
        }
        let start = file.startIndex
        let json = file[(start + 8)..<(start + 8 + headerLength)]
        let dataStart = 8 + headerLength
        let header = try parse(json: json, dataByteCount: size - dataStart, dataStart: dataStart, path: path, limits: limits)
        return (header, dataStart)
    }

    /// Parses and validates the JSON header.
    /// - Parameters:
    ///   - json: the N header bytes.
    ///   - dataByteCount: bytes in the file after the header.
    ///   - dataStart: absolute offset of the data buffer, for error messages.
    static func parse(json: Data, dataByteCount: Int, dataStart: Int, path: String, limits: ReaderLimits) throws -> SafetensorsHeader {
        guard let first = json.first else {
            throw FormatError.invalidHeader(path: path, reason: "the JSON header at byte 8 is empty (header length 0); it must be a JSON object starting with '{'")
        }
        guard first == UInt8(ascii: "{") else {
            throw FormatError.invalidHeader(path: path, reason: "the JSON header at byte 8 starts with byte 0x\(String(first, radix: 16, uppercase: true)), not '{'; this is not a safetensors file or it is damaged")
        }
        let document = try Self.parseJSON(json, path: path, what: "the JSON header (bytes 8..<\(dataStart))") { duplicate in
            switch duplicate.count {
            case 1 where duplicate[0] == SafetensorsNames.metadataKey:
                return FormatError.invalidHeader(path: path, reason: "the key '\(SafetensorsNames.metadataKey)' appears twice")
            case 1:
                return FormatError.duplicateTensor(path: path, tensor: duplicate[0])
            case 2 where duplicate[0] == SafetensorsNames.metadataKey:
                return FormatError.invalidHeader(path: path, reason: "metadata key '\(duplicate[1])' appears twice in '\(SafetensorsNames.metadataKey)'")
            case 2:
                return FormatError.invalidTensor(path: path, tensor: duplicate[0], reason: "field '\(duplicate[1])' appears twice in its header entry")
            default:
                return FormatError.invalidHeader(path: path, reason: "key '\(duplicate.joined(separator: "."))' appears twice")
            }
        }
        guard let members = document.members else {
            throw FormatError.invalidHeader(path: path, reason: "the JSON header is \(document.typeName), not a JSON object")
        }

        // Metadata.
        var metadata: [String: String] = [:]
        var provenance: Provenance?
        if let rawMetadata = document[SafetensorsNames.metadataKey], rawMetadata != .null {
            guard let map = rawMetadata.members else {
                throw FormatError.invalidHeader(path: path, reason: "'\(SafetensorsNames.metadataKey)' is \(rawMetadata.typeName), not an object of strings")
            }
            for member in map {
                guard case .string(let text) = member.value else {
                    throw FormatError.invalidHeader(path: path, reason: "metadata value '\(member.key)' in '\(SafetensorsNames.metadataKey)' is \(member.value.typeName), not a string")
                }
                if member.key == SafetensorsNames.provenanceKey {
                    do {
                        if let depth = JSONSyntax.depthError(in: Data(text.utf8)) { throw FormatError.invalidHeader(path: path, reason: "provenance JSON is \(depth)") }
                        provenance = try JSONDecoder().decode(Provenance.self, from: Data(text.utf8))
                    } catch {
                        throw FormatError.invalidHeader(path: path, reason: "'\(SafetensorsNames.metadataKey)[\"\(member.key)\"]' is not provenance JSON: \(error)")
                    }
                } else {
                    metadata[member.key] = text
                }
            }
        }

        // Tensor entries, visited in header order so that errors are deterministic.
        let tensorMembers = members.filter { $0.key != SafetensorsNames.metadataKey }
        guard tensorMembers.count <= limits.maxTensorCount else {
            throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: tensorMembers.count, maximum: limits.maxTensorCount)
        }
        var entries: [(entry: Entry, headerIndex: Int)] = []
        entries.reserveCapacity(tensorMembers.count)
        var totalBytes = 0
        for (headerIndex, member) in tensorMembers.enumerated() {
            let entry = try parseEntry(name: member.key, value: member.value, path: path, limits: limits)
            let (newTotal, overflow) = totalBytes.addingReportingOverflow(entry.info.byteCount)
            guard !overflow, newTotal <= limits.maxTotalBytes else {
                throw FormatError.limitExceeded(path: path, limit: .totalBytes, value: overflow ? Int.max : newTotal, maximum: limits.maxTotalBytes)
            }
            totalBytes = newTotal
            entries.append((entry, headerIndex))
        }

        // The data must be tiled exactly, in offset order.
        entries.sort { left, right in
            if left.entry.begin != right.entry.begin { return left.entry.begin < right.entry.begin }
            if left.entry.end != right.entry.end { return left.entry.end < right.entry.end }
            return left.headerIndex < right.headerIndex
        }
        var expected = 0
        var previous: Entry?
        for (entry, _) in entries {
            let name = entry.info.name
            if entry.begin < expected, let previous {
                throw FormatError.invalidOffsets(path: path, tensor: name, reason:
                    "data_offsets [\(entry.begin), \(entry.end)] overlap tensor '\(previous.info.name)' [\(previous.begin), \(previous.end)] (file bytes \(dataStart + entry.begin)..<\(dataStart + previous.end))")
            }
            if entry.begin > expected {
                let after = previous.map { "after tensor '\($0.info.name)' [\($0.begin), \($0.end)]" } ?? "at the start of the data buffer"
                throw FormatError.invalidOffsets(path: path, tensor: name, reason:
                    "data_offsets [\(entry.begin), \(entry.end)] leave a gap of \(entry.begin - expected) bytes \(after) (file bytes \(dataStart + expected)..<\(dataStart + entry.begin)); tensors must be contiguous")
            }
            if entry.end > dataByteCount {
                throw FormatError.truncated(path: path, what: "data of tensor '\(name)' (data_offsets [\(entry.begin), \(entry.end)])",
                                            offset: dataStart + entry.begin, needed: entry.end - entry.begin,
                                            available: max(0, dataByteCount - entry.begin))
            }
            expected = entry.end
            previous = entry
        }
        if expected != dataByteCount {
            let last = previous.map { "the last tensor '\($0.info.name)' ends" } ?? "there are no tensors, the data ends"
            throw FormatError.invalidHeader(path: path, reason:
                "\(last) at file byte \(dataStart + expected) but the file has \(dataByteCount - expected) more bytes (to byte \(dataStart + dataByteCount)); the data offsets must cover the whole data buffer")
        }
        return SafetensorsHeader(entries: entries.map(\.entry), metadata: metadata, provenance: provenance)
    }

    /// Parses `bytes` with the strict parser.
    /// - Parameter duplicate: the error for a key repeated at the given key path.
    /// - Throws: ``FormatError/invalidHeader(path:reason:)`` for invalid UTF-8 or JSON; `duplicate`'s error.
    static func parseJSON(_ bytes: Data, path: String, what: String, duplicate: ([String]) -> FormatError) throws -> StrictJSON {
        do {
            return try StrictJSONParser.parse([UInt8](bytes))
        } catch {
            if let keys = error.duplicateKeyPath { throw duplicate(keys) }
            throw FormatError.invalidHeader(path: path, reason: "\(what) is not valid JSON: \(error.message) at byte \(error.offset) of it")
        }
    }

    /// Validates one tensor entry on its own (offsets against each other are checked later).
    private static func parseEntry(name: String, value: StrictJSON, path: String, limits: ReaderLimits) throws -> Entry {
        func invalid(_ reason: String) -> FormatError { .invalidTensor(path: path, tensor: name, reason: reason) }
        guard value.members != nil else {
            throw invalid("its header entry is \(value.typeName), not an object with dtype, shape and data_offsets")
        }
        guard let rawDType = value["dtype"] else { throw invalid("its header entry has no 'dtype'") }
        guard case .string(let dtypeText) = rawDType else { throw invalid("'dtype' is \(rawDType.typeName), not a string") }
        guard let dtype = DType(rawValue: dtypeText) else {
            throw FormatError.unsupportedDType(path: path, tensor: name, dtype: dtypeText)
        }

        guard let rawShape = value["shape"] else { throw invalid("its header entry has no 'shape'") }
        guard case .array(let shapeValues) = rawShape else { throw invalid("'shape' is \(rawShape.typeName), not an array") }
        guard shapeValues.count <= limits.maxRank else {
            throw FormatError.limitExceeded(path: path, limit: .rank, value: shapeValues.count, maximum: limits.maxRank)
        }
        var shape: [Int] = []
        shape.reserveCapacity(shapeValues.count)
        for (axis, element) in shapeValues.enumerated() {
            switch element.integer {
            case .value(let dimension) where dimension >= 0: shape.append(dimension)
            case .value(let dimension): throw invalid("shape dimension \(axis) is negative (\(dimension))")
            case .tooLarge: throw invalid("shape dimension \(axis) (\(element.shortText)) does not fit in 64 bits")
            case .notInteger: throw invalid("shape dimension \(axis) is \(element.typeName) (\(element.shortText)), not a non-negative integer")
            }
        }

        guard let rawOffsets = value["data_offsets"] else { throw invalid("its header entry has no 'data_offsets'") }
        guard case .array(let offsetValues) = rawOffsets else {
            throw invalid("'data_offsets' is \(rawOffsets.typeName), not an array [begin, end]")
        }
        guard offsetValues.count == 2 else { throw invalid("'data_offsets' has \(offsetValues.count) elements, not 2 ([begin, end])") }
        var offsets: [Int] = []
        for element in offsetValues {
            switch element.integer {
            case .value(let offset) where offset >= 0:
                offsets.append(offset)
            case .value(let offset):
                throw FormatError.invalidOffsets(path: path, tensor: name, reason: "data offset \(offset) is negative")
            case .tooLarge:
                throw FormatError.invalidOffsets(path: path, tensor: name, reason: "data offset \(element.shortText) does not fit in 64 bits")
            case .notInteger:
                throw invalid("'data_offsets' holds \(element.typeName) (\(element.shortText)), not a non-negative integer")
            }
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw FormatError.invalidOffsets(path: path, tensor: name, reason: "data_offsets [\(begin), \(end)] end before they begin")
        }
        guard let byteCount = ShapeMath.byteCount(shape, dtype: dtype) else {
            throw FormatError.invalidOffsets(path: path, tensor: name, reason: "shape \(shape) × \(dtype.byteSize)-byte \(dtype.rawValue) overflows 64-bit sizes")
        }
        guard end - begin == byteCount else {
            throw FormatError.invalidOffsets(path: path, tensor: name, reason:
                "data_offsets [\(begin), \(end)] span \(end - begin) bytes but shape \(shape) of \(dtype.rawValue) needs \(byteCount)")
        }
        return Entry(info: TensorInfo(name: name, dtype: dtype, shape: shape), begin: begin, end: end)
    }
}
