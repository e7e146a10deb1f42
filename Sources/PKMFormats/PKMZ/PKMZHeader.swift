import Foundation
import PKMTensor

/// Fixed facts of the pkmz layout, version 1 (specified in `schemas/pkmz.md`).
///
/// ```
/// [prologue, 16 B] [zstd frames, back to back] [header, UTF-8 JSON] [trailer, 32 B]
/// ```
/// The header is written after the data (like a Parquet footer) so a writer can stream frames
/// without knowing their compressed sizes in advance; the fixed-size trailer says where it is.
public enum PKMZLayout {
    /// The first 8 bytes of every pkmz file: `0x89 'P' 'K' 'M' 'Z' '\r' '\n' 0x1A` (the PNG
    /// trick: a high byte, then line endings and a DOS end-of-file that transfers in text mode damage).
    public static let magic: [UInt8] = [0x89, 0x50, 0x4B, 0x4D, 0x5A, 0x0D, 0x0A, 0x1A]
    /// The last 4 bytes of every pkmz file: `PKMZ`.
    public static let endMagic: [UInt8] = [0x50, 0x4B, 0x4D, 0x5A]
    /// The format version this build writes.
    public static let version = 1
    /// Format versions this build reads.
    public static let supportedVersions = [1]
    /// Bytes of the prologue: magic, u32 version, u32 flags.
    public static let prologueSize = 16
    /// Bytes of the trailer: u64 header offset, u64 header length, u64 XXH64, u32 version, end magic.
    public static let trailerSize = 32
    /// Smallest `frame_bytes` a header may declare (4 KiB).
    public static let minimumFrameBytes = 4 << 10
    /// Largest `frame_bytes` a header may declare (64 MiB), which bounds a reader's scratch memory per worker.
    public static let maximumFrameBytes = 64 << 20
    /// A zstd frame cannot decode to more than this many bytes per compressed byte (a block of at most
    /// 128 KiB takes at least 4 bytes), so a table entry claiming more is refused before allocating.
    public static let maximumExpansion = 32_768
    /// Seed of every XXH64 in the file.
    public static let checksumSeed: UInt64 = 0
}

/// One frame-table entry: an independent zstd frame holding `rawBytes` of one tensor.
struct PKMZFrame: Equatable, Sendable {
    /// Absolute file offset of the frame's first byte.
    var offset: Int
    /// Bytes the frame occupies in the file.
    var compressedBytes: Int
    /// Bytes the frame decodes to.
    var rawBytes: Int
    /// XXH64 (seed 0) of the frame's compressed bytes.
    var checksum: UInt64
}

/// One tensor's header entry.
struct PKMZTensorEntry: Sendable {
    var info: TensorInfo
    /// Whether each frame's bytes are stored as byte planes (see ``PKMZByteGrouping``).
    var byteGrouping: Bool
    var frames: [PKMZFrame]

    /// Compressed bytes of all frames.
    var compressedBytes: Int { frames.reduce(0) { $0 + $1.compressedBytes } }
}

/// The parsed, validated pkmz header (the JSON document before the trailer).
struct PKMZHeader: Sendable {
    var compressionLevel: Int
    var frameBytes: Int
    var tensors: [PKMZTensorEntry]
    /// The `config` object's text exactly as stored, or nil when the header holds `null`.
    var configJSON: String?
    /// Other string metadata.
    var metadata: [String: String]
    var provenance: Provenance?

    // MARK: Encoding

    /// The header as compact UTF-8 JSON, keys in the order of `schemas/pkmz.md` §4, one tensor per line.
    func encoded() -> [UInt8] {
        var text = "{\"format\":\"pkmz\",\"version\":\(PKMZLayout.version)"
        text += ",\"compression\":{\"codec\":\"zstd\",\"level\":\(compressionLevel)}"
        text += ",\"frame_bytes\":\(frameBytes)"
        text += ",\"tensors\":["
        for (index, tensor) in tensors.enumerated() {
            text += index == 0 ? "\n" : ",\n"
            text += "{\"name\":\(JSONText.quoted(tensor.info.name))"
            text += ",\"dtype\":\"\(tensor.info.dtype.rawValue)\""
            text += ",\"shape\":[\(tensor.info.shape.map(String.init).joined(separator: ","))]"
            text += ",\"byte_grouping\":\(tensor.byteGrouping)"
            text += ",\"frames\":["
            text += tensor.frames.map {
                "[\($0.offset),\($0.compressedBytes),\($0.rawBytes),\"\(XXHash64.hex($0.checksum))\"]"
            }.joined(separator: ",")
            text += "]}"
        }
        text += tensors.isEmpty ? "]" : "\n]"
        text += ",\n\"config\":\(configJSON ?? "null")"
        text += ",\n\"metadata\":{"
        text += metadata.keys.sorted().map { "\(JSONText.quoted($0)):\(JSONText.quoted(metadata[$0] ?? ""))" }
            .joined(separator: ",")
        text += "}"
        if let provenance {
            func optional(_ value: String?) -> String { value.map(JSONText.quoted) ?? "null" }
            text += ",\n\"provenance\":{\"source_file\":\(optional(provenance.sourceFile))"
            text += ",\"source_sha256\":\(optional(provenance.sourceSHA256))"
            text += ",\"tool\":\(JSONText.quoted(provenance.tool))"
            text += ",\"created\":\(JSONText.quoted(provenance.created))"
            text += ",\"operation\":\(optional(provenance.operation))}"
        } else {
            text += ",\n\"provenance\":null"
        }
        text += "}\n"
        return Array(text.utf8)
    }

    // MARK: Decoding

    /// Parses and validates a header: every field's type, every limit, and every frame's place in
    /// the data section `dataStart..<dataEnd` (contiguous, in order, covering it exactly), before
    /// anything is allocated for tensor data.
    /// - Throws: ``FormatError`` naming `path` and, where it applies, the tensor.
    static func decode(_ bytes: [UInt8], path: String, limits: ReaderLimits,
                       dataStart: Int, dataEnd: Int) throws -> PKMZHeader {
        let root: StrictJSON
        do {
            root = try StrictJSONParser.parse(bytes)
        } catch {
            throw FormatError.invalidHeader(path: path, reason: "\(error.message) at byte \(error.offset) of the header JSON")
        }
        func invalid(_ reason: String) -> FormatError { .invalidHeader(path: path, reason: reason) }
        guard let rootMembers = root.members else { throw invalid("the header is \(root.typeName), expected a JSON object") }
        let fields = try Fields(rootMembers, allowed: ["format", "version", "compression", "frame_bytes", "tensors",
                                                       "config", "metadata", "provenance"],
                                context: "the header", fail: invalid)

        guard case .string(let format)? = fields["format"], format == "pkmz" else {
            throw invalid("\"format\" must be \"pkmz\"")
        }
        let version = try integer(fields["version"], "\"version\"", fail: invalid)
        guard version == PKMZLayout.version else {
            throw invalid("\"version\" is \(version) but the binary prologue says \(PKMZLayout.version); the file is damaged")
        }
        guard let compressionMembers = fields["compression"]?.members else { throw invalid("\"compression\" must be an object") }
        let compression = try Fields(compressionMembers, allowed: ["codec", "level"], context: "\"compression\"", fail: invalid)
        guard case .string(let codec)? = compression["codec"], codec == "zstd" else {
            throw invalid("\"compression.codec\" must be \"zstd\"")
        }
        let level = try integer(compression["level"], "\"compression.level\"", fail: invalid)
        let frameBytes = try integer(fields["frame_bytes"], "\"frame_bytes\"", fail: invalid)
        guard (PKMZLayout.minimumFrameBytes...PKMZLayout.maximumFrameBytes).contains(frameBytes) else {
            throw invalid("\"frame_bytes\" is \(frameBytes), outside \(PKMZLayout.minimumFrameBytes)…\(PKMZLayout.maximumFrameBytes)")
        }

        guard case .array(let tensorValues)? = fields["tensors"] else { throw invalid("\"tensors\" must be an array") }
        guard tensorValues.count <= limits.maxTensorCount else {
            throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: tensorValues.count, maximum: limits.maxTensorCount)
        }
        var tensors: [PKMZTensorEntry] = []
        tensors.reserveCapacity(tensorValues.count)
        var names = Set<String>()
        var totalBytes = 0
        var nextOffset = dataStart
        for (index, value) in tensorValues.enumerated() {
            let entry = try decodeTensor(value, index: index, path: path, limits: limits, frameBytes: frameBytes,
                                         nextOffset: &nextOffset, dataEnd: dataEnd, totalBytes: &totalBytes)
            guard names.insert(entry.info.name).inserted else {
                throw FormatError.duplicateTensor(path: path, tensor: entry.info.name)
            }
            tensors.append(entry)
        }
        guard nextOffset == dataEnd else {
            throw FormatError.invalidOffsets(path: path, tensor: tensors.last?.info.name ?? "(no tensors)",
                                             reason: "bytes \(nextOffset)..<\(dataEnd) before the header belong to no frame")
        }

        var configJSON: String?
        switch fields["config"] {
        case nil, .null?: configJSON = nil
        case .object?:
            guard let range = fields.range(of: "config") else { throw invalid("\"config\" has no text") }
            configJSON = String(decoding: bytes[range], as: UTF8.self)
        case let other?: throw invalid("\"config\" is \(other.typeName), expected an object or null")
        }

        var metadata: [String: String] = [:]
        switch fields["metadata"] {
        case nil: break
        case .object(let members)?:
            for member in members {
                guard case .string(let text) = member.value else {
                    throw invalid("metadata value \"\(member.key)\" is \(member.value.typeName), expected a string")
                }
                metadata[member.key] = text
            }
        case let other?: throw invalid("\"metadata\" is \(other.typeName), expected an object of strings")
        }
        if configJSON != nil, metadata["config"] != nil {
            throw invalid("both \"config\" and \"metadata.config\" are present; a writer stores the config in one place")
        }

        var provenance: Provenance?
        switch fields["provenance"] {
        case nil, .null?: provenance = nil
        case .object(let members)?:
            let entries = try Fields(members, allowed: ["source_file", "source_sha256", "tool", "created", "operation"],
                                     context: "\"provenance\"", fail: invalid)
            func text(_ key: String, required: Bool) throws -> String? {
                switch entries[key] {
                case .string(let value)?: return value
                case .null?, nil:
                    if required { throw invalid("\"provenance.\(key)\" must be a string") }
                    return nil
                case let other?: throw invalid("\"provenance.\(key)\" is \(other.typeName), expected a string")
                }
            }
            var value = Provenance(sourceFile: try text("source_file", required: false),
                                   sourceSHA256: try text("source_sha256", required: false),
                                   tool: try text("tool", required: true) ?? "",
                                   operation: try text("operation", required: false))
            value.created = try text("created", required: true) ?? ""
            provenance = value
        case let other?: throw invalid("\"provenance\" is \(other.typeName), expected an object or null")
        }

        return PKMZHeader(compressionLevel: level, frameBytes: frameBytes, tensors: tensors,
                          configJSON: configJSON, metadata: metadata, provenance: provenance)
    }

    private static func decodeTensor(_ value: StrictJSON, index: Int, path: String, limits: ReaderLimits, frameBytes: Int,
                                     nextOffset: inout Int, dataEnd: Int, totalBytes: inout Int) throws -> PKMZTensorEntry {
        guard let members = value.members else {
            throw FormatError.invalidHeader(path: path, reason: "tensors[\(index)] is \(value.typeName), expected an object")
        }
        var label = "tensors[\(index)]"
        if let nameMember = members.first(where: { $0.key == "name" }), case .string(let name) = nameMember.value {
            label = name
        }
        func invalid(_ reason: String) -> FormatError { .invalidTensor(path: path, tensor: label, reason: reason) }
        let fields = try Fields(members, allowed: ["name", "dtype", "shape", "byte_grouping", "frames"],
                                context: "the entry", fail: invalid)
        guard case .string(let name)? = fields["name"], !name.isEmpty else { throw invalid("\"name\" must be a non-empty string") }
        guard case .string(let dtypeText)? = fields["dtype"] else { throw invalid("\"dtype\" must be a string") }
        guard let dtype = DType(rawValue: dtypeText) else {
            throw FormatError.unsupportedDType(path: path, tensor: name, dtype: dtypeText)
        }
        guard case .array(let dimensions)? = fields["shape"] else { throw invalid("\"shape\" must be an array of integers") }
        guard dimensions.count <= limits.maxRank else {
            throw FormatError.limitExceeded(path: path, limit: .rank, value: dimensions.count, maximum: limits.maxRank)
        }
        var shape: [Int] = []
        for dimension in dimensions {
            let size = try integer(dimension, "a \"shape\" entry", fail: invalid)
            guard size >= 0 else { throw invalid("\"shape\" has the negative dimension \(size)") }
            shape.append(size)
        }
        guard let byteCount = ShapeMath.byteCount(shape, dtype: dtype) else {
            throw FormatError.invalidOffsets(path: path, tensor: name, reason: "shape \(shape) of \(dtype) overflows the addressable size")
        }
        let (newTotal, totalOverflow) = totalBytes.addingReportingOverflow(byteCount)
        guard !totalOverflow, newTotal <= limits.maxTotalBytes else {
            throw FormatError.limitExceeded(path: path, limit: .totalBytes, value: totalOverflow ? Int.max : newTotal,
                                            maximum: limits.maxTotalBytes)
        }
        totalBytes = newTotal
        guard case .bool(let byteGrouping)? = fields["byte_grouping"] else { throw invalid("\"byte_grouping\" must be true or false") }
        if byteGrouping, dtype.byteSize < 2 {
            throw invalid("\"byte_grouping\" is true for \(dtype.rawValue), whose elements are single bytes")
        }
        guard case .array(let frameValues)? = fields["frames"] else { throw invalid("\"frames\" must be an array") }

        var frames: [PKMZFrame] = []
        frames.reserveCapacity(frameValues.count)
        var rawTotal = 0
        for (frameIndex, frameValue) in frameValues.enumerated() {
            func offsets(_ reason: String) -> FormatError {
                .invalidOffsets(path: path, tensor: name, reason: "frame \(frameIndex): \(reason)")
            }
            guard case .array(let parts) = frameValue, parts.count == 4 else {
                throw invalid("frame \(frameIndex) must be [offset, compressed_bytes, raw_bytes, \"xxh64 hex\"]")
            }
            let offset = try integer(parts[0], "frame \(frameIndex) offset", fail: invalid)
            let compressed = try integer(parts[1], "frame \(frameIndex) compressed_bytes", fail: invalid)
            let raw = try integer(parts[2], "frame \(frameIndex) raw_bytes", fail: invalid)
            guard case .string(let hashText) = parts[3], let checksum = parseHash(hashText) else {
                throw invalid("frame \(frameIndex) checksum must be 16 lower-case hex digits")
            }
            guard offset == nextOffset else {
                throw offsets("starts at byte \(offset), expected \(nextOffset) (frames must be back to back, in tensor order)")
            }
            guard compressed >= 1, compressed <= dataEnd - offset else {
                throw offsets("\(compressed) compressed bytes at byte \(offset) do not fit in the data section ending at byte \(dataEnd)")
            }
            guard raw >= 1, raw <= frameBytes else {
                throw offsets("raw size \(raw) is outside 1…\(frameBytes) (frame_bytes)")
            }
            guard raw % dtype.byteSize == 0 else {
                throw offsets("raw size \(raw) is not a whole number of \(dtype.byteSize)-byte elements")
            }
            let (expansionLimit, expansionOverflow) = compressed.multipliedReportingOverflow(by: PKMZLayout.maximumExpansion)
            guard expansionOverflow || raw <= expansionLimit else {
                throw offsets("\(compressed) compressed bytes cannot decode to \(raw) bytes")
            }
            let (newRawTotal, rawOverflow) = rawTotal.addingReportingOverflow(raw)
            rawTotal = newRawTotal
            guard !rawOverflow, rawTotal <= byteCount else {
                throw offsets("frames hold more than the \(byteCount) bytes shape \(shape) of \(dtype) needs")
            }
            nextOffset = offset + compressed
            frames.append(PKMZFrame(offset: offset, compressedBytes: compressed, rawBytes: raw, checksum: checksum))
        }
        guard rawTotal == byteCount else {
            throw FormatError.invalidOffsets(path: path, tensor: name,
                                             reason: "frames hold \(rawTotal) bytes but shape \(shape) of \(dtype) needs \(byteCount)")
        }
        return PKMZTensorEntry(info: TensorInfo(name: name, dtype: dtype, shape: shape), byteGrouping: byteGrouping, frames: frames)
    }

    /// 16 lower-case hex digits → value.
    static func parseHash(_ text: String) -> UInt64? {
        let utf8 = text.utf8
        guard utf8.count == 16, utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        return UInt64(text, radix: 16)
    }

    /// A JSON number that is an integer fitting `Int` (no fraction, no exponent).
    private static func integer(_ value: StrictJSON?, _ what: String, fail: (String) -> FormatError) throws -> Int {
        guard case .number(let text)? = value else {
            throw fail("\(what) must be an integer, found \(value?.typeName ?? "nothing")")
        }
        guard let number = Int(text) else { throw fail("\(what) must be an integer that fits 64 bits, found \(text)") }
        return number
    }
}

/// The members of one header object, with unknown keys refused.
private struct Fields {
    private var values: [String: StrictJSON.Member] = [:]

    init(_ members: [StrictJSON.Member], allowed: Set<String>, context: String, fail: (String) -> FormatError) throws {
        for member in members {
            guard allowed.contains(member.key) else {
                throw fail("unknown key \"\(member.key)\" in \(context) (this build reads pkmz version \(PKMZLayout.version))")
            }
            values[member.key] = member
        }
    }

    subscript(key: String) -> StrictJSON? { values[key]?.value }

    func range(of key: String) -> Range<Int>? { values[key]?.range }
}
