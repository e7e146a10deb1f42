// libFuzzer entry point for pkm-convert's readers (built by scripts/fuzz-libfuzzer.sh, not by `swift test`).
//
// One binary, eight targets chosen by the environment variable PKM_FUZZ_TARGET:
//   safetensors  bytes → a .safetensors file → SafetensorsReader, every tensor read and widened
//   pkmz         bytes → a .pkmz file → PKMZReader, checksums verified, every tensor decoded
//   pkmz-header  bytes → a pkmz header JSON framed into an otherwise valid empty pkmz file (valid XXH64)
//   pickle       bytes → a .pt file → TorchCheckpointReader (zip or legacy container), every tensor read
//   pickle-vm    bytes → the pickle machine directly (a data.pkl), with the checkpoint limits
//   config       bytes → ModelConfig.decode(json:)
//   zip          bytes → ZipDirectory (the torch zip's EOCD, ZIP64 records, central directory, local headers)
//   json         bytes → JSONSyntax.firstError (the position finder of tokenizer and config errors)
// Any thrown error is an accepted outcome: the harness only looks for crashes, hangs (libFuzzer's
// -timeout), leaks and address errors (AddressSanitizer), and for readers that accept a file
// declaring more tensor bytes than it can hold.
import Foundation
@testable import PKMFormats
import PKMModel
import PKMTensor

private enum Harness {
    static let target = ProcessInfo.processInfo.environment["PKM_FUZZ_TARGET"] ?? "safetensors"
    static let scratch = URL(fileURLWithPath: ProcessInfo.processInfo.environment["PKM_FUZZ_SCRATCH"] ?? "/dev/shm")
        .appendingPathComponent("pkm-libfuzzer-\(getpid()).\(["safetensors": "safetensors", "pickle": "pt"][target] ?? "pkmz")")

    /// Writes the input to the scratch file (no fsync; removed at exit).
    static func write(_ bytes: UnsafeRawBufferPointer) {
        _ = removeAtExit
        guard let file = fopen(scratch.path, "wb") else { fatalError("cannot write \(scratch.path)") }
        if let base = bytes.baseAddress { _ = fwrite(base, 1, bytes.count, file) }
        fclose(file)
    }

    static let removeAtExit: Void = { atexit { unlink(Harness.scratch.path) } }()

    static let verbose = ProcessInfo.processInfo.environment["PKM_FUZZ_VERBOSE"] != nil

    /// With PKM_FUZZ_VERBOSE set (replaying one input), prints why an input was refused.
    static func report(_ error: Error) {
        if verbose { FileHandle.standardError.write(Data("refused: \(error)\n".utf8)) }
    }

    /// Opens the scratch file with `open`, reads every tensor and converts it to float32.
    static func readEverything(_ open: () throws -> any CheckpointReader, fileSize: Int, maximumExpansion: Int) {
        let reader: any CheckpointReader
        do { reader = try open() } catch { report(error); return }
        // A reader that accepted the file must not promise more bytes than the file can produce.
        if reader.totalBytes > fileSize * maximumExpansion {
            fatalError("reader accepted \(reader.totalBytes) declared bytes from a \(fileSize)-byte file")
        }
        if verbose { FileHandle.standardError.write(Data("accepted: \(reader.tensorInfos.count) tensors, \(reader.totalBytes) bytes\n".utf8)) }
        if let pkmz = reader as? PKMZReader {
            do { try pkmz.verifyChecksums() } catch { report(error) }
        }
        for info in reader.tensorInfos {
            let tensor: Tensor
            do { tensor = try reader.tensor(named: info.name) } catch { report(error); continue }
            if tensor.byteCount != info.byteCount { fatalError("tensor '\(info.name)' has \(tensor.byteCount) bytes, its info says \(info.byteCount)") }
            _ = try? tensor.converted(to: .float32)
        }
    }

    /// An empty-data pkmz file around `header` (prologue, header, trailer with the right XXH64).
    static func framedPKMZ(header: UnsafeRawBufferPointer) -> Data {
        var file = Data([0x89, 0x50, 0x4B, 0x4D, 0x5A, 0x0D, 0x0A, 0x1A, 1, 0, 0, 0, 0, 0, 0, 0])
        let prologue = file
        file.append(contentsOf: header)
        var hashInput = prologue
        hashInput.append(contentsOf: header)
        let hash = hashInput.withUnsafeBytes { XXHash64.hash($0, seed: 0) }
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { file.append(contentsOf: $0) } }
        append(UInt64(16))
        append(UInt64(header.count))
        append(hash)
        append(UInt32(1))
        file.append(contentsOf: [0x50, 0x4B, 0x4D, 0x5A])
        return file
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: start == nil ? 0 : count)
    switch Harness.target {
    case "safetensors":
        Harness.write(bytes)
        Harness.readEverything({ try SafetensorsReader(url: Harness.scratch) }, fileSize: count, maximumExpansion: 1)
    case "pkmz":
        Harness.write(bytes)
        Harness.readEverything({ try PKMZReader(url: Harness.scratch, threads: 1) }, fileSize: count, maximumExpansion: 32_768)
    case "pkmz-header":
        let file = Harness.framedPKMZ(header: bytes)
        file.withUnsafeBytes { Harness.write($0) }
        Harness.readEverything({ try PKMZReader(url: Harness.scratch, threads: 1) }, fileSize: file.count, maximumExpansion: 32_768)
    case "pickle":
        Harness.write(bytes)
        Harness.readEverything({ try TorchCheckpointReader(url: Harness.scratch) }, fileSize: count, maximumExpansion: 1_100)
    case "pickle-vm":
        var machine = PickleMachine(path: "fuzz.pkl", context: "data.pkl", limits: PickleLimits(ReaderLimits()))
        do { _ = try machine.run(Data(bytes)) } catch { Harness.report(error) }
    case "config":
        do { _ = try ModelConfig.decode(json: Data(bytes)) } catch { Harness.report(error) }
    case "zip":
        do { _ = try ZipDirectory(file: Data(bytes), path: "fuzz.zip", maxEntries: 1 << 16) } catch { Harness.report(error) }
    case "json":
        _ = JSONSyntax.firstError(in: Data(bytes))
    default:
        fatalError("PKM_FUZZ_TARGET must be safetensors, pkmz, pkmz-header, pickle, pickle-vm, config, zip or json")
    }
    return 0
}
