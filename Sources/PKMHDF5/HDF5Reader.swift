import CHDF5
import Foundation
import PKMFormats
import PKMTensor

/// Reads a PyTorch state dict exported with h5py (`schemas/pkm-checkpoints.md` §4, `schemas/pkm-checkpoints.md`).
///
/// Every dataset in the file is a tensor, found by walking the whole group tree. A dataset at
/// the root keeps its name (`/bert.encoder.layer.0.output.dense.weight`); a dataset in nested
/// groups is named by its path with `/` replaced by `.` (`/bert/encoder/layer/0/output/dense/weight`),
/// so both export styles give the same dotted key. Groups that track link creation order (files
/// written by ``HDF5Writer``, or by h5py with `track_order=True`) are listed in creation
/// order, others in name order.
///
/// Element types: float32, float64, float16 (kept as float16, read raw), int64, int32, int16,
/// int8, uint8, bool (h5py's `FALSE`/`TRUE` enum over int8, or uint8 with attribute
/// `dtype = "bool"`), and bfloat16 stored as uint16 (or int16) with the dataset attribute
/// `dtype = "bfloat16"`. Big-endian data is converted to little-endian by libhdf5 without
/// changing any bit. Datasets may be contiguous, compact or chunked, with the gzip, shuffle and
/// fletcher32 filters, and zstd (filter 32015) where the installed libhdf5 has that plugin.
///
/// Root attributes become ``metadata``: strings (variable or fixed length) as they are,
/// one-element numbers in decimal (reference files store `atol`/`rtol` as floats). The root
/// attribute `pkm_provenance` (JSON) becomes ``provenance`` instead.
///
/// Opening validates every dataset (type, rank, size against ``ReaderLimits`` and against the
/// bytes the file holds) so that ``tensor(named:)`` fails only for damaged data. All libhdf5
/// calls are serialised through one process-wide lock (the serial libhdf5 build is not
/// thread-safe); the file stays open, read-only, until the reader is released.
public final class HDF5Reader: CheckpointReader, @unchecked Sendable {
    /// The file this reader opened.
    public let url: URL
    /// Always ``CheckpointFormat/hdf5``.
    public var format: CheckpointFormat { .hdf5 }
    /// Tensors in file order (depth first through the groups).
    public let tensorInfos: [TensorInfo]
    /// Root attributes except `pkm_provenance`; `config` is the model config JSON.
    public let metadata: [String: String]
    /// The root attribute `pkm_provenance`, decoded.
    public let provenance: Provenance?

    private let file: hid_t
    private let entries: [String: Entry]
    private let site: HDF5Site

    /// How a dataset is read into memory.
    enum MemoryType {
        case nativeFloat, nativeDouble, nativeInt8, nativeUInt8, nativeInt16, nativeUInt16, nativeInt32, nativeInt64
        /// The file's own type in little-endian order: raw bits, byte-swapped if needed (half, bf16, bool enum).
        case fileTypeLittleEndian
    }

    struct Entry {
        /// Absolute HDF5 path, e.g. `/bert/encoder/layer/0/output/dense/weight`.
        let objectPath: String
        let info: TensorInfo
        let memoryType: MemoryType
    }

    /// Opens `url` and validates its tensor table.
    /// - Throws: ``FormatError``: `.fileNotFound`, `.unknownFormat` (empty file), `.badMagic` (not HDF5),
    ///   `.truncated` (the file is shorter than its superblock says), `.unsupportedDType` naming
    ///   the dataset, `.limitExceeded`, `.duplicateTensor`, `.invalidTensor`, `.invalidOffsets`,
    ///   or `.hdf5` with libhdf5's error stack naming the object.
    /// - Parameter isolation: when set, a child process running the caller's probing executable reads the file first
    ///   (``HDF5Probe``), and this process opens it only if the child read it cleanly.
    public init(url: URL, limits: ReaderLimits = ReaderLimits(), isolation: HDF5Probe? = nil) throws {
        self.url = url
        let path = url.path
        let site = HDF5Site(path: path)
        self.site = site
        let fileSize = try Self.checkSignature(path: path)
        if let isolation { try isolation.vet(path: path, fileSize: fileSize, limits: limits) }
        let opened: (file: hid_t, entries: [String: Entry], infos: [TensorInfo], metadata: [String: String], provenance: Provenance?) =
            try HDF5Library.locked {
                let file = try Self.openFile(path: path, site: site)
                do {
                    var walker = TreeWalker(site: site, limits: limits, fileSize: fileSize)
                    let root = HDF5Handle.group(try site.check(H5Gopen2(file, "/", pkm_h5p_default()), "/", "H5Gopen2"))
                    try walker.walk(group: root.id, components: [], depth: 0)
                    let (metadata, provenance) = try Self.readRootAttributes(root: root.id, site: site, limits: limits)
                    return (file, walker.entries, walker.infos, metadata, provenance)
                } catch {
                    _ = H5Fclose(file)
                    throw error
                }
            }
        file = opened.file
        entries = opened.entries
        tensorInfos = opened.infos
        metadata = opened.metadata
        provenance = opened.provenance
    }

    deinit {
        let file = self.file
        HDF5Library.locked { _ = H5Fclose(file) }
    }

    /// The HDF5 object path of a tensor (`/bert/encoder/…` or `/bert.encoder.…`), if present.
    public func objectPath(ofTensor name: String) -> String? { entries[name]?.objectPath }

    /// Reads one tensor's data (little-endian, row-major).
    /// - Throws: ``FormatError/tensorNotFound(path:tensor:)``, or ``FormatError/hdf5(path:object:message:)``
    ///   when libhdf5 cannot read the data (damaged chunks, a missing filter).
    public func tensor(named name: String) throws -> Tensor {
        guard let entry = entries[name] else { throw FormatError.tensorNotFound(path: url.path, tensor: name) }
        let byteCount = entry.info.byteCount
        var storage = Data(count: byteCount)
        let site = self.site
        let file = self.file
        try HDF5Library.locked {
            let object = entry.objectPath
            let dataset = HDF5Handle.dataset(try site.check(H5Dopen2(file, object, pkm_h5p_default()), object, "H5Dopen2"))
            guard byteCount > 0 else { return }
            var ownedType: HDF5Handle?
            let memoryType: hid_t
            switch entry.memoryType {
            case .nativeFloat: memoryType = pkm_h5t_native_float()
            case .nativeDouble: memoryType = pkm_h5t_native_double()
            case .nativeInt8: memoryType = pkm_h5t_native_int8()
            case .nativeUInt8: memoryType = pkm_h5t_native_uint8()
            case .nativeInt16: memoryType = pkm_h5t_native_int16()
            case .nativeUInt16: memoryType = pkm_h5t_native_uint16()
            case .nativeInt32: memoryType = pkm_h5t_native_int32()
            case .nativeInt64: memoryType = pkm_h5t_native_int64()
            case .fileTypeLittleEndian:
                let fileType = HDF5Handle.datatype(try site.check(H5Dget_type(dataset.id), object, "H5Dget_type"))
                let copy = HDF5Handle.datatype(try site.check(H5Tcopy(fileType.id), object, "H5Tcopy"))
                if H5Tget_class(copy.id) != H5T_ENUM, H5Tget_size(copy.id) > 1 {
                    try site.check(status: H5Tset_order(copy.id, H5T_ORDER_LE), object, "H5Tset_order")
                }
                ownedType = copy
                memoryType = copy.id
            }
            let status = storage.withUnsafeMutableBytes { buffer in
                H5Dread(dataset.id, memoryType, pkm_h5s_all(), pkm_h5s_all(), pkm_h5p_default(), buffer.baseAddress)
            }
            try site.check(status: status, object, "reading the data (H5Dread)")
            withExtendedLifetime(ownedType) {}
        }
        do {
            return try Tensor(dtype: entry.info.dtype, shape: entry.info.shape, storage: storage, name: name)
        } catch {
            throw FormatError.tensor(path: url.path, tensor: name, underlying: error)
        }
    }

    // MARK: - Opening

    /// Checks for the HDF5 signature (at byte 0 or after a 512·2ⁿ-byte user block) and returns the file size.
    private static func checkSignature(path: String) throws -> Int {
        // Only a regular file is opened (never blocking on a FIFO); libhdf5 then opens the same path.
        let descriptor = try RegularFile.openForReading(URL(fileURLWithPath: path), what: "an HDF5 file")
        // The descriptor is closed exactly once, here (a FileHandle that also closed it on dealloc
        // could close a number libhdf5 has since been given).
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: false)
        defer { close(descriptor) }
        let fileSize: Int
        do {
            fileSize = Int(try handle.seekToEnd())
        } catch {
            throw FormatError.io(path: path, operation: "seek", message: "\(error)")
        }
        guard fileSize > 0 else { throw FormatError.unknownFormat(path: path, reason: "the file is empty") }
        var offset = 0
        var firstBytes: [UInt8] = []
        while offset < fileSize {
            let bytes: [UInt8]
            do {
                try handle.seek(toOffset: UInt64(offset))
                bytes = [UInt8](try handle.read(upToCount: HDF5Names.signature.count) ?? Data())
            } catch {
                throw FormatError.io(path: path, operation: "read at byte \(offset)", message: "\(error)")
            }
            if offset == 0 { firstBytes = bytes }
            if bytes == HDF5Names.signature { return fileSize }
            offset = offset == 0 ? 512 : offset * 2
        }
        throw FormatError.badMagic(path: path, expected: "the HDF5 signature " + hex(HDF5Names.signature) + " (\\x89HDF\\r\\n\\x1a\\n)",
                                   found: firstBytes.isEmpty ? "nothing" : hex(firstBytes))
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
    }

    /// Opens read-only; a truncated file becomes ``FormatError/truncated(path:what:offset:needed:available:)``.
    private static func openFile(path: String, site: HDF5Site) throws -> hid_t {
        let access = HDF5Handle.propertyList(try site.check(H5Pcreate(pkm_h5p_file_access()), "/", "H5Pcreate"))
        // Close everything with the file; keep advisory locking but tolerate file systems without it.
        try site.check(status: H5Pset_fclose_degree(access.id, H5F_CLOSE_STRONG), "/", "H5Pset_fclose_degree")
        try site.check(status: H5Pset_file_locking(access.id, true, true), "/", "H5Pset_file_locking")
        let file = H5Fopen(path, pkm_h5f_acc_rdonly(), access.id)
        guard file >= 0 else {
            let stack = HDF5Library.errorStack()
            if stack.contains("truncated file") {
                let available = number(after: "eof = ", in: stack) ?? 0
                let needed = number(after: "stored_eof = ", in: stack) ?? 0
                throw FormatError.truncated(path: path, what: "HDF5 file (its superblock declares \(needed) bytes)",
                                            offset: available, needed: needed, available: available)
            }
            throw FormatError.hdf5(path: path, object: "/", message: "opening the file (H5Fopen) failed: \(stack)")
        }
        return file
    }

    /// The decimal number following `marker` in `text`.
    private static func number(after marker: String, in text: String) -> Int? {
        guard let range = text.range(of: marker) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isNumber })
    }

    private static func readRootAttributes(root: hid_t, site: HDF5Site, limits: ReaderLimits) throws
        -> (metadata: [String: String], provenance: Provenance?) {
        var metadata: [String: String] = [:]
        var provenance: Provenance?
        for name in try HDF5Attributes.names(of: root, objectName: "/", site: site) {
            let object = "/ attribute '\(name)'"
            let attribute = HDF5Handle.attribute(try site.check(H5Aopen(root, name, pkm_h5p_default()), object, "H5Aopen"))
            guard let text = try HDF5Attributes.text(of: attribute.id, object: object, site: site, maxBytes: limits.maxHeaderBytes) else {
                continue  // arrays and non-scalar types are not metadata
            }
            if name == HDF5Names.provenanceAttribute {
                do {
                    if let depth = JSONSyntax.depthError(in: Data(text.utf8)) { throw FormatError.invalidHeader(path: site.path, reason: "provenance JSON is \(depth)") }
                    provenance = try JSONDecoder().decode(Provenance.self, from: Data(text.utf8))
                } catch {
                    throw FormatError.invalidHeader(path: site.path, reason: "root attribute '\(name)' is not provenance JSON: \(error)")
                }
            } else {
                metadata[name] = text
            }
        }
        return (metadata, provenance)
    }

    // MARK: - Walking the group tree

    /// Depth-first walk collecting every dataset, validating each one.
    private struct TreeWalker {
        let site: HDF5Site
        let limits: ReaderLimits
        let fileSize: Int
        var entries: [String: Entry] = [:]
        var infos: [TensorInfo] = []
        /// Declared bytes beyond the stored (compressed) bytes so far: counted against
        /// ``ReaderLimits/amplificationAllowance(fileSize:)``, so a gzip bomb (4 GiB of zeros in a valid
        /// 4 MB file) is refused before anything is decompressed, in the probe and in this process.
        var amplifiedBytes = 0
        var totalBytes = 0
        var visitedGroups: Set<haddr_t> = []
        /// Deeper nesting than any state dict needs; stops pathological files.
        static let maxDepth = 64

        mutating func walk(group: hid_t, components: [String], depth: Int) throws {
            let groupPath = "/" + components.joined(separator: "/")
            guard depth <= Self.maxDepth else {
                throw FormatError.invalidTensor(path: site.path, tensor: components.joined(separator: "."),
                                                reason: "groups nest deeper than \(Self.maxDepth) levels at \(groupPath)")
            }
            for link in try links(of: group, groupPath: groupPath) {
                let childComponents = components + [link.name]
                let key = childComponents.joined(separator: ".")
                let objectPath = "/" + childComponents.joined(separator: "/")
                guard link.type == H5L_TYPE_HARD else {
                    throw FormatError.invalidTensor(path: site.path, tensor: key,
                                                    reason: "\(objectPath) is a soft or external link; only hard links are read")
                }
                var info = H5O_info_t()
                try site.check(status: H5Oget_info_by_name2(group, link.name, &info, UInt32(H5O_INFO_BASIC), pkm_h5p_default()),
                               objectPath, "H5Oget_info_by_name2")
                switch info.type {
                case H5O_TYPE_GROUP:
                    guard visitedGroups.insert(info.addr).inserted else {
                        throw FormatError.invalidTensor(path: site.path, tensor: key,
                                                        reason: "group \(objectPath) is linked more than once (a cycle or a shared group)")
                    }
                    let child = HDF5Handle.group(try site.check(H5Gopen2(group, link.name, pkm_h5p_default()), objectPath, "H5Gopen2"))
                    try walk(group: child.id, components: childComponents, depth: depth + 1)
                case H5O_TYPE_DATASET:
                    guard infos.count < limits.maxTensorCount else {
                        throw FormatError.limitExceeded(path: site.path, limit: .tensorCount, value: infos.count + 1, maximum: limits.maxTensorCount)
                    }
                    guard entries[key] == nil else { throw FormatError.duplicateTensor(path: site.path, tensor: key) }
                    let dataset = HDF5Handle.dataset(try site.check(H5Dopen2(group, link.name, pkm_h5p_default()), objectPath, "H5Dopen2"))
                    let entry = try inspect(dataset: dataset.id, key: key, objectPath: objectPath)
                    entries[key] = entry
                    infos.append(entry.info)
                default:
                    continue  // named datatypes hold no tensor
                }
            }
        }

        /// The links of a group, in creation order when the group tracks it, else in name order.
        private func links(of group: hid_t, groupPath: String) throws -> [(name: String, type: H5L_type_t)] {
            final class Collector { var links: [(name: String, type: H5L_type_t)] = [] }
            var index = H5_INDEX_NAME
            let creation = HDF5Handle.propertyList(try site.check(H5Gget_create_plist(group), groupPath, "H5Gget_create_plist"))
            var orderFlags: UInt32 = 0
            if H5Pget_link_creation_order(creation.id, &orderFlags) >= 0, orderFlags & UInt32(H5P_CRT_ORDER_TRACKED) != 0 {
                index = H5_INDEX_CRT_ORDER
            }
            let collector = Collector()
            var position: hsize_t = 0
            let status = H5Literate(group, index, H5_ITER_INC, &position, { _, name, info, context in
                guard let name, let info, let context else { return -1 }
                Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue().links.append((String(cString: name), info.pointee.type))
                return 0
            }, Unmanaged.passUnretained(collector).toOpaque())
            try site.check(status: status, groupPath, "listing the group (H5Literate)")
            return withExtendedLifetime(collector) { collector.links }
        }

        /// Validates one dataset: element type, shape, limits, layout, filters and stored size.
        private mutating func inspect(dataset: hid_t, key: String, objectPath: String) throws -> Entry {
            let type = HDF5Handle.datatype(try site.check(H5Dget_type(dataset), objectPath, "H5Dget_type"))
            let declared = try dtypeAttribute(of: dataset, objectPath: objectPath)
            let (dtype, memoryType) = try classify(type: type.id, declared: declared, key: key)

            let space = HDF5Handle.dataspace(try site.check(H5Dget_space(dataset), objectPath, "H5Dget_space"))
            var shape: [Int] = []
            switch H5Sget_simple_extent_type(space.id) {
            case H5S_SCALAR:
                shape = []
            case H5S_SIMPLE:
                let rank = Int(H5Sget_simple_extent_ndims(space.id))
                guard rank >= 0 else { throw site.failure(objectPath, "H5Sget_simple_extent_ndims") }
                guard rank <= limits.maxRank else {
                    throw FormatError.limitExceeded(path: site.path, limit: .rank, value: rank, maximum: limits.maxRank)
                }
                var dimensions = [hsize_t](repeating: 0, count: rank)
                guard H5Sget_simple_extent_dims(space.id, &dimensions, nil) >= 0 else {
                    throw site.failure(objectPath, "H5Sget_simple_extent_dims")
                }
                for dimension in dimensions {
                    guard let value = Int(exactly: dimension) else {
                        throw FormatError.invalidOffsets(path: site.path, tensor: key, reason: "dimension \(dimension) does not fit in Int")
                    }
                    shape.append(value)
                }
            default:
                throw FormatError.invalidTensor(path: site.path, tensor: key, reason: "\(objectPath) has an empty (null) dataspace and holds no data")
            }
            guard let byteCount = ShapeMath.byteCount(shape, dtype: dtype) else {
                throw FormatError.invalidOffsets(path: site.path, tensor: key, reason: "shape \(shape) of \(dtype) overflows")
            }
            let (total, overflow) = totalBytes.addingReportingOverflow(byteCount)
            guard !overflow, total <= limits.maxTotalBytes else {
                throw FormatError.limitExceeded(path: site.path, limit: .totalBytes, value: overflow ? Int.max : total, maximum: limits.maxTotalBytes)
            }
            totalBytes = total
            let stored = try checkStorage(dataset: dataset, key: key, objectPath: objectPath, byteCount: byteCount)
            if byteCount > stored {
                amplifiedBytes += byteCount - stored
                let allowance = limits.amplificationAllowance(fileSize: fileSize)
                if amplifiedBytes > allowance {
                    let declared = infos.reduce(byteCount) { $0 + $1.byteCount }
                    throw FormatError.amplificationExceeded(path: site.path, tensor: key, logicalBytes: declared,
                                                            storedBytes: declared - amplifiedBytes, maximum: allowance)
                }
            }
            return Entry(objectPath: objectPath, info: TensorInfo(name: key, dtype: dtype, shape: shape), memoryType: memoryType)
        }

        /// The dataset attribute `dtype` as a ``DType``, when present and a string naming one.
        private func dtypeAttribute(of dataset: hid_t, objectPath: String) throws -> DType? {
            let name = HDF5Names.dtypeAttribute
            guard try site.check(tri: H5Aexists(dataset, name), objectPath, "H5Aexists") else { return nil }
            let object = "\(objectPath) attribute '\(name)'"
            let attribute = HDF5Handle.attribute(try site.check(H5Aopen(dataset, name, pkm_h5p_default()), object, "H5Aopen"))
            return try HDF5Attributes.text(of: attribute.id, object: object, site: site, maxBytes: 1024).flatMap { DType(parsing: $0) }
        }

        /// Maps an HDF5 datatype to the tensor dtype and the memory type it is read with.
        private func classify(type: hid_t, declared: DType?, key: String) throws -> (DType, MemoryType) {
            let size = H5Tget_size(type)
            func unsupported(_ description: String) -> FormatError {
                FormatError.unsupportedDType(path: site.path, tensor: key, dtype: "HDF5 \(description)")
            }
            switch H5Tget_class(type) {
            case H5T_FLOAT:
                switch size {
                case 4: return (.float32, .nativeFloat)
                case 8: return (.float64, .nativeDouble)
                case 2:
                    var (signPosition, exponentPosition, exponentSize, mantissaPosition, mantissaSize) = (0, 0, 0, 0, 0)
                    guard H5Tget_fields(type, &signPosition, &exponentPosition, &exponentSize, &mantissaPosition, &mantissaSize) >= 0 else {
                        throw site.failure(key, "H5Tget_fields")
                    }
                    let layout = [signPosition, exponentPosition, exponentSize, mantissaPosition, mantissaSize]
                    let bias = H5Tget_ebias(type)
                    if layout == [15, 10, 5, 0, 10], bias == 15 { return (.float16, .fileTypeLittleEndian) }
                    if layout == [15, 7, 8, 0, 7], bias == 127 { return (.bfloat16, .fileTypeLittleEndian) }
                    throw unsupported("16-bit float with fields \(layout) and exponent bias \(bias)")
                default:
                    throw unsupported("\(size * 8)-bit float")
                }
            case H5T_INTEGER:
                let signed = H5Tget_sign(type) != H5T_SGN_NONE
                switch (size, signed, declared) {
                case (8, true, _): return (.int64, .nativeInt64)
                case (4, true, _): return (.int32, .nativeInt32)
                case (2, true, .bfloat16): return (.bfloat16, .nativeInt16)
                case (2, false, .bfloat16): return (.bfloat16, .nativeUInt16)
                case (2, true, _): return (.int16, .nativeInt16)
                case (1, true, .bool): return (.bool, .nativeInt8)
                case (1, false, .bool): return (.bool, .nativeUInt8)
                case (1, true, _): return (.int8, .nativeInt8)
                case (1, false, _): return (.uint8, .nativeUInt8)
                case (2, false, _):
                    throw unsupported("uint16 (bfloat16 data needs the dataset attribute dtype = \"bfloat16\")")
                default:
                    throw unsupported("\(signed ? "int" : "uint")\(size * 8)")
                }
            case H5T_ENUM:
                if HDF5Types.isBoolEnum(type) { return (.bool, .fileTypeLittleEndian) }
                throw unsupported("enum (only h5py's bool enum FALSE/TRUE is read)")
            case H5T_STRING: throw unsupported("string")
            case H5T_COMPOUND: throw unsupported("compound")
            case H5T_VLEN: throw unsupported("variable-length sequence")
            case H5T_REFERENCE: throw unsupported("reference")
            case H5T_ARRAY: throw unsupported("array")
            case H5T_OPAQUE: throw unsupported("opaque")
            case H5T_BITFIELD: throw unsupported("bitfield")
            case H5T_TIME: throw unsupported("time")
            default: throw unsupported("datatype class \(H5Tget_class(type).rawValue)")
            }
        }

        /// Checks layout and filters, and that the file holds the data the dataset declares,
        /// so reading never allocates more than the file can fill.
        /// - Returns: the bytes the dataset's data occupies in the file (compressed, when filtered).
        private func checkStorage(dataset: hid_t, key: String, objectPath: String, byteCount: Int) throws -> Int {
            let creation = HDF5Handle.propertyList(try site.check(H5Dget_create_plist(dataset), objectPath, "H5Dget_create_plist"))
            let layout = H5Pget_layout(creation.id)
            var compressing = false
            var unboundedRatio = false
            switch layout {
            case H5D_CONTIGUOUS, H5D_COMPACT:
                guard H5Pget_external_count(creation.id) == 0 else {
                    throw FormatError.invalidTensor(path: site.path, tensor: key,
                                                    reason: "\(objectPath) keeps its data in external raw files; not supported")
                }
            case H5D_CHUNKED:
                let filterCount = H5Pget_nfilters(creation.id)
                guard filterCount >= 0 else { throw site.failure(objectPath, "H5Pget_nfilters") }
                for index in 0..<UInt32(filterCount) {
                    var nameBuffer = [CChar](repeating: 0, count: 256)
                    let filter = pkm_h5p_get_filter_id(creation.id, index, &nameBuffer, nameBuffer.count)
                    guard filter >= 0 else { throw site.failure(objectPath, "H5Pget_filter2") }
                    let filterName = HDF5Library.string(fromNulTerminated: nameBuffer)
                    let available = H5Zfilter_avail(filter)
                    guard available > 0 else {
                        _ = HDF5Library.errorStack()
                        let label = filter == HDF5Names.zstdFilter ? "zstd (filter 32015)" : "'\(filterName)' (filter \(filter))"
                        throw FormatError.hdf5(path: site.path, object: objectPath, message:
                            "the data is compressed with \(label), which this libhdf5 does not have; "
                            + "install the HDF5 filter plugin and set HDF5_PLUGIN_PATH, or re-export with gzip or no compression")
                    }
                    switch filter {
                    case H5Z_FILTER_SHUFFLE, H5Z_FILTER_FLETCHER32:
                        break
                    case H5Z_FILTER_NBIT, H5Z_FILTER_SCALEOFFSET:
                        // They pack values into fewer bits (scale-offset down to 0 bits for a constant chunk):
                        // stored bytes are fewer than declared, as with compression (a valid scale-offset file
                        // was called damaged, "chunks missing", before issue 18).
                        compressing = true
                        unboundedRatio = true
                    case H5Z_FILTER_DEFLATE:
                        compressing = true
                    default:
                        compressing = true
                        unboundedRatio = true
                    }
                }
            default:
                throw FormatError.invalidTensor(path: site.path, tensor: key,
                                                reason: "\(objectPath) is a virtual dataset (its data lives in other files); not supported")
            }
            guard byteCount > 0 else { return 0 }
            let stored = H5Dget_storage_size(dataset)
            guard let storedBytes = Int(exactly: stored), storedBytes <= fileSize else {
                throw FormatError.invalidOffsets(path: site.path, tensor: key,
                                                 reason: "\(objectPath) claims \(stored) stored bytes but the file has \(fileSize)")
            }
            if layout == H5D_CONTIGUOUS {
                let offset = H5Dget_offset(dataset)
                guard storedBytes >= byteCount, let start = Int(exactly: offset), start <= fileSize, byteCount <= fileSize - start else {
                    let place = offset == haddr_t.max ? "but was never written (no storage allocated)" : "at byte \(offset)"
                    throw FormatError.invalidOffsets(path: site.path, tensor: key, reason:
                        "\(objectPath) declares \(byteCount) bytes \(place); the file (\(fileSize) bytes) does not hold them")
                }
            } else if !compressing {
                guard storedBytes >= byteCount else {
                    throw FormatError.invalidOffsets(path: site.path, tensor: key,
                                                     reason: "\(objectPath) declares \(byteCount) bytes but stores only \(storedBytes) (chunks missing)")
                }
            } else {
                // Deflate cannot exceed about 1032:1; other filters (zstd, szip) are held to zstd's bound,
                // so a tiny chunk cannot make `tensor(named:)` allocate a terabyte. Chunk overheads allowed.
                let ratio = unboundedRatio ? Self.maxFilterRatio : Self.maxDeflateRatio
                let (bound, overflow) = storedBytes.multipliedReportingOverflow(by: ratio)
                guard overflow || byteCount <= bound + (1 << 16) else {
                    throw FormatError.invalidOffsets(path: site.path, tensor: key, reason:
                        "\(objectPath) declares \(byteCount) bytes but stores only \(storedBytes) compressed bytes, more than "
                        + (unboundedRatio ? "any supported filter expands to (\(ratio):1)" : "deflate can expand to"))
                }
            }
            return storedBytes
        }

        /// Upper bound of deflate's expansion ratio (the format's maximum is about 1032:1).
        static let maxDeflateRatio = 1100
        /// Upper bound for other compression filters: a zstd block of at most 128 KiB takes at least 4 bytes.
        static let maxFilterRatio = PKMZLayout.maximumExpansion
    }
}
