import Foundation
import PKMTensor
import ZIPFoundation

/// Reads a PyTorch `torch.save` checkpoint (`.bin`, `.pt`, `.pth`, `.ckpt`) without running Python.
///
/// Both containers are read (specified in `schemas/pytorch-pickle.md`):
/// - the zip archive of torch ≥ 1.6: `<archive>/data.pkl` (the pickled object),
///   `<archive>/data/<key>` (one entry per storage), `<archive>/byteorder` (`little` or `big`;
///   big-endian storages are byte-swapped on read) and `<archive>/version`;
/// - the legacy stream of torch < 1.6 (`_use_new_zipfile_serialization=False`): a magic-number
///   pickle, the protocol version 1001, a system-info dict, the object pickle, the pickled list of
///   storage keys, then each storage as an 8-byte element count and its raw bytes.
///
/// The pickle is interpreted by a machine that can only build data (``PickleValue``): classes and
/// functions are looked up in an allow-list (tensor rebuilding, storages, `OrderedDict`,
/// `torch.Size`, `torch.device`, dtypes) and anything else, such as `posix.system`, is refused
/// with ``FormatError/refusedGlobal(path:global:)``. Nothing in the file is ever executed.
///
/// The state dict is found automatically: the top-level dict itself when it holds tensors, or the
/// dict under `state_dict`, `model_state_dict`, `model` or `module` (Lightning, training loops,
/// XLM, DeepSpeed); `stateDictKey` forces one. Other top-level entries are ``extras``; XLM's
/// `params` also go to `metadata["xlm_params"]` as JSON. Nested dicts inside the state dict are
/// flattened with dots; non-tensor values in it are skipped and listed in ``diagnostics``.
///
/// Opening validates every tensor's view against its storage (offsets, sizes, strides, bytes
/// present) and the ``ReaderLimits``, so ``tensor(named:)`` fails only for damaged entry data
/// (a CRC-32 mismatch, a corrupt deflate stream). Tensor data is read on demand, one storage at a
/// time: zip entries (stored or deflated) are extracted through ZIPFoundation with their CRC-32
/// checked; a contiguous tensor of the legacy stream is a slice of the memory-mapped file (no
/// copy); a non-contiguous view (a transpose, a slice with a step) becomes a dense row-major copy.
/// Several names viewing one storage (tied weights) are all kept and listed in ``sharedStorages``.
public final class TorchCheckpointReader: CheckpointReader {
    /// Which `torch.save` container the file uses.
    public enum Container: String, Sendable {
        /// The zip archive of torch ≥ 1.6.
        case zip
        /// The legacy stream of torch < 1.6.
        case legacy
    }

    /// The file this reader opened.
    public let url: URL
    /// Always ``CheckpointFormat/pytorch``.
    public var format: CheckpointFormat { .pytorch }
    /// The state dict's tensors, in pickle order (flattened names for nested dicts).
    public let tensorInfos: [TensorInfo]
    /// `xlm_params`: XLM's `params` (its scalar, string and list entries) as a JSON object, when present.
    public let metadata: [String: String]
    /// torch checkpoints carry no pkm-convert provenance.
    public var provenance: Provenance? { nil }
    /// The container.
    public let container: Container
    /// Whether the storages were written big-endian (they are byte-swapped on read).
    public let isBigEndian: Bool
    /// The top-level key the state dict was found under; nil when the top-level dict is the state dict.
    public let stateDictKey: String?
    /// The top-level entries other than the state dict (`epoch`, `params`, `hyper_parameters`, …), by key.
    public let extras: [String: PickleValue]
    /// Groups of tensor names (in file order) that view one storage: tied weights and views of one
    /// base tensor. Each group has at least two names.
    public let sharedStorages: [[String]]
    /// What was skipped: non-tensor values inside the state dict, ignored object state (`_metadata`).
    public let diagnostics: [String]

    private let mapping: Data
    private let archive: TorchZipArchive?
    private let layouts: [String: (layout: TorchTensorLayout, storage: String)]
    private let sources: [String: StorageSource]

    /// Where a storage's bytes are.
    private enum StorageSource: Sendable {
        /// A byte range of the mapped file (the legacy stream).
        case mapped(Range<Int>)
        /// A zip entry, extracted (and CRC-checked) through ZIPFoundation on demand.
        case zipEntry(String)
    }

    /// The top-level keys searched for a state dict, in order of preference.
    public static let stateDictKeys = ["state_dict", "model_state_dict", "model", "module"]

    /// The legacy stream's magic number 0x1950a86a20f9469cfc6c, as the 10 little-endian bytes of LONG1.
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
    /// The legacy stream's protocol version.
    static let legacyProtocolVersion: Int64 = 1001

    /// Opens and validates a checkpoint.
    /// - Parameters:
    ///   - stateDictKey: the top-level key holding the state dict; nil detects it.
    /// - Throws: ``FormatError``: `.fileNotFound`; `.io`; `.refusedGlobal` for a pickle naming a
    ///   class or function outside the allow-list; `.pickle` for malformed pickles, protocols 0/1,
    ///   unsupported opcodes and exceeded pickle limits; `.invalidHeader` for a damaged zip
    ///   container, a missing `data.pkl`, a bad `byteorder`, or no state dict (listing the keys);
    ///   `.unsupportedVersion` for a legacy protocol other than 1001; `.invalidTensor` for a view
    ///   outside its storage, negative sizes or strides, or a missing or short storage;
    ///   `.unsupportedDType`; `.limitExceeded`; `.duplicateTensor`; `.truncated`.
    public init(url: URL, limits: ReaderLimits = ReaderLimits(), stateDictKey: String? = nil) throws {
        self.url = url
        let path = url.path
        let file = try MappedFile.checkpoint(at: url, kind: "a PyTorch checkpoint file")
        mapping = file
        let pickleLimits = PickleLimits(limits)

        let containerKind: Container = file.count >= 4 && Array(file.prefix(4)) == [0x50, 0x4B, 0x03, 0x04] ? .zip : .legacy
        var top: PickleValue
        var storages: [String: PickleStorage]
        // byteCount: the storage's bytes; fileBytes: the bytes the file spends on them (compressed size of a deflated entry).
        var storageBytes: [String: (source: StorageSource, byteCount: Int, fileBytes: Int)] = [:]
        var diagnostics: [String] = []
        if containerKind == .zip {
            container = .zip
            let directory = try TorchZipArchive(url: url, file: file, limits: limits)
            archive = directory
            let pickles = directory.names.filter { name in
                let parts = name.split(separator: "/", omittingEmptySubsequences: false)
                return parts.count == 2 && parts[1] == "data.pkl"
            }
            guard let pickleName = pickles.first, let pickleEntry = directory.entries[pickleName] else {
                throw FormatError.invalidHeader(path: path, reason: "zip container without '<archive>/data.pkl': not a torch.save checkpoint (TorchScript and other zips are not read)")
            }
            guard pickles.count == 1 else {
                throw FormatError.invalidHeader(path: path, reason: "zip container with several data.pkl entries (\(pickles.joined(separator: ", ")))")
            }
            let prefix = String(pickleName.dropLast("data.pkl".count))
            guard pickleEntry.uncompressedSize <= limits.maxHeaderBytes else {
                throw FormatError.limitExceeded(path: path, limit: .headerBytes, value: pickleEntry.uncompressedSize, maximum: limits.maxHeaderBytes)
            }
            let pickleBytes = try directory.contents(of: pickleName)
            var bigEndian = false
            if let orderEntry = directory.entries[prefix + "byteorder"] {
                guard orderEntry.uncompressedSize <= 16 else {
                    throw FormatError.invalidHeader(path: path, reason: "'\(orderEntry.name)' is \(orderEntry.uncompressedSize) bytes; expected 'little' or 'big'")
                }
                let text = String(decoding: try directory.contents(of: orderEntry.name), as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                switch text {
                case "little": bigEndian = false
                case "big": bigEndian = true
                default: throw FormatError.invalidHeader(path: path, reason: "'\(orderEntry.name)' says '\(text.prefix(16))'; expected 'little' or 'big'")
                }
            }
            isBigEndian = bigEndian
            var machine = PickleMachine(path: path, context: pickleName, limits: pickleLimits)
            top = try machine.run(pickleBytes).value
            storages = machine.storages
            diagnostics += machine.diagnostics
            for (key, _) in storages {
                guard let entry = directory.entries[prefix + "data/" + key] else { continue }
                storageBytes[key] = (.zipEntry(entry.name), entry.uncompressedSize, entry.compressedSize)
            }
        } else if let magicLength = Self.legacyMagicLength(file) {
            container = .legacy
            archive = nil
            var offset = magicLength
            func next(_ context: String, legacy: Bool = false) throws -> (PickleValue, PickleMachine) {
                var machine = PickleMachine(path: path, context: "legacy stream, \(context)", limits: pickleLimits, legacyPersistentIDs: legacy)
                let start = file.startIndex + offset
                let (value, length) = try machine.run(file[start...], baseOffset: offset)
                offset += length
                return (value, machine)
            }
            let (version, _) = try next("protocol version")
            guard case .int(let found) = version, found == Self.legacyProtocolVersion else {
                if case .int(let found) = version, let number = Int(exactly: found) {
                    throw FormatError.unsupportedVersion(path: path, found: number, supported: [Int(Self.legacyProtocolVersion)])
                }
                throw FormatError.invalidHeader(path: path, reason: "the legacy protocol version is a \(version.kindName), not an int")
            }
            let (systemInfo, _) = try next("system info")
            var bigEndian = false
            if case .bool(let little)? = systemInfo["little_endian"] { bigEndian = !little }
            isBigEndian = bigEndian
            let (object, machine) = try next("object", legacy: true)
            top = object
            storages = machine.storages
            diagnostics += machine.diagnostics
            let (keyList, _) = try next("storage keys")
            guard case .list(let keyValues) = keyList else {
                throw FormatError.invalidHeader(path: path, reason: "the legacy storage key list is a \(keyList.kindName), not a list")
            }
            for keyValue in keyValues {
                guard case .string(let key) = keyValue else {
                    throw FormatError.invalidHeader(path: path, reason: "the legacy storage key list holds a \(keyValue.kindName)")
                }
                guard let storage = storages[key] else {
                    throw FormatError.invalidHeader(path: path, reason: "the legacy storage key list names '\(key)', which the object never references, so its size is unknown")
                }
                guard let dtype = storage.dtype else {
                    throw FormatError.unsupportedDType(path: path, tensor: "storage '\(key)'", dtype: storage.typeName)
                }
                var cursor = ByteCursor(file)
                do {
                    try cursor.seek(to: offset)
                    let rawCount: UInt64 = try cursor.readLittleEndian()
                    let count = bigEndian ? rawCount.byteSwapped : rawCount
                    guard count == UInt64(storage.elementCount) else {
                        throw FormatError.invalidTensor(path: path, tensor: "storage '\(key)'", reason: "the legacy stream stores \(count) elements at byte \(offset), the pickle declares \(storage.elementCount)")
                    }
                } catch is ByteCursorError {
                    throw FormatError.truncated(path: path, what: "legacy storage '\(key)' element count", offset: offset, needed: 8, available: max(0, file.count - offset))
                }
                let (bytes, overflow) = storage.elementCount.multipliedReportingOverflow(by: dtype.byteSize)
                let dataStart = offset + 8
                let (dataEnd, endOverflow) = dataStart.addingReportingOverflow(bytes)
                guard !overflow, !endOverflow, dataEnd <= file.count else {
                    throw FormatError.truncated(path: path, what: "legacy storage '\(key)'", offset: dataStart,
                                                needed: overflow ? Int.max : bytes, available: max(0, file.count - dataStart))
                }
                guard storageBytes.updateValue((.mapped(dataStart..<dataEnd), bytes, bytes), forKey: key) == nil else {
                    throw FormatError.invalidHeader(path: path, reason: "the legacy storage key list names '\(key)' twice")
                }
                offset = dataEnd
            }
        } else {
            throw FormatError.badMagic(path: path, expected: "a PyTorch checkpoint: a torch.save zip archive (PK\\x03\\x04) or the legacy pickle magic number",
                                       found: file.prefix(8).map { String(format: "%02x", $0) }.joined())
        }

        // Pick the state dict.
        guard let topEntries = top.dictEntries else {
            throw FormatError.invalidHeader(path: path, reason: "the checkpoint holds a \(top.kindName), not a dict; pkm-convert reads state dicts (torch.save(model.state_dict(), …))")
        }
        let topKeys = topEntries.compactMap(\.keyText)
        func holdsTensors(_ value: PickleValue, depth: Int = 0) -> Bool {
            guard depth < 8 else { return false }
            let values: [PickleValue]
            switch value {
            case .tensor: return true
            case .dict(let entries), .orderedDict(let entries): values = entries.map(\.value)
            case .list(let items), .tuple(let items): values = items
            default: return false
            }
            return values.contains { holdsTensors($0, depth: depth + 1) }
        }
        var chosenKey: String?
        if let stateDictKey {
            guard let value = top[stateDictKey], value.dictEntries != nil else {
                throw FormatError.invalidHeader(path: path, reason: "no state dict under the key '\(stateDictKey)'; the top-level keys are \(topKeys.map { "'\($0)'" }.joined(separator: ", "))")
            }
            chosenKey = stateDictKey
        } else if let found = Self.stateDictKeys.first(where: { key in top[key].map { holdsTensors($0) } ?? false }) {
            chosenKey = found
        } else if !holdsTensors(top) {
            throw FormatError.invalidHeader(path: path, reason: "no tensors at the top level or under \(Self.stateDictKeys.map { "'\($0)'" }.joined(separator: ", ")); the top-level keys are \(topKeys.prefix(50).map { "'\($0)'" }.joined(separator: ", ")); name the state dict's key")
        }
        var stateEntries = topEntries
        var extras: [String: PickleValue] = [:]
        if let chosenKey, let entries = top[chosenKey]?.dictEntries {
            stateEntries = entries
            for entry in topEntries {
                guard let key = entry.keyText, key != chosenKey else { continue }
                extras[key] = entry.value
            }
        }
        self.stateDictKey = chosenKey
        self.extras = extras

        // Flatten and validate the tensors.
        var infos: [TensorInfo] = []
        var layouts: [String: (layout: TorchTensorLayout, storage: String)] = [:]
        var groups: [String: [String]] = [:]
        var groupOrder: [String] = []
        var totalBytes = 0
        // Amplification: tensor bytes beyond the bytes the file spends on the storages they view.
        var storedTotal = 0
        var countedStorages = Set<String>()
        let allowance = limits.amplificationAllowance(fileSize: file.count)
        func visit(_ entries: [PickleDictEntry], prefix: String, depth: Int) throws {
            for entry in entries {
                guard let key = entry.keyText else {
                    guard !containsTensor(entry.value) else {
                        throw FormatError.invalidHeader(path: path, reason: "the state dict holds tensors under a key that is a \(entry.key.kindName), not a string (inside '\(prefix.isEmpty ? "(top level)" : String(prefix.dropLast()))'); tensors need string names")
                    }
                    diagnostics.append("skipped a state-dict entry whose key is a \(entry.key.kindName)")
                    continue
                }
                try visit(value: entry.value, name: prefix + key, depth: depth)
            }
        }
        /// Whether a tensor is anywhere inside (nesting is bounded by the pickle machine's depth limit).
        func containsTensor(_ value: PickleValue) -> Bool {
            switch value {
            case .tensor: return true
            case .dict(let entries), .orderedDict(let entries): return entries.contains { containsTensor($0.value) }
            case .list(let items), .tuple(let items): return items.contains(where: containsTensor)
            default: return false
            }
        }
        // Tensors inside tuples and lists are named by index (`pair.0`, `pair.1`), as PyTorch names
        // the parameters of a ModuleList / ParameterList; never dropped silently.
        func visit(value: PickleValue, name: String, depth: Int) throws {
                guard depth < 64 else {
                    throw FormatError.invalidHeader(path: path, reason: "the state dict nests containers more than 64 levels deep at '\(name)'")
                }
                switch value {
                case .tensor(let tensor):
                    guard infos.count < limits.maxTensorCount else {
                        throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: infos.count + 1, maximum: limits.maxTensorCount)
                    }
                    guard let dtype = tensor.storage.dtype else {
                        throw FormatError.unsupportedDType(path: path, tensor: name, dtype: tensor.storage.typeName)
                    }
                    guard let stored = storageBytes[tensor.storage.key] else {
                        throw FormatError.invalidTensor(path: path, tensor: name, reason: "its storage '\(tensor.storage.key)' is missing (no \(containerKind == .zip ? "data/\(tensor.storage.key) entry" : "bytes in the legacy stream")); the file is incomplete")
                    }
                    let (declared, overflow) = tensor.storage.elementCount.multipliedReportingOverflow(by: dtype.byteSize)
                    guard !overflow, declared == stored.byteCount else {
                        throw FormatError.invalidTensor(path: path, tensor: name, reason: "storage '\(tensor.storage.key)' declares \(tensor.storage.elementCount) elements of \(dtype) but holds \(stored.byteCount) bytes; the file is damaged")
                    }
                    let layout = try TorchTensorLayout(tensor, dtype: dtype, name: name, path: path, limits: limits)
                    let (sum, sumOverflow) = totalBytes.addingReportingOverflow(layout.byteCount)
                    guard !sumOverflow, sum <= limits.maxTotalBytes else {
                        throw FormatError.limitExceeded(path: path, limit: .totalBytes, value: sumOverflow ? Int.max : sum, maximum: limits.maxTotalBytes)
                    }
                    totalBytes = sum
                    if countedStorages.insert(tensor.storage.key).inserted { storedTotal += stored.fileBytes }
                    if totalBytes - storedTotal > allowance {
                        throw FormatError.amplificationExceeded(path: path, tensor: name, logicalBytes: totalBytes, storedBytes: storedTotal, maximum: allowance)
                    }
                    guard layouts.updateValue((layout, tensor.storage.key), forKey: name) == nil else {
                        throw FormatError.duplicateTensor(path: path, tensor: name)
                    }
                    infos.append(TensorInfo(name: name, dtype: dtype, shape: layout.shape))
                    if groups[tensor.storage.key] == nil { groupOrder.append(tensor.storage.key) }
                    groups[tensor.storage.key, default: []].append(name)
                case .dict(let nested), .orderedDict(let nested):
                    try visit(nested, prefix: name + ".", depth: depth + 1)
                case .list(let items), .tuple(let items):
                    guard containsTensor(value) else {
                        diagnostics.append("skipped the non-tensor state-dict entry '\(name)' (\(value.kindName))")
                        return
                    }
                    for (index, item) in items.enumerated() { try visit(value: item, name: "\(name).\(index)", depth: depth + 1) }
                default:
                    diagnostics.append("skipped the non-tensor state-dict entry '\(name)' (\(value.kindName))")
                }
        }
        try visit(stateEntries, prefix: "", depth: 0)
        tensorInfos = infos
        self.layouts = layouts
        sources = storageBytes.mapValues(\.source)
        sharedStorages = groupOrder.compactMap { groups[$0].flatMap { $0.count > 1 ? $0 : nil } }
        self.diagnostics = diagnostics

        var metadata: [String: String] = [:]
        if let params = extras["params"]?.dictEntries {
            let members = params.compactMap { entry -> (String, String)? in
                guard case .string(let key) = entry.key, let json = entry.value.scalarJSON else { return nil }
                return (key, json)
            }.sorted { $0.0 < $1.0 }
            metadata["xlm_params"] = "{" + members.map { JSONText.quoted($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
        }
        self.metadata = metadata
    }

    /// Whether the first bytes of a file look like a `torch.save` checkpoint: a zip local header
    /// (`PK\x03\x04`) whose first entry is `<archive>/data.pkl` (torch writes it first), or a
    /// pickle PROTO 2–5 opcode followed by the legacy magic number. Pass at least 64 bytes
    /// (longer archive names need more).
    public static func looksLikeTorchCheckpoint(_ head: Data) -> Bool {
        let bytes = [UInt8](head.prefix(512))
        if bytes.count >= 30, Array(bytes[0..<4]) == [0x50, 0x4B, 0x03, 0x04] {
            let nameLength = Int(bytes[26]) | Int(bytes[27]) << 8
            guard 30 + nameLength <= bytes.count else { return false }
            let name = String(decoding: bytes[30..<(30 + nameLength)], as: UTF8.self)
            return name.hasSuffix("/data.pkl")
        }
        return legacyMagicLength(head) != nil
    }

    /// The length of the legacy magic-number pickle at the start of `bytes`, or nil.
    ///
    /// Matched byte for byte (PROTO 2–5, an optional FRAME, LONG1 of 10 bytes, STOP) because the
    /// number needs 80 bits, wider than the pickle machine's integers.
    static func legacyMagicLength(_ bytes: Data) -> Int? {
        let head = [UInt8](bytes.prefix(32))
        guard head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) else { return nil }
        var index = 2
        if head.count > index, head[index] == 0x95 { index += 9 }
        guard head.count >= index + 13, head[index] == 0x8A, head[index + 1] == 0x0A,
              Array(head[(index + 2)..<(index + 12)]) == legacyMagic, head[index + 12] == 0x2E else { return nil }
        return index + 13
    }

    /// One tensor, dense, row-major and little-endian: a slice of the mapped file when the view is
    /// contiguous, stored and little-endian; otherwise a copy.
    /// - Throws: ``FormatError/tensorNotFound(path:tensor:)``; ``FormatError/decompressionFailed(path:tensor:offset:reason:)``
    ///   for a deflated storage that does not inflate.
    public func tensor(named name: String) throws -> Tensor {
        guard let (layout, key) = layouts[name], let source = sources[key] else {
            throw FormatError.tensorNotFound(path: url.path, tensor: name)
        }
        let width = layout.dtype.byteSize
        let byteRange = (layout.extent.lowerBound * width)..<(layout.extent.upperBound * width)
        var extentBytes: Data
        switch source {
        case .mapped(let range):
            let start = mapping.startIndex + range.lowerBound
            extentBytes = mapping[(start + byteRange.lowerBound)..<(start + byteRange.upperBound)]
        case .zipEntry(let entry):
            guard let archive else { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
            let whole = try archive.contents(of: entry)
            guard byteRange.upperBound <= whole.count else {
                throw FormatError.invalidTensor(path: url.path, tensor: name, reason: "its storage holds \(whole.count) bytes, fewer than its view needs")
            }
            extentBytes = whole.count == byteRange.count ? whole
                : whole.subdata(in: (whole.startIndex + byteRange.lowerBound)..<(whole.startIndex + byteRange.upperBound))
        }
        if isBigEndian { extentBytes = TorchTensorLayout.byteSwapped(extentBytes, width: width) }
        let dense = try layout.dense(fromExtent: extentBytes, path: url.path, name: name)
        do {
            return try Tensor(dtype: layout.dtype, shape: layout.shape, storage: dense, name: name)
        } catch {
            throw FormatError.tensor(path: url.path, tensor: name, underlying: error)
        }
    }
}
