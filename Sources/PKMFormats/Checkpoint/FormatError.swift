import Foundation
import PKMTensor

/// Every error the checkpoint readers and writers raise.
///
/// Each case names the file, and where known the tensor and byte offset; its description
/// says what broke and what to do about it.
public enum FormatError: Error, Sendable, CustomStringConvertible {
    /// The path does not exist.
    case fileNotFound(path: String)
    /// A model folder holds no weights file pkm-convert knows; `found` says what it does hold.
    case noCheckpointInFolder(path: String, found: String)
    /// The format could not be recognised from the magic bytes or the extension.
    case unknownFormat(path: String, reason: String)
    /// An operating-system I/O call failed.
    case io(path: String, operation: String, message: String)
    /// The file ends before a structure it declares.
    case truncated(path: String, what: String, offset: Int, needed: Int, available: Int)
    /// The magic bytes are wrong: not this format, or damaged. `expected` names the format and its magic.
    case badMagic(path: String, expected: String, found: String)
    /// The format version is newer (or older) than this build reads.
    case unsupportedVersion(path: String, found: Int, supported: [Int])
    /// The header is malformed (invalid JSON, missing fields, wrong types).
    case invalidHeader(path: String, reason: String)
    /// One tensor's entry is malformed.
    case invalidTensor(path: String, tensor: String, reason: String)
    /// A tensor's dtype is not one this build supports.
    case unsupportedDType(path: String, tensor: String, dtype: String)
    /// Shape × dtype size overflows, or data offsets are out of range, overlapping or not contiguous.
    case invalidOffsets(path: String, tensor: String, reason: String)
    /// A declared size exceeds a limit in ``ReaderLimits``.
    case limitExceeded(path: String, limit: ReaderLimit, value: Int, maximum: Int)
    /// Tensors declare `logicalBytes` in all from `storedBytes` the file really holds for them
    /// (stride-0 expanded views, many tensors over one storage, a deflated entry far larger than its
    /// compressed bytes): the excess is above `maximum` (``ReaderLimits/amplificationAllowance(fileSize:)``).
    /// `tensor` is the one that crossed the allowance.
    case amplificationExceeded(path: String, tensor: String, logicalBytes: Int, storedBytes: Int, maximum: Int)
    /// Stored and computed checksums differ: the file is damaged.
    case checksumMismatch(path: String, what: String, offset: Int)
    /// A compressed frame does not decode, or decodes to the wrong size.
    case decompressionFailed(path: String, tensor: String, offset: Int, reason: String)
    /// libhdf5 reported an error; `message` is its error stack, innermost first.
    case hdf5(path: String, object: String, message: String)
    /// A shard listed in `model.safetensors.index.json` is missing.
    case missingShard(path: String, shard: String)
    /// A shard path leaves the checkpoint folder (absolute, or containing `..`).
    case shardPathEscapes(path: String, shard: String)
    /// A shard named in an index is a symbolic link (`link`, or a folder on its way) whose target
    /// (`target`, fully resolved) lies outside the checkpoint folder and outside the
    /// `huggingface_hub` cache's `blobs/` folder of the same repository.
    case shardLinkEscapes(path: String, shard: String, link: String, target: String)
    /// A path to read names something other than a regular file (a FIFO, a device, a socket, a
    /// folder), which is never opened: opening a FIFO blocks, a device reads without end.
    case notRegularFile(path: String, found: String, what: String)
    /// The same tensor name appears twice.
    case duplicateTensor(path: String, tensor: String)
    /// A tensor requested by name is not in the file.
    case tensorNotFound(path: String, tensor: String)
    /// Writing the output failed; nothing was left at the destination.
    case writeFailed(path: String, reason: String)
    /// The tensor core rejected a value.
    case tensor(path: String, tensor: String, underlying: TensorError)
    /// The isolated reader (``HDF5Probe``) refused, crashed or hung on the file, which was
    /// therefore never opened in this process. `reason` is the child's own error line or what
    /// happened to it.
    case isolatedReadFailed(path: String, reason: String)
    /// The isolated reader did not finish within its deadline (``HDF5Probe/timeoutSeconds``).
    case isolatedReadTimedOut(path: String, seconds: Double)
    /// The isolated reader could not be started (``HDF5Probe/command``).
    case isolatedReaderUnavailable(path: String, command: String, message: String)
    /// A PyTorch pickle names a class or function outside the allow-list (`posix.system`,
    /// `builtins.eval`, a model class): refused before anything was built; nothing is ever executed.
    case refusedGlobal(path: String, global: String)
    /// A PyTorch pickle is malformed, uses an unsupported protocol or opcode, or exceeds a pickle
    /// limit; `offset` is the opcode's byte offset (in the file for the legacy stream, in `data.pkl`
    /// for the zip container, which `reason` names).
    case pickle(path: String, offset: Int, reason: String)

    /// The message, with control characters in names and paths escaped
    /// (``Swift/String/escapedForTerminal``): a file cannot write to the user's terminal through it.
    public var description: String { rendered(raising: { "raise the limit (ReaderLimits.\($0.propertyName))" }) }

    /// The message with the remedy for an exceeded limit phrased by `raising` (a front end names its own way of
    /// raising each ``ReaderLimit``), control characters escaped.
    public func rendered(raising: (ReaderLimit) -> String) -> String { rawDescription(raising: raising).escapedForTerminal }

    /// The message with names exactly as the file has them.
    func rawDescription(raising: (ReaderLimit) -> String) -> String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): no such file or folder; check the path"
        case .noCheckpointInFolder(let path, let found):
            return "\(path): no model weights in this folder (looked for model.safetensors[.index.json], pytorch_model.bin[.index.json], model.pkmz, model.h5, or one .safetensors/.bin/.pt/.pth/.h5/.pkmz file; \(found))"
        case .unknownFormat(let path, let reason):
            return "\(path): unrecognised checkpoint format (\(reason)); pkm-convert reads HDF5 (.h5), safetensors, PyTorch pickles (.bin/.pt/.pth) and .pkmz"
        case .io(let path, let operation, let message):
            return "\(path): \(operation) failed: \(message)"
        case .truncated(let path, let what, let offset, let needed, let available):
            return "\(path): truncated \(what) at byte \(offset) (needs \(needed) bytes, \(available) present); the file is incomplete, re-copy or re-export it"
        case .badMagic(let path, let expected, let found):
            return "\(path): not a valid file (expected \(expected), found \(found)); it is another kind of file, or damaged"
        case .unsupportedVersion(let path, let found, let supported):
            return "\(path): format version \(found) is not supported (this build reads \(supported.map(String.init).joined(separator: ", "))); upgrade pkm-convert"
        case .invalidHeader(let path, let reason):
            return "\(path): invalid header: \(reason)"
        case .invalidTensor(let path, let tensor, let reason):
            return "\(path): tensor '\(tensor)': \(reason)"
        case .unsupportedDType(let path, let tensor, let dtype):
            return "\(path): tensor '\(tensor)' has unsupported dtype '\(dtype)' (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .invalidOffsets(let path, let tensor, let reason):
            return "\(path): tensor '\(tensor)': \(reason); the file is damaged or was not written by a conforming writer"
        case .limitExceeded(let path, let limit, let value, let maximum):
            return "\(path): \(limit.rawValue) is \(value), above the limit \(maximum); if the file is trusted, \(raising(limit))"
        case .amplificationExceeded(let path, let tensor, let logical, let stored, let maximum):
            return "\(path): tensor '\(tensor)': the tensors so far declare \(logical) bytes from \(stored) bytes the file stores for them (views that expand or repeat stored data, or data compressed beyond reason); the excess, \(logical - stored) bytes, is above the allowance of \(maximum) (4 × the file's size + 64 MiB, at most half this machine's memory); if the file is trusted, \(raising(.amplifiedBytes))"
        case .checksumMismatch(let path, let what, let offset):
            return "\(path): checksum mismatch in \(what) at byte \(offset); the file is corrupted, re-copy it"
        case .decompressionFailed(let path, let tensor, let offset, let reason):
            return "\(path): tensor '\(tensor)': compressed data at byte \(offset) does not decode (\(reason)); the file is corrupted"
        case .hdf5(let path, let object, let message):
            return "\(path): HDF5 error at '\(object)': \(message)"
        case .missingShard(let path, let shard):
            return "\(path): shard '\(shard)' listed in the index is missing; copy every shard into the folder"
        case .shardPathEscapes(let path, let shard):
            return "\(path): shard path '\(shard)' leaves the checkpoint folder; refusing to read it"
        case .shardLinkEscapes(let path, let shard, let link, let target):
            return "\(path): shard '\(shard)' is a symbolic link \(link) -> \(target), which leads outside the checkpoint folder (and outside a huggingface_hub cache's blobs/ folder); refusing to follow it; copy the file into the folder if you trust it"
        case .notRegularFile(let path, let found, let what):
            return "\(path): is \(found), not a regular file; \(what) must be a regular file (or a symbolic link to one)"
        case .duplicateTensor(let path, let tensor):
            return "\(path): tensor '\(tensor)' appears more than once"
        case .tensorNotFound(let path, let tensor):
            return "\(path): no tensor named '\(tensor)'"
        case .writeFailed(let path, let reason):
            return "\(path): could not write: \(reason); nothing was left at the destination"
        case .tensor(let path, let tensor, let underlying):
            return "\(path): tensor '\(tensor)': \(underlying)"
        case .isolatedReadFailed(let path, let reason):
            // A refusal from the child already starts with the path.
            return reason.hasPrefix(path + ":") ? reason : "\(path): \(reason)"
        case .isolatedReadTimedOut(let path, let seconds):
            return "\(path): the isolated HDF5 reader did not finish within \(String(format: "%g", seconds)) s (killed): libhdf5 loops on damaged metadata, or the disk is very slow (then raise the probe's deadline, HDF5Probe.timeoutSeconds)"
        case .isolatedReaderUnavailable(let path, let command, let message):
            return "\(path): could not start the isolated HDF5 reader \(command): \(message); without it the file can only be read unisolated (ReadOptions.hdf5Isolation = nil)"
        case .refusedGlobal(let path, let global):
            return "\(path): the pickle tries to call \(global), which a checkpoint never needs, so the file was refused and nothing was executed; if you trust it, load it in Python and re-save the state dict as .safetensors"
        case .pickle(let path, let offset, let reason):
            return "\(path): invalid PyTorch pickle at byte \(offset) of \(reason)"
        }
    }
}
