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
/// - N at most ``ReaderLimits/maxHeaderBytes`` (100 MiB by default, the reference's cap),
///   checked before anything is read, then N within the file;
/// - the header starts with `{`, is valid UTF-8 and valid JSON (trailing JSON whitespace is
///   allowed, as the reference allows it; a trailing NUL is not);
/// - no key appears twice in any object (the format forbids duplicates, but serde and
///   `JSONSerialization` would silently keep the last one, letting two readers see different
///   tensors in one file), found by ``SafetensorsJSONScan``;
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
        // The cap comes first, as in the reference reader: an absurd length is refused as such.
        guard let headerLength = Int(exactly: rawLength), headerLength <= limits.maxHeaderBytes else {
            throw FormatError.limitExceeded(path: path, limit: .headerBytes, value: Int(exactly: rawLength) ?? Int.max,
                                            maximum: limits.maxHeaderBytes)
        }
        guard headerLength <= size - 8 else {
            throw FormatError.truncated(path: path, what: "safetensors JSON header", offset: 8, needed: headerLength, available: size - 8)
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
        let object = try SafetensorsJSON.parseObject(json, path: path, what: "the JSON header (bytes 8..<\(dataStart))")
        let scan = json.withUnsafeBytes { SafetensorsJSONScan($0) }
        if let duplicate = scan.firstDuplicate {
            switch duplicate.count {
            case 1 where duplicate[0] == SafetensorsNames.metadataKey:
                throw FormatError.invalidHeader(path: path, reason: "the key '\(SafetensorsNames.metadataKey)' appears twice")
            case 1:
                throw FormatError.duplicateTensor(path: path, tensor: duplicate[0])
            case 2 where duplicate[0] == SafetensorsNames.metadataKey:
                throw FormatError.invalidHeader(path: path, reason: "metadata key '\(duplicate[1])' appears twice in '\(SafetensorsNames.metadataKey)'")
            case 2:
                throw FormatError.invalidTensor(path: path, tensor: duplicate[0], reason: "field '\(duplicate[1])' appears twice in its header entry")
            default:
                throw FormatError.invalidHeader(path: path, reason: "key '\(duplicate.joined(separator: "."))' appears twice")
            }
        }

        // Metadata.
        var metadata: [String: String] = [:]
        var provenance: Provenance?
        if let rawMetadata = object[SafetensorsNames.metadataKey], !(rawMetadata is NSNull) {
            guard let map = rawMetadata as? [String: Any] else {
                throw FormatError.invalidHeader(path: path, reason: "'\(SafetensorsNames.metadataKey)' is \(SafetensorsJSON.typeName(rawMetadata)), not an object of strings")
            }
            for (key, value) in map {
                guard let text = value as? String else {
                    throw FormatError.invalidHeader(path: path, reason: "metadata value '\(key)' in '\(SafetensorsNames.metadataKey)' is \(SafetensorsJSON.typeName(value)), not a string")
                }
                if key == SafetensorsNames.provenanceKey {
                    do {
                        provenance = try JSONDecoder().decode(Provenance.self, from: Data(text.utf8))
                    } catch {
                        throw FormatError.invalidHeader(path: path, reason: "'\(SafetensorsNames.metadataKey)[\"\(key)\"]' is not provenance JSON: \(error)")
                    }
                } else {
                    metadata[key] = text
                }
            }
        }

        // Tensor entries, visited in header order so that errors are deterministic.
        let names = scan.topLevelKeys.filter { $0 != SafetensorsNames.metadataKey }
        guard names.count <= limits.maxTensorCount else {
            throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: names.count, maximum: limits.maxTensorCount)
        }
        var entries: [(entry: Entry, headerIndex: Int)] = []
        entries.reserveCapacity(names.count)
        var totalBytes = 0
        for (headerIndex, name) in names.enumerated() {
            guard let value = object[name] else {
                // Only possible if the scan and JSONSerialization disagree on a key's text.
                throw FormatError.invalidHeader(path: path, reason: "could not locate the entry of tensor '\(name)'")
            }
            let entry = try parseEntry(name: name, value: value, path: path, limits: limits)
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

    /// Validates one tensor entry on its own (offsets against each other are checked later).
    private static func parseEntry(name: String, value: Any, path: String, limits: ReaderLimits) throws -> Entry {
        func invalid(_ reason: String) -> FormatError { .invalidTensor(path: path, tensor: name, reason: reason) }
        guard let fields = value as? [String: Any] else {
            throw invalid("its header entry is \(SafetensorsJSON.typeName(value)), not an object with dtype, shape and data_offsets")
        }
        guard let rawDType = fields["dtype"] else { throw invalid("its header entry has no 'dtype'") }
        guard let dtypeText = rawDType as? String else { throw invalid("'dtype' is \(SafetensorsJSON.typeName(rawDType)), not a string") }
        guard let dtype = DType(rawValue: dtypeText) else {
            throw FormatError.unsupportedDType(path: path, tensor: name, dtype: dtypeText)
        }

        guard let rawShape = fields["shape"] else { throw invalid("its header entry has no 'shape'") }
        guard let shapeValues = rawShape as? [Any] else { throw invalid("'shape' is \(SafetensorsJSON.typeName(rawShape)), not an array") }
        guard shapeValues.count <= limits.maxRank else {
            throw FormatError.limitExceeded(path: path, limit: .rank, value: shapeValues.count, maximum: limits.maxRank)
        }
        var shape: [Int] = []
        shape.reserveCapacity(shapeValues.count)
        for (axis, element) in shapeValues.enumerated() {
            switch SafetensorsJSON.integer(element) {
            case .value(let dimension) where dimension >= 0: shape.append(dimension)
            case .value(let dimension): throw invalid("shape dimension \(axis) is negative (\(dimension))")
            case .tooLarge: throw invalid("shape dimension \(axis) (\(element)) does not fit in 64 bits")
            case .notInteger: throw invalid("shape dimension \(axis) is \(SafetensorsJSON.typeName(element)) (\(element)), not a non-negative integer")
            }
        }

        guard let rawOffsets = fields["data_offsets"] else { throw invalid("its header entry has no 'data_offsets'") }
        guard let offsetValues = rawOffsets as? [Any] else {
            throw invalid("'data_offsets' is \(SafetensorsJSON.typeName(rawOffsets)), not an array [begin, end]")
        }
        guard offsetValues.count == 2 else { throw invalid("'data_offsets' has \(offsetValues.count) elements, not 2 ([begin, end])") }
        var offsets: [Int] = []
        for element in offsetValues {
            switch SafetensorsJSON.integer(element) {
            case .value(let offset) where offset >= 0:
                offsets.append(offset)
            case .value(let offset):
                throw FormatError.invalidOffsets(path: path, tensor: name, reason: "data offset \(offset) is negative")
            case .tooLarge:
                throw FormatError.invalidOffsets(path: path, tensor: name, reason: "data offset \(element) does not fit in 64 bits")
            case .notInteger:
                throw invalid("'data_offsets' holds \(SafetensorsJSON.typeName(element)) (\(element)), not a non-negative integer")
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

/// Small helpers over `JSONSerialization` output (internal).
enum SafetensorsJSON {
    /// A JSON number read as an integer.
    enum Integer {
        case value(Int)
        /// An integer beyond `Int`'s range.
        case tooLarge
        /// Not a number, a boolean, or a number written with a fraction or exponent.
        case notInteger
    }

    /// Parses `bytes` as a JSON object.
    /// - Throws: ``FormatError/invalidHeader(path:reason:)`` for invalid UTF-8, invalid JSON or a non-object.
    static func parseObject(_ bytes: Data, path: String, what: String) throws -> [String: Any] {
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw FormatError.invalidHeader(path: path, reason: "\(what) is not valid UTF-8")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: bytes, options: [])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw FormatError.invalidHeader(path: path, reason: "\(what) is not valid JSON: \(detail)")
        }
        guard let object = parsed as? [String: Any] else {
            throw FormatError.invalidHeader(path: path, reason: "\(what) is \(typeName(parsed)), not a JSON object")
        }
        return object
    }

    /// Reads an integer the way serde reads `usize`: JSON integers only, so `2.0`, `1e3` and
    /// `true` are not integers even though `JSONSerialization` hands them out as `NSNumber`s.
    static func integer(_ value: Any) -> Integer {
        guard let number = value as? NSNumber, !(value is String) else { return .notInteger }
        switch String(cString: number.objCType) {
        case "s", "i", "l", "q":
            return Int(exactly: number.int64Value).map(Integer.value) ?? .tooLarge
        case "S", "I", "L", "Q", "C":
            return Int(exactly: number.uint64Value).map(Integer.value) ?? .tooLarge
        case "c":
            return .notInteger  // a boolean
        default:
            // "d"/"f": written with a fraction or exponent, or an integer too large for 64 bits
            // (JSONSerialization then returns a double or an NSDecimalNumber).
            let double = number.doubleValue
            if double.isFinite, double == double.rounded(.towardZero), abs(double) >= 0x1p63 { return .tooLarge }
            return .notInteger
        }
    }

    /// "a string", "an array", … for error messages.
    static func typeName(_ value: Any) -> String {
        switch value {
        case is NSNull: return "null"
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        case let number as NSNumber: return String(cString: number.objCType) == "c" ? "a boolean" : "a number"
        default: return "a \(type(of: value))"
        }
    }

    /// A JSON string literal for `text`: quotes, backslashes and control characters escaped,
    /// everything else as UTF-8.
    static func quoted(_ text: String) -> String {
        var result = "\""
        result.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        result += "\""
        return result
    }
}

/// The facts about a JSON document that `JSONSerialization` drops: the order of the
/// top-level keys, and the first key repeated within one object (internal).
///
/// The scan is structural only (strings, brackets, commas), so it must run on text that has
/// already parsed as JSON; it is iterative, linear in the input, and keeps one key set per
/// open object.
struct SafetensorsJSONScan {
    /// Keys of the top-level object, in document order (a repeated key is listed once).
    private(set) var topLevelKeys: [String] = []
    /// The first repeated key, as the keys leading to it from the top (e.g. `["w"]` for a
    /// top-level duplicate, `["w", "dtype"]` for a field repeated inside `w`'s entry).
    private(set) var firstDuplicate: [String]?

    private struct Frame {
        let isObject: Bool
        var keys: Set<String> = []
        var expectingKey: Bool
        /// The key whose value is being read (objects only).
        var currentKey: String?
    }

    init(_ bytes: UnsafeRawBufferPointer) {
        var stack: [Frame] = []
        let count = bytes.count
        var index = 0
        while index < count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                let start = index + 1
                var end = start
                var escaped = false
                while end < count, bytes[end] != UInt8(ascii: "\"") {
                    if bytes[end] == UInt8(ascii: "\\") { escaped = true; end += 2 } else { end += 1 }
                }
                end = min(end, count)
                let top = stack.count - 1
                if top >= 0, stack[top].isObject, stack[top].expectingKey {
                    let key = Self.decodeKey(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), escaped: escaped)
                    stack[top].expectingKey = false
                    stack[top].currentKey = key
                    if !stack[top].keys.insert(key).inserted {
                        if firstDuplicate == nil {
                            firstDuplicate = stack.dropLast().compactMap(\.currentKey) + [key]
                        }
                    } else if top == 0 {
                        topLevelKeys.append(key)
                    }
                }
                index = end + 1
            case UInt8(ascii: "{"):
                stack.append(Frame(isObject: true, expectingKey: true))
                index += 1
            case UInt8(ascii: "["):
                stack.append(Frame(isObject: false, expectingKey: false))
                index += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
                index += 1
            case UInt8(ascii: ","):
                if let top = stack.indices.last, stack[top].isObject { stack[top].expectingKey = true }
                index += 1
            default:
                index += 1
            }
        }
    }

    /// The key's text; escapes are decoded by `JSONSerialization` (rare in tensor names).
    private static func decodeKey(_ raw: UnsafeRawBufferPointer, escaped: Bool) -> String {
        let text = String(decoding: raw, as: UTF8.self)
        guard escaped else { return text }
        let literal = Data(("[\"" + text + "\"]").utf8)
        if let decoded = (try? JSONSerialization.jsonObject(with: literal, options: [])) as? [Any], let key = decoded.first as? String {
            return key
        }
        return text
    }
}
