import Foundation
import PKMTensor

/// Fixed facts of the pkmz layout, versions 1 and 2 (specified in `schemas/pkmz.md`).
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
    /// The format version this build writes by default (``WriteOptions/pkmzVersion`` can ask for 1).
    public static let version = 2
    /// Format versions this build reads (and writes).
    public static let supportedVersions = [1, 2]
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

/// How a tensor's frames hold its bytes (`schemas/pkmz.md` §6): version 2's `encoding`, or
/// version 1's `byte_grouping` (`false` = ``plain``, `true` = ``planes``).
enum PKMZEncoding: String, Sendable, Equatable {
    /// One segment: the chunk's bytes as they are.
    case plain
    /// One segment per byte plane (byte `p` of element `i` at `p·n + i`).
    case planes
    /// Each element rotated left by one bit (the sign moves to bit 0, so the top plane holds the
    /// exponent's high bits), then byte planes. Version 2 only.
    case rotatedPlanes = "rotated_planes"
}

/// How one segment of a version-2 frame is stored.
enum PKMZSegmentCodec: Character, Sendable, Equatable {
    /// The segment's bytes as they are.
    case raw = "r"
    /// One zstd frame (RFC 8878) recording its decoded size.
    case zstd = "z"
    /// Static order-0 rANS (`schemas/pkmz.md` §6.2).
    case rans = "a"
}

/// One segment of a version-2 frame: its codec and the bytes it occupies.
struct PKMZSegment: Equatable, Sendable {
    var codec: PKMZSegmentCodec
    var storedBytes: Int
}

/// One frame-table entry: an independent, checksummed unit holding `rawBytes` of one tensor
/// (version 1: one zstd frame; version 2: `segments` back to back).
struct PKMZFrame: Equatable, Sendable {
    /// Absolute file offset of the frame's first byte.
    var offset: Int
    /// Bytes the frame occupies in the file.
    var compressedBytes: Int
    /// Bytes the frame decodes to.
    var rawBytes: Int
    /// XXH64 (seed 0) of the frame's compressed bytes.
    var checksum: UInt64
    /// Version 2: the frame's segments (one, or one per byte plane); empty in version 1.
    var segments: [PKMZSegment] = []
}

/// One tensor's header entry.
struct PKMZTensorEntry: Sendable {
    var info: TensorInfo
    var encoding: PKMZEncoding
    var frames: [PKMZFrame]

    /// Whether each frame's bytes are stored as byte planes (see ``PKMZByteGrouping``).
    var byteGrouping: Bool { encoding != .plain }

    /// Segments per frame: one per byte plane when grouped, else one.
    var segmentsPerFrame: Int { byteGrouping ? info.dtype.byteSize : 1 }

    /// Compressed bytes of all frames.
    var compressedBytes: Int { frames.reduce(0) { $0 + $1.compressedBytes } }
}

/// The parsed, validated pkmz header (the JSON document before the trailer).
struct PKMZHeader: Sendable {
    /// The format version (1 or 2); it decides the tensor- and frame-entry forms.
    var version: Int = PKMZLayout.version
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
        var text = "{\"format\":\"pkmz\",\"version\":\(version)"
        text += ",\"compression\":{\"codec\":\"\(version == 1 ? "zstd" : "segments")\",\"level\":\(compressionLevel)}"
        text += ",\"frame_bytes\":\(frameBytes)"
        text += ",\"tensors\":["
        for (index, tensor) in tensors.enumerated() {
            text += index == 0 ? "\n" : ",\n"
            text += "{\"name\":\(JSONText.quoted(tensor.info.name))"
            text += ",\"dtype\":\"\(tensor.info.dtype.rawValue)\""
            text += ",\"shape\":[\(tensor.info.shape.map(String.init).joined(separator: ","))]"
            if version == 1 {
                text += ",\"byte_grouping\":\(tensor.byteGrouping)"
            } else {
                text += ",\"encoding\":\"\(tensor.encoding.rawValue)\""
            }
            text += ",\"frames\":["
            text += tensor.frames.map {
                var entry = "[\($0.offset),\($0.compressedBytes),\($0.rawBytes),\"\(XXHash64.hex($0.checksum))\""
                if version != 1 {
                    entry += ",\"\(String($0.segments.map(\.codec.rawValue)))\",[\($0.segments.map { String($0.storedBytes) }.joined(separator: ","))]"
                }
                return entry + "]"
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
    static func decode(_ bytes: [UInt8], path: String, limits: ReaderLimits, version fileVersion: Int = PKMZLayout.version,
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
        guard version == fileVersion else {
            throw invalid("\"version\" is \(version) but the binary prologue says \(fileVersion); the file is damaged")
        }
        guard let compressionMembers = fields["compression"]?.members else { throw invalid("\"compression\" must be an object") }
        let compression = try Fields(compressionMembers, allowed: ["codec", "level"], context: "\"compression\"", fail: invalid)
        let expectedCodec = version == 1 ? "zstd" : "segments"
        guard case .string(let codec)? = compression["codec"], codec == expectedCodec else {
            throw invalid("\"compression.codec\" must be \"\(expectedCodec)\" in version \(version)")
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
            let entry = try decodeTensor(value, index: index, version: version, path: path, limits: limits, frameBytes: frameBytes,
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

        return PKMZHeader(version: version, compressionLevel: level, frameBytes: frameBytes, tensors: tensors,
                          configJSON: configJSON, metadata: metadata, provenance: provenance)
    }

    private static func decodeTensor(_ value: StrictJSON, index: Int, version: Int, path: String, limits: ReaderLimits, frameBytes: Int,
                                     nextOffset: inout Int, dataEnd: Int, totalBytes: inout Int) throws -> PKMZTensorEntry {
        guard let members = value.members else {
            throw FormatError.invalidHeader(path: path, reason: "tensors[\(index)] is \(value.typeName), expected an object")
        }
        var label = "tensors[\(index)]"
        if let nameMember = members.first(where: { $0.key == "name" }), case .string(let name) = nameMember.value {
            label = name
        }
        func invalid(_ reason: String) -> FormatError { .invalidTensor(path: path, tensor: label, reason: reason) }
        let fields = try Fields(members, allowed: ["name", "dtype", "shape", version == 1 ? "byte_grouping" : "encoding", "frames"],
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
        let encoding: PKMZEncoding
        if version == 1 {
            guard case .bool(let byteGrouping)? = fields["byte_grouping"] else { throw invalid("\"byte_grouping\" must be true or false") }
            if byteGrouping, dtype.byteSize < 2 {
                throw invalid("\"byte_grouping\" is true for \(dtype.rawValue), whose elements are single bytes")
            }
            encoding = byteGrouping ? .planes : .plain
        } else {
            guard case .string(let text)? = fields["encoding"], let value = PKMZEncoding(rawValue: text) else {
                throw invalid("\"encoding\" must be \"plain\", \"planes\" or \"rotated_planes\"")
            }
            if value != .plain, dtype.byteSize < 2 {
                throw invalid("\"encoding\" is \"\(text)\" for \(dtype.rawValue), whose elements are single bytes")
            }
            encoding = value
        }
        let segmentCount = encoding == .plain ? 1 : dtype.byteSize
        guard case .array(let frameValues)? = fields["frames"] else { throw invalid("\"frames\" must be an array") }

        var frames: [PKMZFrame] = []
        frames.reserveCapacity(frameValues.count)
        var rawTotal = 0
        for (frameIndex, frameValue) in frameValues.enumerated() {
            func offsets(_ reason: String) -> FormatError {
                .invalidOffsets(path: path, tensor: name, reason: "frame \(frameIndex): \(reason)")
            }
            guard case .array(let parts) = frameValue, parts.count == (version == 1 ? 4 : 6) else {
                throw invalid(version == 1 ? "frame \(frameIndex) must be [offset, compressed_bytes, raw_bytes, \"xxh64 hex\"]"
                                           : "frame \(frameIndex) must be [offset, stored_bytes, raw_bytes, \"xxh64 hex\", \"codecs\", [segment bytes]]")
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
            var segments: [PKMZSegment] = []
            if version == 1 {
                let (expansionLimit, expansionOverflow) = compressed.multipliedReportingOverflow(by: PKMZLayout.maximumExpansion)
                guard expansionOverflow || raw <= expansionLimit else {
                    throw offsets("\(compressed) compressed bytes cannot decode to \(raw) bytes")
                }
            } else {
                segments = try decodeSegments(codes: parts[4], sizes: parts[5], count: segmentCount, segmentRaw: raw / segmentCount,
                                              storedBytes: compressed, fail: { offsets($0) }, invalid: { invalid("frame \(frameIndex): \($0)") })
            }
            let (newRawTotal, rawOverflow) = rawTotal.addingReportingOverflow(raw)
            rawTotal = newRawTotal
            guard !rawOverflow, rawTotal <= byteCount else {
                throw offsets("frames hold more than the \(byteCount) bytes shape \(shape) of \(dtype) needs")
            }
            nextOffset = offset + compressed
            frames.append(PKMZFrame(offset: offset, compressedBytes: compressed, rawBytes: raw, checksum: checksum, segments: segments))
        }
        guard rawTotal == byteCount else {
            throw FormatError.invalidOffsets(path: path, tensor: name,
                                             reason: "frames hold \(rawTotal) bytes but shape \(shape) of \(dtype) needs \(byteCount)")
        }
        return PKMZTensorEntry(info: TensorInfo(name: name, dtype: dtype, shape: shape), encoding: encoding, frames: frames)
    }

    /// A version-2 frame's codec string and segment sizes (`schemas/pkmz.md` §7 step 6): one codec
    /// per segment, raw segments exactly `segmentRaw` bytes, zstd segments within zstd's expansion
    /// bound, rANS segments at least 2 bytes, sizes summing to the frame's stored bytes.
    private static func decodeSegments(codes: StrictJSON, sizes: StrictJSON, count: Int, segmentRaw: Int, storedBytes: Int,
                                       fail: (String) -> FormatError, invalid: (String) -> FormatError) throws -> [PKMZSegment] {
        guard case .string(let codeText) = codes, case .array(let sizeValues) = sizes else {
            throw invalid("the codecs must be a string and the segment sizes an array")
        }
        let codecs = Array(codeText)
        guard codecs.count == count, sizeValues.count == count else {
            throw invalid("\(codecs.count) codecs and \(sizeValues.count) segment sizes, expected \(count) of each")
        }
        var segments: [PKMZSegment] = []
        segments.reserveCapacity(count)
        var total = 0
        for (index, character) in codecs.enumerated() {
            guard let codec = PKMZSegmentCodec(rawValue: character) else {
                throw invalid("segment \(index) has the unknown codec \"\(character)\" (r, z or a)")
            }
            let size = try integer(sizeValues[index], "segment \(index) size", fail: invalid)
            switch codec {
            case .raw:
                guard size == segmentRaw else { throw fail("raw segment \(index) is \(size) bytes, not its decoded \(segmentRaw)") }
            case .zstd:
                let (limit, overflow) = size.multipliedReportingOverflow(by: PKMZLayout.maximumExpansion)
                guard size >= 1, overflow || segmentRaw <= limit else {
                    throw fail("zstd segment \(index) of \(size) bytes cannot decode to \(segmentRaw) bytes")
                }
            case .rans:
                guard size >= 2 else { throw fail("rANS segment \(index) is \(size) bytes; the smallest is 2") }
            }
            let (newTotal, overflow) = total.addingReportingOverflow(size)
            guard !overflow, newTotal <= storedBytes else { throw fail("segment sizes add up to more than the frame's \(storedBytes) bytes") }
            total = newTotal
            segments.append(PKMZSegment(codec: codec, storedBytes: size))
        }
        guard total == storedBytes else { throw fail("segment sizes add up to \(total), not the frame's \(storedBytes) bytes") }
        return segments
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
                throw fail("unknown key \"\(member.key)\" in \(context) (this build reads pkmz versions \(PKMZLayout.supportedVersions.map(String.init).joined(separator: " and ")))")
            }
            values[member.key] = member
        }
    }

    subscript(key: String) -> StrictJSON? { values[key]?.value }

    func range(of key: String) -> Range<Int>? { values[key]?.range }
}
