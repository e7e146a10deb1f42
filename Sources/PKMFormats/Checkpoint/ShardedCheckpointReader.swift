import Foundation
import PKMTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a sharded checkpoint through its index — `model.safetensors.index.json` for safetensors
/// shards, `pytorch_model.bin.index.json` for `torch.save` shards (transformers writes both the same
/// way): `{"metadata": {...}, "weight_map": {"tensor name": "shard file name", ...}}`. Each shard is
/// read by ``SafetensorsReader`` or ``TorchCheckpointReader``, chosen by its first bytes.
///
/// Every shard is opened (memory-mapped and validated) once, when the reader is created, and
/// the index is checked against the shards both ways: each tensor of the weight map must be
/// in the shard it names, no tensor may be stored in two shards, and no shard may hold a tensor
/// the weight map does not list (a stale index). Shard paths are names inside the index's
/// folder: absolute paths and `..` components are refused, since an index downloaded with a model
/// must not make the tool read other files; symbolic links are followed when they lead into the
/// folder or, for a `huggingface_hub` cache snapshot, into the repository's `blobs/` folder
/// (``resolveShard(_:folder:indexPath:)``), and refused, naming link and target, elsewhere.
///
/// Tensors are listed shard by shard, shards in file-name order (`model-00001-of-00002…`
/// first), each shard's tensors in its file order. ``metadata`` merges the shards'
/// `__metadata__` maps (the first shard holding a key wins; `config` is kept wherever it is),
/// then the index's `metadata` strings for keys no shard has (numbers such as the index's
/// `total_size` are not carried, since they go stale when a checkpoint is converted).
public final class ShardedCheckpointReader: CheckpointReader {
    /// The index file.
    public let url: URL
    /// The shards' format (``CheckpointFormat/safetensors`` or ``CheckpointFormat/pytorch``).
    public let format: CheckpointFormat
    /// Tensors shard by shard, in each shard's file order.
    public let tensorInfos: [TensorInfo]
    /// Merged metadata; see the type's documentation.
    public let metadata: [String: String]
    /// The provenance of the first shard that records one.
    public let provenance: Provenance?
    /// The shard files, in the order their tensors are listed.
    public let shardURLs: [URL]

    private let shards: [any CheckpointReader]
    private let shardIndexByTensor: [String: Int]

    /// Reads the index and opens every shard it names.
    /// - Throws: ``FormatError``: `.fileNotFound` for the index; `.limitExceeded` for an index
    ///   longer than `limits.maxHeaderBytes`, too many tensors or bytes in total; `.invalidHeader`
    ///   for an index that is not JSON of the expected shape; `.duplicateTensor` for a name listed
    ///   twice in the weight map or stored in two shards; `.shardPathEscapes`; `.missingShard`;
    ///   `.tensorNotFound` naming the shard when a listed tensor is not in it; `.invalidTensor`
    ///   when a tensor is stored in another shard than the index says, or in no listed place;
    ///   and any error of the shard's reader for a damaged shard; `.invalidHeader` for shards of mixed formats.
    /// - Parameter stateDictKey: for `torch.save` shards, the top-level key holding the state dict (nil detects it).
    public init(indexURL: URL, limits: ReaderLimits = ReaderLimits(), stateDictKey: String? = nil) throws {
        url = indexURL
        let indexPath = indexURL.path
        let (weightMap, indexMetadata) = try Self.readIndex(indexURL, limits: limits)

        // Resolve and open each shard once, in file-name order.
        let folder = indexURL.deletingLastPathComponent()
        let shardNames = Set(weightMap.values).sorted()
        var shardURLs: [URL] = []
        var shards: [any CheckpointReader] = []
        for name in shardNames {
            let shardURL = try Self.resolveShard(name, folder: folder, indexPath: indexPath)
            shardURLs.append(shardURL)
            shards.append(try Self.openShard(shardURL, limits: limits, stateDictKey: stateDictKey))
        }
        let formats = Set(shards.map(\.format))
        guard formats.count <= 1 else {
            throw FormatError.invalidHeader(path: indexPath, reason: "the shards mix formats (\(formats.map(\.rawValue).sorted().joined(separator: ", "))); one index lists one kind of shard")
        }
        format = formats.first ?? .safetensors

        // Where each tensor really is; the same name in two shards is refused.
        var location: [String: Int] = [:]
        var infos: [TensorInfo] = []
        var totalBytes = 0
        for (shardIndex, shard) in shards.enumerated() {
            for info in shard.tensorInfos {
                if location.updateValue(shardIndex, forKey: info.name) != nil {
                    throw FormatError.duplicateTensor(path: indexPath, tensor: info.name)
                }
                infos.append(info)
                guard infos.count <= limits.maxTensorCount else {
                    throw FormatError.limitExceeded(path: indexPath, limit: .tensorCount, value: infos.count, maximum: limits.maxTensorCount)
                }
                let (newTotal, overflow) = totalBytes.addingReportingOverflow(info.byteCount)
                guard !overflow, newTotal <= limits.maxTotalBytes else {
                    throw FormatError.limitExceeded(path: indexPath, limit: .totalBytes, value: overflow ? Int.max : newTotal, maximum: limits.maxTotalBytes)
                }
                totalBytes = newTotal
            }
        }
        // The index and the shards must agree both ways.
        let shardIndexByName = Dictionary(uniqueKeysWithValues: shardNames.enumerated().map { ($1, $0) })
        for (tensor, shardName) in weightMap.sorted(by: { $0.key < $1.key }) {
            guard let listed = shardIndexByName[shardName] else { continue }  // every value is a key by construction
            guard let stored = location[tensor] else {
                throw FormatError.tensorNotFound(path: shardURLs[listed].path, tensor: tensor)
            }
            guard stored == listed else {
                throw FormatError.invalidTensor(path: indexPath, tensor: tensor, reason:
                    "the index's weight_map puts it in '\(shardName)' but it is stored in '\(shardNames[stored])'; regenerate the index")
            }
        }
        for info in infos where weightMap[info.name] == nil {
            let shardIndex = location[info.name] ?? 0
            throw FormatError.invalidTensor(path: shardURLs[shardIndex].path, tensor: info.name, reason:
                "it is stored in this shard but the index's weight_map (\(indexURL.lastPathComponent)) does not list it; the index is stale, regenerate it")
        }

        var metadata: [String: String] = [:]
        for shard in shards {
            for (key, value) in shard.metadata where metadata[key] == nil { metadata[key] = value }
        }
        for (key, value) in indexMetadata where metadata[key] == nil { metadata[key] = value }

        self.shards = shards
        self.shardURLs = shardURLs
        shardIndexByTensor = location
        tensorInfos = infos
        self.metadata = metadata
        provenance = shards.lazy.compactMap(\.provenance).first
    }

    /// Opens one shard: a `torch.save` file when its first bytes say so, safetensors otherwise.
    static func openShard(_ url: URL, limits: ReaderLimits, stateDictKey: String?) throws -> any CheckpointReader {
        // A FIFO named as a shard would block open() forever: only regular files are opened.
        let head = try RegularFile.head(of: url, count: 512, what: "a shard")
        if TorchCheckpointReader.looksLikeTorchCheckpoint(head) {
            return try TorchCheckpointReader(url: url, limits: limits, stateDictKey: stateDictKey)
        }
        return try SafetensorsReader(url: url, limits: limits)
    }

    /// The shard file holding a tensor, or nil for an unknown name.
    public func shardURL(ofTensor name: String) -> URL? {
        shardIndexByTensor[name].map { shardURLs[$0] }
    }

    /// One tensor, read from its shard.
    /// - Throws: ``FormatError/tensorNotFound(path:tensor:)`` naming the index.
    public func tensor(named name: String) throws -> Tensor {
        guard let shardIndex = shardIndexByTensor[name] else { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
        return try shards[shardIndex].tensor(named: name)
    }

    /// Drops the tensor's resident pages in its shard (see ``CheckpointReader/releasePages(ofTensor:)``).
    public func releasePages(ofTensor name: String, upTo: Int) {
        guard let shardIndex = shardIndexByTensor[name] else { return }
        shards[shardIndex].releasePages(ofTensor: name, upTo: upTo)
    }

    /// The weight map and the string entries of the index's `metadata`.
    private static func readIndex(_ indexURL: URL, limits: ReaderLimits) throws -> (weightMap: [String: String], metadata: [String: String]) {
        let path = indexURL.path
        let bytes = try RegularFile.contents(of: indexURL, what: "a sharded checkpoint's index", maxBytes: limits.maxHeaderBytes)
        let document = try SafetensorsHeader.parseJSON(bytes, path: path, what: "the index") { duplicate in
            if duplicate.count == 2, duplicate[0] == "weight_map" { return FormatError.duplicateTensor(path: path, tensor: duplicate[1]) }
            return FormatError.invalidHeader(path: path, reason: "key '\(duplicate.joined(separator: "."))' appears twice")
        }
        guard document.members != nil else {
            throw FormatError.invalidHeader(path: path, reason: "the index is \(document.typeName), not a JSON object")
        }
        guard let rawMap = document["weight_map"] else {
            throw FormatError.invalidHeader(path: path, reason: "the index has no 'weight_map'")
        }
        guard let map = rawMap.members else {
            throw FormatError.invalidHeader(path: path, reason: "'weight_map' is \(rawMap.typeName), not an object")
        }
        guard map.count <= limits.maxTensorCount else {
            throw FormatError.limitExceeded(path: path, limit: .tensorCount, value: map.count, maximum: limits.maxTensorCount)
        }
        var weightMap: [String: String] = [:]
        weightMap.reserveCapacity(map.count)
        for member in map {
            guard case .string(let shard) = member.value else {
                throw FormatError.invalidHeader(path: path, reason: "weight_map entry '\(member.key)' is \(member.value.typeName), not a shard file name")
            }
            weightMap[member.key] = shard
        }
        var metadata: [String: String] = [:]
        if let rawMetadata = document["metadata"], rawMetadata != .null {
            guard let entries = rawMetadata.members else {
                throw FormatError.invalidHeader(path: path, reason: "'metadata' is \(rawMetadata.typeName), not an object")
            }
            // HF writes {"total_size": N}: only string values are metadata here.
            for member in entries {
                if case .string(let text) = member.value { metadata[member.key] = text }
            }
        }
        return (weightMap, metadata)
    }

    /// The URL of a shard named in the index, after checking the name and where it leads.
    ///
    /// The policy (RELIABILITY.md §9): a *name* from the index stays inside the index's folder —
    /// no absolute path, no `..` component, no empty name or NUL. Symbolic links on the way are
    /// then followed, as a `huggingface_hub` cache needs (`snapshots/<revision>/model-0001.safetensors
    /// -> ../../blobs/<sha256>`), provided the fully resolved target lies inside the index's
    /// folder, or inside the `blobs/` folder of the cache repository that holds the snapshot
    /// (`<repo>/snapshots/<revision>/…` → `<repo>/blobs/`). Any other target is refused, naming
    /// the link and its target. (The path the user gives, or a file found by its standard name in
    /// a folder the user gives, is the user's choice and is followed wherever it leads.)
    /// - Throws: ``FormatError/shardPathEscapes(path:shard:)`` for a name that leaves the folder,
    ///   ``FormatError/shardLinkEscapes(path:shard:link:target:)`` for a link whose target does,
    ///   ``FormatError/missingShard(path:shard:)``, ``FormatError/invalidHeader(path:reason:)``
    ///   for an empty name or one holding a NUL byte.
    static func resolveShard(_ name: String, folder: URL, indexPath: String) throws -> URL {
        guard !name.isEmpty, !name.utf8.contains(0) else {
            throw FormatError.invalidHeader(path: indexPath, reason: "the weight_map names a shard '\(name)', which is empty or holds a NUL byte")
        }
        let components = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !name.hasPrefix("/"), !components.contains("..") else {
            throw FormatError.shardPathEscapes(path: indexPath, shard: name)
        }
        let candidate = folder.appendingPathComponent(name)
        guard let realFolder = realPath(folder.path.isEmpty ? "." : folder.path) else {
            throw FormatError.missingShard(path: indexPath, shard: name)
        }
        guard let realShard = realPath(candidate.path) else {
            var status = stat()
            if lstat(candidate.path, &status) == 0, status.st_mode & S_IFMT == S_IFLNK {
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: candidate.path)) ?? "?"
                throw FormatError.missingShard(path: indexPath, shard: "\(name) (a symbolic link to \(target), which does not exist)")
            }
            throw FormatError.missingShard(path: indexPath, shard: name)
        }
        let allowedRoots = [realFolder] + huggingFaceBlobs(ofSnapshotFolder: realFolder)
        guard allowedRoots.contains(where: { realShard.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else {
            throw FormatError.shardLinkEscapes(path: indexPath, shard: name, link: candidate.path, target: realShard)
        }
        return candidate
    }

    /// The `blobs/` folder of the `huggingface_hub` cache repository holding `folder`, when
    /// `folder` (already resolved) is `<repo>/snapshots/<revision>` or a folder inside it and
    /// `<repo>/blobs` exists; otherwise nothing.
    static func huggingFaceBlobs(ofSnapshotFolder folder: String) -> [String] {
        let parts = folder.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let snapshots = parts.lastIndex(of: "snapshots"), snapshots >= 1, snapshots + 1 < parts.count else { return [] }
        let repository = parts[..<snapshots].joined(separator: "/")
        guard let blobs = realPath(repository + "/blobs") else { return [] }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: blobs, isDirectory: &isFolder), isFolder.boolValue else { return [] }
        return [blobs]
    }

    /// `realpath(3)`: the absolute path with every symbolic link, `.` and `..` resolved.
    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
