import Foundation
import PKMCheckpoints
import PKMFormats
import PKMModel
import PKMTokenizers

/// How a checkpoint is opened: reader limits, where its config and tokenizer come from, which memory layout to expect.
public struct OpenOptions: Sendable {
    /// How files are read: the limits every reader checks, HDF5 isolation, the state-dict key of pickles.
    /// Reference and inputs files are read the same way.
    public var read = ReadOptions()
    /// Limits every reader checks before allocating (``ReadOptions/limits``).
    public var limits: ReaderLimits {
        get { read.limits }
        set { read.limits = newValue }
    }
    /// A config file to use instead of the checkpoint's own (`schemas/pkm-checkpoints.md` §2 order: this; the file's embedded
    /// `config`; `config.json` beside it).
    public var configURL: URL?
    /// A `tokenizer.json`, or a folder of tokenizer files, to use instead of the checkpoint's own.
    public var tokenizerURL: URL?
    /// The memory layout and module attribute to expect.
    public var memory = MemoryImportOptions()

    public init(limits: ReaderLimits = ReaderLimits(), configURL: URL? = nil, tokenizerURL: URL? = nil,
                memory: MemoryImportOptions = MemoryImportOptions()) {
        self.init(read: ReadOptions(limits: limits), configURL: configURL, tokenizerURL: tokenizerURL, memory: memory)
    }

    public init(read: ReadOptions, configURL: URL? = nil, tokenizerURL: URL? = nil, memory: MemoryImportOptions = MemoryImportOptions()) {
        self.read = read
        self.configURL = configURL
        self.tokenizerURL = tokenizerURL
        self.memory = memory
    }
}

/// A checkpoint opened once and handed on: every operation (convert, import, graft, export, verify,
/// run, usage, diff, inspect) is a method taking an options value and returning a result.
///
/// Opening reads only headers; the config and name mapping (``resolved()``), the float32 model
/// (``model(byteProgress:)``), the tokenizer (``tokenizer()``) and the file's SHA-256 (recorded in
/// provenance) are each worked out on first use and kept, so a pipeline that imports, verifies and
/// runs the same checkpoint opens its weights file once.
///
/// ```swift
/// let base = try LoadedCheckpoint(URL(fileURLWithPath: "bert"))
/// let imported = try base.import(to: URL(fileURLWithPath: "bert.pkmz"))
/// let report = try LoadedCheckpoint(URL(fileURLWithPath: "bert.pkmz")).verify(against: reference)
/// ```
public final class LoadedCheckpoint: @unchecked Sendable {
    /// The location as given: a file, a sharded index, or a model folder.
    public let url: URL
    /// The open reader (of the folder's weights file when ``url`` is a folder).
    public let reader: any CheckpointReader
    /// How it was opened.
    public let options: OpenOptions

    private let lock = NSLock()
    private var cachedResolution: Result<ResolvedCheckpoint, Error>?
    private var cachedModel: PKMBertModel?
    private var cachedTokenizer: (Tokenizer, String)?
    private var cachedDigest: PendingSHA256?

    /// Opens `url` (a checkpoint file, a sharded index or an HF model folder).
    /// - Throws: ``FormatError`` for missing, unreadable or malformed files.
    public init(_ url: URL, options: OpenOptions = OpenOptions()) throws {
        self.url = url
        self.options = options
        reader = try Checkpoints.open(url, options: options.read)
    }

    /// Wraps a reader opened elsewhere (its side files are looked for beside `url`, default the reader's file).
    public init(reader: any CheckpointReader, url: URL? = nil, options: OpenOptions = OpenOptions()) {
        self.url = url ?? reader.url
        self.reader = reader
        self.options = options
    }

    /// The folder holding the checkpoint's side files (config.json, tokenizer files).
    public var folder: ModelFolder { ModelFolder(holding: url) }

    /// The config resolved and the tensor names mapped onto the model; worked out once.
    /// - Throws: ``PipelineError`` for a missing or invalid config or a refused memory layout.
    public func resolved() throws -> ResolvedCheckpoint {
        try lock.withLock {
            if let cachedResolution { return try cachedResolution.get() }
            let result = Result { try ResolvedCheckpoint(reader: reader, location: url, configURL: options.configURL,
                                                         maxHeaderBytes: options.limits.maxHeaderBytes, memory: options.memory) }
            cachedResolution = result
            return try result.get()
        }
    }

    /// The float32 model, built once (every tensor it reads converted on the way).
    /// - Parameter byteProgress: called after each tensor with (stored bytes read, total), the first time only.
    /// - Throws: ``PipelineError`` for mapping problems, ``FormatError`` for damaged data.
    public func model(byteProgress: ((Int, Int) -> Void)? = nil) throws -> PKMBertModel {
        if let model = lock.withLock({ cachedModel }) { return model }
        let model = try resolved().makeModel(byteProgress: byteProgress)
        lock.withLock { cachedModel = model }
        return model
    }

    /// The tokenizer and where it came from (``OpenOptions/tokenizerURL``; the one carried in the file;
    /// the tokenizer files beside it); loaded once.
    /// - Throws: ``PipelineError/unusableInput(path:reason:)`` when there is none; the tokenizer's own error for a malformed one.
    public func tokenizer() throws -> (Tokenizer, String) {
        if let cached = lock.withLock({ cachedTokenizer }) { return cached }
        let loaded = try TextInputs.tokenizer(for: self)
        lock.withLock { cachedTokenizer = loaded }
        return loaded
    }

    /// The SHA-256 of the weights file (of the index for sharded checkpoints), hashed once on another thread from
    /// the reader's own mapping when it has one, so the file is not opened again.
    public var digest: PendingSHA256 {
        lock.withLock {
            if let cachedDigest { return cachedDigest }
            let digest = reader.mappedFileBytes.map { PendingSHA256(mapped: $0, of: reader.url) } ?? PendingSHA256(file: reader.url)
            cachedDigest = digest
            return digest
        }
    }
}
