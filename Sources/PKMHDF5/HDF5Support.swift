import CHDF5
import Foundation
import PKMFormats
import PKMTensor

// Small helpers shared by ``HDF5Reader`` and ``HDF5Writer``: the process-wide lock, the
// conversion of libhdf5's error stack into ``FormatError``, owned identifiers, and the few
// datatypes h5py uses that libhdf5 1.10 does not predefine (IEEE half, numpy's bool enum).
// Every function here must be called with the lock held (inside `HDF5Library.locked`).

/// Process-wide access to libhdf5.
///
/// libhdf5 is not thread-safe in its serial configuration (the Debian package happens to be
/// built thread-safe, but nothing here relies on that): every call from any thread goes
/// through ``locked(_:)``. The lock is recursive so that a writer's `tensor` closure may read
/// from an ``HDF5Reader`` on the same thread, although the writer never calls that closure
/// with the lock held.
enum HDF5Library {
    private static let lock = NSRecursiveLock()

    /// Keeps libhdf5 from installing its `atexit` handler; evaluated before the library's first use.
    ///
    /// Why: when a write fails inside `H5Fclose` (a full disk, a file-size limit), libhdf5 1.10
    /// destroys the file object but keeps its identifier, and the exit handler (`H5_term_library`)
    /// then closes that identifier again and crashes, turning a clean "could not write" exit into
    /// a segmentation fault (found by the fault-injection tests, see RELIABILITY.md). Nothing needs
    /// the handler: writers close their files before committing and readers only read.
    private static let noExitHandler: Void = { _ = H5dont_atexit() }()

    /// Runs `body` holding the libhdf5 lock, with libhdf5's automatic error printing off.
    static func locked<Result>(_ body: () throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        _ = noExitHandler
        // Errors become Swift errors (``errorStack()``), never text on stderr. A thread-safe
        // libhdf5 keeps this setting per thread, so it is set on every entry (it is cheap).
        _ = H5Eset_auto2(pkm_h5e_default(), nil, nil)
        return try body()
    }

    /// The text of a NUL-terminated C character buffer.
    static func string(fromNulTerminated buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The current error stack, innermost (most specific) error first, then cleared.
    static func errorStack() -> String {
        final class Collector {
            var entries: [(function: String, description: String, minor: hid_t)] = []
        }
        let collector = Collector()
        // The walk callback must not call the HDF5 API (that would clear the stack being
        // walked), so minor messages are looked up afterwards.
        _ = H5Ewalk2(pkm_h5e_default(), H5E_WALK_UPWARD, { _, error, context in
            guard let error, let context else { return 0 }
            let collector = Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue()
            let function = error.pointee.func_name.map { String(cString: $0) } ?? "?"
            let description = error.pointee.desc.map { String(cString: $0) } ?? ""
            collector.entries.append((function, description, error.pointee.min_num))
            return 0
        }, Unmanaged.passUnretained(collector).toOpaque())
        _ = H5Eclear2(pkm_h5e_default())
        let lines = collector.entries.map { entry -> String in
            var line = "\(entry.function)(): \(entry.description)"
            var buffer = [CChar](repeating: 0, count: 256)
            if H5Eget_msg(entry.minor, nil, &buffer, buffer.count) > 0 {
                let minor = HDF5Library.string(fromNulTerminated: buffer)
                if !minor.isEmpty, !entry.description.localizedCaseInsensitiveContains(minor) { line += " [\(minor)]" }
            }
            return line
        }
        return withExtendedLifetime(collector) {
            lines.isEmpty ? "libhdf5 reported a failure without details" : lines.joined(separator: "; ")
        }
    }
}

/// Where an HDF5 failure happened: turns a failed call into ``FormatError/hdf5(path:object:message:)``.
struct HDF5Site {
    /// The file path as the user gave it (not `/proc/self/fd/N`).
    let path: String

    /// The error for a failed call on `object`, with libhdf5's error stack.
    func failure(_ object: String, _ action: String) -> FormatError {
        .hdf5(path: path, object: object, message: "\(action) failed: \(HDF5Library.errorStack())")
    }

    /// `id` when it is a valid identifier, else the error for `action`.
    func check(_ id: hid_t, _ object: String, _ action: String) throws -> hid_t {
        guard id >= 0 else { throw failure(object, action) }
        return id
    }

    /// Throws when a status code is negative.
    func check(status: herr_t, _ object: String, _ action: String) throws {
        guard status >= 0 else { throw failure(object, action) }
    }

    /// A tri-state (`htri_t`) answer: true, false, or an error.
    func check(tri value: htri_t, _ object: String, _ action: String) throws -> Bool {
        guard value >= 0 else { throw failure(object, action) }
        return value > 0
    }
}

/// An identifier this code opened, closed (under the libhdf5 lock) when the handle is released.
final class HDF5Handle {
    /// The libhdf5 identifier.
    let id: hid_t
    private let closer: (hid_t) -> herr_t

    init(_ id: hid_t, closer: @escaping (hid_t) -> herr_t) {
        self.id = id
        self.closer = closer
    }

    deinit {
        let (id, closer) = (self.id, self.closer)
        HDF5Library.locked { _ = closer(id) }
    }

    static func dataset(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Dclose($0) } }
    static func group(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Gclose($0) } }
    static func datatype(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Tclose($0) } }
    static func dataspace(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Sclose($0) } }
    static func attribute(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Aclose($0) } }
    static func propertyList(_ id: hid_t) -> HDF5Handle { HDF5Handle(id) { H5Pclose($0) } }
}

/// Names and values h5py and this package write into HDF5 files, declared once.
enum HDF5Names {
    /// Dataset attribute naming the logical dtype of raw storage (`bfloat16` over uint16, `bool` over uint8).
    static let dtypeAttribute = "dtype"
    /// Root attribute holding the model config JSON.
    static let configAttribute = "config"
    /// Root attribute holding ``Provenance`` as JSON.
    static let provenanceAttribute = "pkm_provenance"
    /// Name of the false member of h5py's bool enum (numpy bool is an int8 enum `FALSE = 0`, `TRUE = 1`).
    static let boolFalse = "FALSE"
    /// Name of the true member of h5py's bool enum.
    static let boolTrue = "TRUE"
    /// The HDF5 signature (`\x89HDF\r\n\x1a\n`), at byte 0 or at 512, 1024, 2048, … after a user block.
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
    /// Registered id of the zstd filter (HDF5 plugin).
    static let zstdFilter: H5Z_filter_t = 32015
}

/// Datatypes built at run time.
enum HDF5Types {
    /// IEEE 754 binary16, little-endian, exactly as h5py defines numpy float16 (libhdf5 1.10
    /// has no predefined half type): sign bit 15, exponent bits 10–14 biased by 15, mantissa 0–9.
    static func makeFloat16(site: HDF5Site) throws -> HDF5Handle {
        let type = HDF5Handle.datatype(try site.check(H5Tcopy(pkm_h5t_ieee_f32le()), "float16 type", "H5Tcopy"))
        try site.check(status: H5Tset_fields(type.id, 15, 10, 5, 0, 10), "float16 type", "H5Tset_fields")
        try site.check(status: H5Tset_size(type.id, 2), "float16 type", "H5Tset_size")
        try site.check(status: H5Tset_precision(type.id, 16), "float16 type", "H5Tset_precision")
        try site.check(status: H5Tset_ebias(type.id, 15), "float16 type", "H5Tset_ebias")
        return type
    }

    /// numpy bool as h5py writes it: an enum over int8 with `FALSE = 0`, `TRUE = 1`.
    static func makeBoolEnum(site: HDF5Site) throws -> HDF5Handle {
        let type = HDF5Handle.datatype(try site.check(H5Tenum_create(pkm_h5t_std_i8le()), "bool type", "H5Tenum_create"))
        var no: Int8 = 0
        var yes: Int8 = 1
        try site.check(status: H5Tenum_insert(type.id, HDF5Names.boolFalse, &no), "bool type", "H5Tenum_insert")
        try site.check(status: H5Tenum_insert(type.id, HDF5Names.boolTrue, &yes), "bool type", "H5Tenum_insert")
        return type
    }

    /// A variable-length UTF-8 C string type (h5py's `str`).
    static func makeVariableUTF8(site: HDF5Site) throws -> HDF5Handle {
        let type = HDF5Handle.datatype(try site.check(H5Tcopy(pkm_h5t_c_s1()), "string type", "H5Tcopy"))
        try site.check(status: H5Tset_size(type.id, pkm_h5t_variable()), "string type", "H5Tset_size")
        try site.check(status: H5Tset_cset(type.id, H5T_CSET_UTF8), "string type", "H5Tset_cset")
        return type
    }

    /// Whether `type` is an enum h5py reads as numpy bool: two members `FALSE = 0` and
    /// `TRUE = 1` over a one-byte integer.
    static func isBoolEnum(_ type: hid_t) -> Bool {
        guard H5Tget_class(type) == H5T_ENUM, H5Tget_nmembers(type) == 2, H5Tget_size(type) == 1 else { return false }
        var members: [String: UInt8] = [:]
        for index: UInt32 in 0..<2 {
            guard let name = H5Tget_member_name(type, index) else { return false }
            let text = String(cString: name)
            H5free_memory(name)
            var value: UInt8 = 0xFF
            guard H5Tget_member_value(type, index, &value) >= 0 else { return false }
            members[text] = value
        }
        return members == [HDF5Names.boolFalse: 0, HDF5Names.boolTrue: 1]
    }
}

/// Reading attributes as text.
enum HDF5Attributes {
    /// The value of a one-element attribute as text: strings (variable or fixed length, any
    /// padding) as they are; integers and floats in decimal; an h5py bool as `true`/`false`.
    /// Returns `nil` for attributes of other shapes or types.
    /// - Throws: ``FormatError`` when libhdf5 fails, or a fixed-length string is longer than `maxBytes`.
    static func text(of attribute: hid_t, object: String, site: HDF5Site, maxBytes: Int) throws -> String? {
        let space = HDF5Handle.dataspace(try site.check(H5Aget_space(attribute), object, "H5Aget_space"))
        guard H5Sget_simple_extent_npoints(space.id) == 1 else { return nil }
        let type = HDF5Handle.datatype(try site.check(H5Aget_type(attribute), object, "H5Aget_type"))
        switch H5Tget_class(type.id) {
        case H5T_STRING:
            if try site.check(tri: H5Tis_variable_str(type.id), object, "H5Tis_variable_str") {
                let memoryType = HDF5Handle.datatype(try site.check(H5Tcopy(pkm_h5t_c_s1()), object, "H5Tcopy"))
                try site.check(status: H5Tset_size(memoryType.id, pkm_h5t_variable()), object, "H5Tset_size")
                try site.check(status: H5Tset_cset(memoryType.id, H5Tget_cset(type.id)), object, "H5Tset_cset")
                var pointer: UnsafeMutablePointer<CChar>? = nil
                try site.check(status: H5Aread(attribute, memoryType.id, &pointer), object, "H5Aread")
                defer { _ = H5Dvlen_reclaim(memoryType.id, space.id, pkm_h5p_default(), &pointer) }
                guard let pointer else { return "" }
                let length = strlen(pointer)
                guard length <= maxBytes else {
                    throw FormatError.limitExceeded(path: site.path, limit: .headerBytes, value: length, maximum: maxBytes)
                }
                return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
            }
            let size = H5Tget_size(type.id)
            guard size > 0 else { return "" }
            guard size <= maxBytes else {
                throw FormatError.limitExceeded(path: site.path, limit: .headerBytes, value: size, maximum: maxBytes)
            }
            // Reading with the file's own type converts nothing: the raw padded bytes come back.
            let memoryType = HDF5Handle.datatype(try site.check(H5Tcopy(type.id), object, "H5Tcopy"))
            var bytes = [UInt8](repeating: 0, count: size)
            try site.check(status: H5Aread(attribute, memoryType.id, &bytes), object, "H5Aread")
            if let end = bytes.firstIndex(of: 0) { bytes.removeSubrange(end...) }  // NULLTERM / NULLPAD
            if H5Tget_strpad(type.id) == H5T_STR_SPACEPAD {
                while bytes.last == 0x20 { bytes.removeLast() }
            }
            return String(decoding: bytes, as: UTF8.self)
        case H5T_INTEGER:
            if H5Tget_sign(type.id) == H5T_SGN_NONE {
                var value: UInt64 = 0
                try site.check(status: H5Aread(attribute, pkm_h5t_native_uint64(), &value), object, "H5Aread")
                return String(value)
            }
            var value: Int64 = 0
            try site.check(status: H5Aread(attribute, pkm_h5t_native_int64(), &value), object, "H5Aread")
            return String(value)
        case H5T_FLOAT:
            if H5Tget_size(type.id) <= 4 {
                var value: Float = 0
                try site.check(status: H5Aread(attribute, pkm_h5t_native_float(), &value), object, "H5Aread")
                return "\(value)"
            }
            var value: Double = 0
            try site.check(status: H5Aread(attribute, pkm_h5t_native_double(), &value), object, "H5Aread")
            return "\(value)"
        case H5T_ENUM where HDF5Types.isBoolEnum(type.id):
            var value: UInt8 = 0
            try site.check(status: H5Aread(attribute, type.id, &value), object, "H5Aread")
            return value != 0 ? "true" : "false"
        default:
            return nil
        }
    }

    /// Names of the attributes of `object`, in name order.
    static func names(of object: hid_t, objectName: String, site: HDF5Site) throws -> [String] {
        final class Collector { var names: [String] = [] }
        let collector = Collector()
        var index: hsize_t = 0
        let status = H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, &index, { _, name, _, context in
            guard let name, let context else { return 0 }
            Unmanaged<Collector>.fromOpaque(context).takeUnretainedValue().names.append(String(cString: name))
            return 0
        }, Unmanaged.passUnretained(collector).toOpaque())
        try site.check(status: status, objectName, "H5Aiterate2")
        return withExtendedLifetime(collector) { collector.names }
    }

    /// Writes a scalar variable-length UTF-8 string attribute.
    static func writeString(_ value: String, named name: String, on object: hid_t, objectName: String,
                            stringType: hid_t, site: HDF5Site) throws {
        let what = "\(objectName) attribute '\(name)'"
        let space = HDF5Handle.dataspace(try site.check(H5Screate(H5S_SCALAR), what, "H5Screate"))
        let attribute = HDF5Handle.attribute(try site.check(
            H5Acreate2(object, name, stringType, space.id, pkm_h5p_default(), pkm_h5p_default()), what, "H5Acreate2"))
        try value.withCString { pointer in
            var pointer: UnsafePointer<CChar>? = pointer
            try site.check(status: H5Awrite(attribute.id, stringType, &pointer), what, "H5Awrite")
        }
    }
}
