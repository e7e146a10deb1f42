import Foundation
import PKMTensor

/// The on-disk checkpoint formats pkm-convert reads and writes.
public enum CheckpointFormat: String, Sendable, CaseIterable, Codable {
    /// A PyTorch state dict exported with h5py (`schemas/pkm-checkpoints.md` §4).
    case hdf5
    /// Hugging Face safetensors, single file or sharded through `model.safetensors.index.json`.
    case safetensors
    /// pkm-convert's native zstd format (`schemas/pkmz.md`).
    case pkmz
    /// A PyTorch `torch.save` checkpoint (zip or legacy pickle; `schemas/pytorch-pickle.md`). Read only.
    case pytorch

    /// The format implied by a file name's extension, if any.
    public init?(pathExtension: String) {
        switch pathExtension.lowercased() {
        case "h5", "hdf5", "he5": self = .hdf5
        case "safetensors": self = .safetensors
        case "pkmz": self = .pkmz
        case "bin", "pt", "pth", "ckpt": self = .pytorch
        default: return nil
        }
    }

    /// The canonical file extension.
    public var fileExtension: String {
        switch self {
        case .hdf5: return "h5"
        case .safetensors: return "safetensors"
        case .pkmz: return "pkmz"
        case .pytorch: return "bin"
        }
    }

    /// Whether pkm-convert can write this format (``pytorch`` is read only).
    public var isWritable: Bool { self != .pytorch }
}

/// Name, dtype and shape of one stored tensor, known without reading its data.
public struct TensorInfo: Sendable, Equatable, Codable {
    /// The full name as stored (dotted, e.g. `bert.encoder.layer.0.output.dense.weight`).
    public var name: String
    /// The stored element type.
    public var dtype: DType
    /// The dimensions.
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Bytes of element data (0 if the shape overflows, which readers reject before creating one).
    public var byteCount: Int { ShapeMath.byteCount(shape, dtype: dtype) ?? 0 }
}

/// Where a checkpoint came from: recorded by writers that support it (pkmz header,
/// safetensors `__metadata__["pkm_provenance"]`, HDF5 root attribute `pkm_provenance`).
public struct Provenance: Sendable, Equatable, Codable {
    /// File name (not path) of the source checkpoint.
    public var sourceFile: String?
    /// Lower-case hex SHA-256 of the source file's bytes (of the index file, for sharded sources).
    public var sourceSHA256: String?
    /// `pkm-convert <version>`.
    public var tool: String
    /// ISO 8601 creation time, UTC.
    public var created: String
    /// What produced it (`convert`, `import`, `graft …`), with options.
    public var operation: String?

    enum CodingKeys: String, CodingKey {
        case sourceFile = "source_file", sourceSHA256 = "source_sha256", tool, created, operation
    }

    public init(sourceFile: String?, sourceSHA256: String?, tool: String = PKMVersion.toolName,
                created: Date = Date(), operation: String? = nil) {
        self.sourceFile = sourceFile
        self.sourceSHA256 = sourceSHA256
        self.tool = tool
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        self.created = formatter.string(from: created)
        self.operation = operation
    }
}

/// The tool's version string, recorded in provenance.
public enum PKMVersion {
    /// Semantic version of pkm-convert.
    public static let version = "0.1.0"
    /// `pkm-convert 0.1.0`.
    public static let toolName = "pkm-convert \(version)"
}

/// Limits every reader checks against declared sizes before allocating anything (the settings of particular
/// readers are ``ReadOptions``).
///
/// Defaults accept any real checkpoint up to 1 TiB while refusing headers that declare absurd
/// sizes. Readers additionally check every declared byte range against the file's real size
/// (a limit is a cap on top of that check, never a replacement for it). Every reader enforces
/// every limit; exceeding one throws ``FormatError/limitExceeded(path:limit:value:maximum:)``,
/// which names the ``ReaderLimit`` so a front end can say how to raise it. RELIABILITY.md lists where each
/// limit is checked.
public struct ReaderLimits: Sendable, Equatable {
    /// Largest header in bytes: the safetensors JSON header, a sharded index file, the pkmz header,
    /// an HDF5 string attribute (the embedded config). Default 100 MiB, the reference safetensors
    /// reader's cap.
    public var maxHeaderBytes: Int = 100 * 1024 * 1024
    /// Most tensors in one checkpoint (all shards together). Default 1,000,000.
    public var maxTensorCount: Int = 1_000_000
    /// Highest tensor rank. Default 16.
    public var maxRank: Int = 16
    /// Largest total of declared tensor bytes (uncompressed). Default 1 TiB.
    public var maxTotalBytes: Int = ReaderLimits.defaultMaxTotalBytes
    /// The default of ``maxTotalBytes``: 1 TiB.
    public static let defaultMaxTotalBytes = 1 << 40
    /// Most *amplified* bytes: tensor bytes a file declares beyond the bytes it really stores
    /// (PyTorch pickles: a stride-0 `expand`ed view, many tensors over one storage, a deflated zip
    /// entry far larger than its compressed bytes). nil, the default, allows
    /// ``defaultAmplificationAllowance(fileSize:physicalMemory:)`` — unless ``maxTotalBytes`` was
    /// changed from its default, which then also allows that much amplification (so raising
    /// ``maxTotalBytes`` raises both). RELIABILITY.md §9 explains the policy.
    public var maxAmplifiedBytes: Int?

    /// The amplification allowed by default for a file of `fileSize` bytes: 4 × its size + 64 MiB
    /// (real checkpoints tie a few weights, e.g. the word embeddings and the LM head, a fraction of
    /// the file each), and never more than half the machine's memory, so a crafted view cannot make
    /// the reader allocate what the machine does not have.
    public static func defaultAmplificationAllowance(fileSize: Int, physicalMemory: UInt64 = ProcessInfo.processInfo.physicalMemory) -> Int {
        let (scaled, overflow) = max(fileSize, 0).multipliedReportingOverflow(by: 4)
        let fromFile = overflow ? Int.max : scaled.addingReportingOverflow(64 << 20).overflow ? Int.max : scaled + (64 << 20)
        let halfMemory = Int(clamping: physicalMemory / 2)
        return max(64 << 20, min(fromFile, halfMemory))
    }

    /// The amplification allowed for a file of `fileSize` bytes under these limits.
    public func amplificationAllowance(fileSize: Int) -> Int {
        if let maxAmplifiedBytes { return maxAmplifiedBytes }
        if maxTotalBytes != Self.defaultMaxTotalBytes { return maxTotalBytes }
        return Self.defaultAmplificationAllowance(fileSize: fileSize)
    }
    public init() {}
}

/// How checkpoints are read: the limits every reader checks, and the settings of particular readers
/// (which are not limits: they are passed to the reader that needs them, not to every reader).
public struct ReadOptions: Sendable {
    /// Limits every reader checks against declared sizes before allocating anything.
    public var limits: ReaderLimits
    /// HDF5 isolation: when set, every HDF5 file is first read by a child process running the executable the caller
    /// injects (``HDF5Probe/command``; the vetting itself lives in `PKMHDF5`), and opened in this process only if the
    /// child read it cleanly, so a libhdf5 crash or hang on damaged metadata becomes an error instead of killing the
    /// caller. Default nil (no child process); the `pkm-convert` executable injects itself.
    public var hdf5Isolation: HDF5Probe?
    /// PyTorch pickles: the top-level key holding the state dict (`model`, `state_dict`, …); nil detects it
    /// (``TorchCheckpointReader/stateDictKeys``).
    public var stateDictKey: String?

    public init(limits: ReaderLimits = ReaderLimits(), hdf5Isolation: HDF5Probe? = nil, stateDictKey: String? = nil) {
        self.limits = limits
        self.hdf5Isolation = hdf5Isolation
        self.stateDictKey = stateDictKey
    }
}

/// Which limit of ``ReaderLimits`` a file exceeded (carried by ``FormatError/limitExceeded(path:limit:value:maximum:)``,
/// so a front end can name its own way of raising it).
public enum ReaderLimit: String, Sendable, CaseIterable, Codable {
    /// ``ReaderLimits/maxHeaderBytes``.
    case headerBytes = "header bytes"
    /// ``ReaderLimits/maxTensorCount``.
    case tensorCount = "tensor count"
    /// ``ReaderLimits/maxRank``.
    case rank
    /// ``ReaderLimits/maxTotalBytes``.
    case totalBytes = "total bytes"
    /// ``ReaderLimits/maxAmplifiedBytes`` (raised with ``ReaderLimits/maxTotalBytes`` when that is changed).
    case amplifiedBytes = "amplified bytes"

    /// The ``ReaderLimits`` property that sets this limit.
    public var propertyName: String {
        switch self {
        case .headerBytes: return "maxHeaderBytes"
        case .tensorCount: return "maxTensorCount"
        case .rank: return "maxRank"
        case .totalBytes: return "maxTotalBytes"
        case .amplifiedBytes: return "maxAmplifiedBytes"
        }
    }
}

/// How HDF5 files are vetted in a child process before libhdf5 parses them in this one
/// (settings only; `PKMHDF5` runs it).
///
/// libhdf5 (1.10.8 on Debian 12, and the CVEs of the 1.10–1.14 series) can crash, loop or corrupt
/// its heap on damaged metadata before any validation sees a value (RELIABILITY.md §3), so the
/// file is first read by a child: `command + [path]`, spawned with `posix_spawn`. The child must
/// call `HDF5Probe.serveChild(path:)` from `PKMHDF5` (the `pkm-convert` executable does, in a
/// hidden subcommand); the rest of the request travels in the environment.
public struct HDF5Probe: Sendable, Equatable {
    /// How much of the file the child reads.
    public enum Depth: String, Sendable, CaseIterable, Codable {
        /// Structure only: superblock, groups, links, dataset types and shapes, every attribute
        /// (where every libhdf5 fault found so far happened).
        case metadata
        /// Structure and every tensor's data (chunk indexes and filters too).
        case data
    }

    /// The program and leading arguments that start a child serving the request
    /// (e.g. `["/proc/self/exe", "__probe-hdf5"]`); the file's path is appended.
    public var command: [String]
    /// What the child reads.
    public var depth: Depth
    /// Wall-clock deadline for the child, in seconds; nil picks 20 s plus 1 s per 50 MB of file in
    /// ``Depth/data`` mode. A child still running at the deadline is killed.
    public var timeoutSeconds: Double?

    public init(command: [String], depth: Depth = .metadata, timeoutSeconds: Double? = nil) {
        self.command = command
        self.depth = depth
        self.timeoutSeconds = timeoutSeconds
    }

    /// The deadline for a file of `fileSize` bytes.
    public func deadline(fileSize: Int) -> Double {
        if let timeoutSeconds { return timeoutSeconds }
        return depth == .data ? 20 + Double(fileSize) / 50e6 : 20
    }
}

/// Options for writers.
public struct WriteOptions: Sendable {
    /// zstd compression level for pkmz (1–22): every tensor in version 1, tensors that are not
    /// byte-planed in version 2 (whose float planes are rANS-coded). Default 1: on byte-grouped
    /// float weights level 1 is both faster and smaller than zstd's default 3 (all-MiniLM-L6-v2,
    /// version 1: 82.9 % vs 84.0 % of raw), because the mantissa planes are noise.
    public var compressionLevel: Int32 = 1
    /// Uncompressed bytes per pkmz frame (each frame decodes independently). Default 256 KiB: the
    /// rANS tables then follow the statistics of smaller stretches of a tensor (all-MiniLM-L6-v2:
    /// 81.9 % of raw at 256 KiB, 82.2 % at 1 MiB; BENCHMARKS.md §1).
    public var frameBytes: Int = 256 << 10
    /// The pkmz format version to write (`schemas/pkmz.md`): 2 (default) or 1, for readers that
    /// predate version 2.
    public var pkmzVersion: Int = PKMZLayout.version
    /// Split float values into byte planes before compressing (pkmz only).
    public var byteGrouping: Bool = true
    /// Worker threads for compression (0 = all cores).
    public var threads: Int = 0
    /// Recorded provenance, if any.
    public var provenance: Provenance?
    /// The source's SHA-256 being computed in the background: when set, writers fill
    /// `provenance.sourceSHA256` from it as late as their layout allows (pkmz: after the data).
    public var pendingSourceDigest: PendingSHA256?

    /// ``provenance`` with the pending source digest filled in (waits for it).
    /// - Throws: ``FormatError/io(path:operation:message:)`` when the source could not be hashed.
    public func resolvedProvenance() throws(FormatError) -> Provenance? {
        guard var provenance, let pendingSourceDigest, provenance.sourceSHA256 == nil else { return self.provenance }
        provenance.sourceSHA256 = try pendingSourceDigest.hex()
        return provenance
    }

    public init() {}
}

/// Reads a checkpoint's tensor table up front and tensor data on demand.
///
/// Conformers: ``HDF5Reader``, ``SafetensorsReader``, ``ShardedCheckpointReader``, ``PKMZReader``,
/// ``TorchCheckpointReader``.
/// Opening validates the whole table (names, dtypes, shapes, byte ranges) against the file, so
/// `tensor(named:)` only fails for damage in the data itself (checksums, compression).
public protocol CheckpointReader: AnyObject, Sendable {
    /// The file (or index file) this reader opened.
    var url: URL { get }
    /// The format.
    var format: CheckpointFormat { get }
    /// Tensors in file order.
    var tensorInfos: [TensorInfo] { get }
    /// String metadata; `config`, when present, is the model config as a JSON string.
    var metadata: [String: String] { get }
    /// Provenance recorded in the file, if any.
    var provenance: Provenance? { get }
    /// Reads one tensor's data.
    /// - Throws: ``FormatError`` naming the file and tensor.
    func tensor(named name: String) throws -> Tensor
    /// Drops the resident pages of a tensor's mapped data (`madvise(MADV_DONTNEED)`), once a caller that streams
    /// through a checkpoint is done with it, so resident memory stays bounded. Tensors already returned stay valid
    /// (their pages are read back from the file if touched again). Readers that do not map do nothing.
    ///
    /// Only the whole pages inside bytes `0 ..< upTo` of the tensor's data are dropped (`Int.max`: the whole tensor),
    /// so a writer streaming a large tensor can release it as it goes.
    func releasePages(ofTensor name: String, upTo: Int)
    /// The whole file's bytes when this reader holds them mapped (single-file readers), so a caller can hash the
    /// file without opening it again; nil otherwise.
    var mappedFileBytes: Data? { get }
}

extension CheckpointReader {
    /// Readers that hold no mapping have nothing to release.
    public func releasePages(ofTensor name: String, upTo: Int) {}

    /// Readers that hold no mapping of the whole file.
    public var mappedFileBytes: Data? { nil }

    /// Drops the resident pages of the whole tensor; see ``releasePages(ofTensor:upTo:)``.
    public func releasePages(ofTensor name: String) { releasePages(ofTensor: name, upTo: .max) }

    /// Reads every tensor into an ordered state dict (metadata included).
    /// - Throws: ``FormatError``.
    public func readAll() throws -> StateDict {
        var dict = StateDict(metadata: metadata)
        for info in tensorInfos {
            let tensor = try tensor(named: info.name)
            do { try dict.insert(tensor, named: info.name) } catch {
                throw FormatError.duplicateTensor(path: url.path, tensor: info.name)
            }
        }
        return dict
    }

    /// Total declared tensor bytes.
    public var totalBytes: Int { tensorInfos.reduce(0) { $0 + $1.byteCount } }
}
