import CHDF5
import Foundation
import PKMFormats
import PKMTensor

/// Writes a state dict as an h5py-compatible HDF5 file (`schemas/pkm-checkpoints.md` §4, `schemas/pkm-checkpoints.md`):
/// one contiguous, row-major dataset per tensor.
///
/// A dotted name becomes a dataset at the root (`/bert.encoder.layer.0.output.dense.weight`).
/// A name containing `/` (`outputs/memory/1/indices`, the reference layout of `schemas/pkm-checkpoints.md` §5) becomes
/// a dataset in nested groups, which ``HDF5Reader`` reads back under the dotted key
/// (`outputs.memory.1.indices`); names with empty, `.` or `..` components are rejected. Groups track
/// link creation order, so a reader lists tensors in the order they were written; object
/// modification times are not recorded, so the same input gives the same bytes.
///
/// Element types as h5py writes numpy's: float32/float64 as IEEE little-endian; float16 as
/// IEEE binary16 (a type built at run time: libhdf5 1.10 has none predefined) that h5py reads
/// as `float16`; bool as h5py's `FALSE`/`TRUE` enum over int8; bfloat16 as uint16 with the
/// dataset attribute `dtype = "bfloat16"`; integers as little-endian integers. Bits are
/// stored unchanged (NaN payloads included). Metadata becomes variable-length UTF-8 root
/// attributes (`config` etc.), and `options.provenance` the root attribute `pkm_provenance` (JSON).
///
/// The file is written through ``AtomicOutputFile`` (a hidden named temporary in the destination's
/// folder, renamed into place): nothing appears at `url` unless every tensor was written and the
/// file closed, and an existing file there is untouched until then.
public enum HDF5Writer: CheckpointWriter {
    /// HDF5's maximum dataset rank.
    public static let maxRank = 32

    /// Writes `tensorInfos` in order, asking `tensor` for each one's data.
    /// - Parameters:
    ///   - metadata: root string attributes; `config` is the model config JSON.
    ///   - options: only `provenance` is used.
    ///   - progress: called after each tensor with (tensors written, total).
    /// - Throws: ``FormatError`` (`.invalidTensor` for names HDF5 cannot hold or data that does
    ///   not match its entry, `.duplicateTensor`, `.io` when the folder is not writable, `.hdf5`
    ///   when libhdf5 fails, `.writeFailed`), or whatever `tensor` throws. Nothing is left at
    ///   `url` on failure, and an existing file there is untouched.
    public static func write(to url: URL, tensorInfos: [TensorInfo], metadata: [String: String],
                             options: WriteOptions = WriteOptions(), progress: ((Int, Int) -> Void)? = nil,
                             tensor: (TensorInfo) throws -> Tensor) throws {
        let path = url.path
        let site = HDF5Site(path: path)
        let layout = try planLayout(tensorInfos, path: path)
        var attributes = metadata
        if let provenance = try options.resolvedProvenance() {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            attributes[HDF5Names.provenanceAttribute] = String(decoding: try encoder.encode(provenance), as: UTF8.self)
        }
        for (key, value) in attributes where key.utf8.contains(0) || value.utf8.contains(0) || key.isEmpty {
            throw FormatError.writeFailed(path: path, reason: "metadata key '\(key)' is empty or it or its value contains a NUL byte, which an HDF5 string attribute cannot hold")
        }

        // A named temporary file: libhdf5 opens files by name and resolves that name with
        // realpath(), which fails for an anonymous O_TMPFILE inode.
        try AtomicOutputFile.write(to: url, named: true) { output in
            let session = try HDF5Library.locked { try WriteSession(path: output.pathForLibraries, site: site) }
            do {
                try HDF5Library.locked { try session.writeRootAttributes(attributes) }
                for (index, info) in tensorInfos.enumerated() {
                    let data = try tensor(info)
                    guard data.dtype == info.dtype, data.shape == info.shape else {
                        throw FormatError.invalidTensor(path: path, tensor: info.name, reason:
                            "the data supplied is \(data.dtype) \(data.shape) but the tensor table declares \(info.dtype) \(info.shape)")
                    }
                    try HDF5Library.locked { try session.writeDataset(data, components: layout[index]) }
                    progress?(index + 1, tensorInfos.count)
                }
                try HDF5Library.locked { try session.close() }
            } catch {
                HDF5Library.locked { session.abandon() }
                throw Self.writeFailure(error, path: path)
            }
        }
    }

    /// A failed write of libhdf5's sec2 driver (full disk, file-size limit) as
    /// ``FormatError/writeFailed(path:reason:)`` rather than a libhdf5 error stack; other errors unchanged.
    /// sec2 reports `file write failed: …, errno = 28, error message = 'No space left on device'`.
    static func writeFailure(_ error: Error, path: String) -> Error {
        guard case FormatError.hdf5(_, let object, let message)? = error as? FormatError,
              message.contains("write failed"),
              let start = message.range(of: "error message = '") else { return error }
        let reason = message[start.upperBound...].prefix { $0 != "'" }
        return FormatError.writeFailed(path: path, reason: "\(reason) (while libhdf5 wrote \(object))")
    }

    /// The group path components of every tensor, validated before anything is created.
    private static func planLayout(_ infos: [TensorInfo], path: String) throws -> [[String]] {
        var datasets: Set<[String]> = []
        var groups: Set<[String]> = []
        var dottedKeys: Set<String> = []
        var layout: [[String]] = []
        for info in infos {
            let name = info.name
            guard !name.isEmpty else {
                throw FormatError.invalidTensor(path: path, tensor: name, reason: "an empty name cannot be an HDF5 dataset")
            }
            let components = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            if components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) || name.utf8.contains(0) {
                throw FormatError.invalidTensor(path: path, tensor: name, reason:
                    "the name cannot be an HDF5 dataset: '/' separates groups, so it may not lead, trail or repeat, and no part may be '.' or '..' or hold a NUL byte")
            }
            guard info.shape.count <= maxRank else {
                throw FormatError.invalidTensor(path: path, tensor: name, reason: "rank \(info.shape.count) exceeds HDF5's maximum of \(maxRank)")
            }
            guard ShapeMath.byteCount(info.shape, dtype: info.dtype) != nil else {
                throw FormatError.invalidTensor(path: path, tensor: name, reason: "shape \(info.shape) is negative or overflows")
            }
            // Readers map nested paths to dotted keys, so `a/b` and `a.b` would collide on reading.
            guard dottedKeys.insert(components.joined(separator: ".")).inserted else {
                throw FormatError.duplicateTensor(path: path, tensor: name)
            }
            guard !groups.contains(components) else {
                throw FormatError.invalidTensor(path: path, tensor: name, reason: "the name is also the group holding another tensor")
            }
            for length in 1..<components.count {
                let prefix = Array(components.prefix(length))
                guard !datasets.contains(prefix) else {
                    throw FormatError.invalidTensor(path: path, tensor: name, reason:
                        "'\(prefix.joined(separator: "/"))' is a tensor, so it cannot also be a group holding this one")
                }
                groups.insert(prefix)
            }
            datasets.insert(components)
            layout.append(components)
        }
        return layout
    }
}

/// One open output file and the types and groups it uses. Every method runs under the libhdf5 lock.
private final class WriteSession {
    let site: HDF5Site
    private var file: hid_t
    private let stringType: HDF5Handle
    private let float16Type: HDF5Handle
    private let boolType: HDF5Handle
    private let groupCreation: HDF5Handle
    private let datasetCreation: HDF5Handle
    /// Groups created so far, by path components (the root is `[]`).
    private var groups: [[String]: HDF5Handle] = [:]

    /// Creates the HDF5 file at `path` (an ``AtomicOutputFile``'s named temporary, truncated) with
    /// libhdf5's default sec2 driver.
    init(path: String, site: HDF5Site) throws {
        self.site = site
        let object = "/"
        stringType = try HDF5Types.makeVariableUTF8(site: site)
        float16Type = try HDF5Types.makeFloat16(site: site)
        boolType = try HDF5Types.makeBoolEnum(site: site)

        // Track link creation order (the reader lists tensors in writing order) and record no
        // times (the same input gives the same bytes); the root group takes this from the file plist.
        let fileCreation = HDF5Handle.propertyList(try site.check(H5Pcreate(pkm_h5p_file_create()), object, "H5Pcreate"))
        let order = UInt32(H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED)
        try site.check(status: H5Pset_link_creation_order(fileCreation.id, order), object, "H5Pset_link_creation_order")
        try site.check(status: H5Pset_obj_track_times(fileCreation.id, false), object, "H5Pset_obj_track_times")
        groupCreation = HDF5Handle.propertyList(try site.check(H5Pcreate(pkm_h5p_group_create()), object, "H5Pcreate"))
        try site.check(status: H5Pset_link_creation_order(groupCreation.id, order), object, "H5Pset_link_creation_order")
        try site.check(status: H5Pset_obj_track_times(groupCreation.id, false), object, "H5Pset_obj_track_times")
        datasetCreation = HDF5Handle.propertyList(try site.check(H5Pcreate(pkm_h5p_dataset_create()), object, "H5Pcreate"))
        try site.check(status: H5Pset_obj_track_times(datasetCreation.id, false), object, "H5Pset_obj_track_times")

        let access = HDF5Handle.propertyList(try site.check(H5Pcreate(pkm_h5p_file_access()), object, "H5Pcreate"))
        try site.check(status: H5Pset_fclose_degree(access.id, H5F_CLOSE_STRONG), object, "H5Pset_fclose_degree")
        // The temporary file is private to this process until committed: no locking needed.
        try site.check(status: H5Pset_file_locking(access.id, false, true), object, "H5Pset_file_locking")
        file = try site.check(H5Fcreate(path, pkm_h5f_acc_trunc(), fileCreation.id, access.id), object, "creating the file (H5Fcreate)")
        do {
            groups[[]] = HDF5Handle.group(try site.check(H5Gopen2(file, "/", pkm_h5p_default()), object, "H5Gopen2"))
        } catch {
            abandon()
            throw error
        }
    }

    /// Writes each entry as a scalar variable-length UTF-8 string root attribute, in key order.
    func writeRootAttributes(_ attributes: [String: String]) throws {
        guard let root = groups[[]] else { return }
        for (key, value) in attributes.sorted(by: { $0.key < $1.key }) {
            try HDF5Attributes.writeString(value, named: key, on: root.id, objectName: "/", stringType: stringType.id, site: site)
        }
    }

    /// Creates the dataset at `components` (creating missing groups) and writes the tensor's bytes.
    func writeDataset(_ tensor: Tensor, components: [String]) throws {
        let parent = try group(Array(components.dropLast()))
        let object = "/" + components.joined(separator: "/")
        guard let leaf = components.last else { return }

        let type: hid_t
        switch tensor.dtype {
        case .float32: type = pkm_h5t_ieee_f32le()
        case .float64: type = pkm_h5t_ieee_f64le()
        case .float16: type = float16Type.id
        case .bfloat16: type = pkm_h5t_std_u16le()
        case .int64: type = pkm_h5t_std_i64le()
        case .int32: type = pkm_h5t_std_i32le()
        case .int16: type = pkm_h5t_std_i16le()
        case .int8: type = pkm_h5t_std_i8le()
        case .uint8: type = pkm_h5t_std_u8le()
        case .bool: type = boolType.id
        }
        let space: HDF5Handle
        if tensor.shape.isEmpty {
            space = HDF5Handle.dataspace(try site.check(H5Screate(H5S_SCALAR), object, "H5Screate"))
        } else {
            let dimensions = tensor.shape.map { hsize_t($0) }
            space = HDF5Handle.dataspace(try site.check(H5Screate_simple(Int32(dimensions.count), dimensions, nil), object, "H5Screate_simple"))
        }
        let dataset = HDF5Handle.dataset(try site.check(
            H5Dcreate2(parent.id, leaf, type, space.id, pkm_h5p_default(), datasetCreation.id, pkm_h5p_default()),
            object, "creating the dataset (H5Dcreate2)"))
        if tensor.byteCount > 0 {
            // Memory type = file type: libhdf5 converts nothing, every bit is kept.
            let status = tensor.storage.withUnsafeBytes { buffer in
                H5Dwrite(dataset.id, type, pkm_h5s_all(), pkm_h5s_all(), pkm_h5p_default(), buffer.baseAddress)
            }
            try site.check(status: status, object, "writing the data (H5Dwrite)")
        }
        if tensor.dtype == .bfloat16 {
            try HDF5Attributes.writeString(DType.bfloat16.displayName, named: HDF5Names.dtypeAttribute, on: dataset.id,
                                           objectName: object, stringType: stringType.id, site: site)
        }
    }

    /// The group at `components`, created (with its parents) when missing.
    private func group(_ components: [String]) throws -> HDF5Handle {
        if let existing = groups[components] { return existing }
        guard let leaf = components.last else { throw site.failure("/", "opening the root group") }
        let parent = try group(Array(components.dropLast()))
        let object = "/" + components.joined(separator: "/")
        let created = HDF5Handle.group(try site.check(
            H5Gcreate2(parent.id, leaf, pkm_h5p_default(), groupCreation.id, pkm_h5p_default()), object, "creating the group (H5Gcreate2)"))
        groups[components] = created
        return created
    }

    /// Closes the file, reporting failure (data not flushed).
    func close() throws {
        groups.removeAll()
        let file = self.file
        self.file = -1
        guard file >= 0 else { return }
        try site.check(status: H5Fclose(file), "/", "closing the file (H5Fclose)")
    }

    /// Closes the file after a failure, ignoring errors (the output is discarded anyway).
    func abandon() {
        groups.removeAll()
        if file >= 0 { _ = H5Fclose(file) }
        file = -1
        _ = HDF5Library.errorStack()
    }
}
