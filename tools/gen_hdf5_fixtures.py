#!/usr/bin/env python3
"""Generate the committed HDF5 fixtures in fixtures/hdf5/ and check Swift-written files with h5py.

    python3 tools/gen_hdf5_fixtures.py            # (re)write fixtures/hdf5/*.h5, expected.json, MANIFEST.json
    python3 tools/gen_hdf5_fixtures.py --check-swift FILE
                                                  # check a file written by HDF5Writer with h5py

Every fixture is written with h5py's default libver and gzip(+shuffle) or no compression, so
that libhdf5 1.10.8 (the Swift side) opens files written by h5py's bundled HDF5 2.0.

expected.json lists, per fixture, the tensors in the order HDF5Reader must report them (depth
first, links in name order since h5py does not track creation order by default), each with its
pkm dtype, shape and little-endian bytes in hex (or their SHA-256 above 512 bytes), plus the
expected metadata and provenance; for chunked.h5 also where the first chunk of two datasets
lies, so tests can damage chunk data and expect an error.

fixtures/hdf5/swift_written.h5 is written by the Swift test suite
(`PKM_HDF5_SAMPLE_OUT=fixtures/hdf5/swift_written.h5 swift test --filter HDF5`); when present,
this script checks it with h5py (float16 must come back as float16, bool as bool, ...) and
records the check in MANIFEST.json.
"""
import argparse
import ctypes
import ctypes.util
import hashlib
import json
import os
import sys

import h5py
import numpy as np

SEED = 20240611
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "hdf5")
GENERATOR = "tools/gen_hdf5_fixtures.py"

CONFIG = json.dumps({"model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1,
                     "pkm": {"layers": [0], "modes": ["residual"], "n_keys": 4, "heads": 1}},
                    sort_keys=True)
PROVENANCE = json.dumps({"source_file": "model.safetensors", "source_sha256": "ab" * 32,
                         "tool": "pkm-convert 0.1.0", "created": "2024-06-11T12:00:00Z",
                         "operation": "convert"}, sort_keys=True)

PKM_DTYPE = {
    np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
}


def little_endian_hex(array):
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8).tobytes().hex()
    return array.astype(array.dtype.newbyteorder("<")).tobytes().hex()


def tensor_entry(name, pkm_dtype, shape, data):
    """Expected tensor: its bytes in hex when small, else their SHA-256."""
    raw = bytes.fromhex(little_endian_hex(data))
    entry = {"name": name, "dtype": pkm_dtype, "shape": list(shape)}
    if len(raw) <= 512:
        entry["hex"] = raw.hex()
    else:
        entry["sha256"] = hashlib.sha256(raw).hexdigest()
    return entry


def attr_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8")
    return str(value)


def expected_of(path):
    """Tensors in reader order with dtype/shape/bytes, and metadata, read back with h5py."""
    tensors = []

    def walk(group, prefix):
        for name in group:  # name order (no creation-order tracking in h5py's default)
            item = group[name]
            key = prefix + [name]
            if isinstance(item, h5py.Group):
                walk(item, key)
                continue
            data = item[()]
            declared = item.attrs.get("dtype")
            declared = attr_text(declared) if declared is not None else None
            dtype = np.dtype(item.dtype).newbyteorder("=")
            if declared == "bfloat16":
                pkm = "BF16"
            elif declared == "bool":
                pkm = "BOOL"
            else:
                pkm = PKM_DTYPE[dtype]
            tensors.append(tensor_entry(".".join(key), pkm, item.shape, data))

    metadata = {}
    provenance = None
    with h5py.File(path, "r") as f:
        walk(f, [])
        for name, value in f.attrs.items():
            if name == "pkm_provenance":
                provenance = json.loads(attr_text(value))
                continue
            if isinstance(value, np.ndarray) and value.size != 1:
                continue
            if isinstance(value, (np.floating, float)):
                # Swift prints the shortest round-tripping decimal of the stored width.
                metadata[name] = str(np.float32(value)) if np.asarray(value).dtype.itemsize <= 4 else repr(float(value))
            elif isinstance(value, (np.bool_, bool)):
                metadata[name] = "true" if value else "false"
            else:
                metadata[name] = attr_text(value)
    return {"tensors": tensors, "metadata": metadata, "provenance": provenance}


def fixed_string_attr(obj, name, text, pad):
    """A fixed-length ASCII string attribute with the given padding (h5py.h5t.STR_NULLPAD/NULLTERM/SPACEPAD)."""
    raw = text.encode("ascii")
    size = len(raw) + (1 if pad == h5py.h5t.STR_NULLTERM else 3)
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(pad)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    attr = h5py.h5a.create(obj.id, name.encode(), tid, space)
    filler = b" " if pad == h5py.h5t.STR_SPACEPAD else b"\0"
    attr.write(np.array(raw + filler * (size - len(raw)), dtype="S%d" % size))


def values(rng, shape, dtype):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(size=shape).astype(dtype)


F16_SPECIAL_BITS = [0x0000, 0x8000, 0x0001, 0x03FF, 0x8001, 0x0400, 0x3C00, 0xC000, 0x7BFF, 0xFBFF,
                    0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE01, 0x7DFF, 0x3555, 0x1234]
F32_SPECIAL_BITS = [0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x7F800000, 0xFF800000,
                    0x7FC00000, 0x7F800001, 0xFFC12345, 0x3F800000, 0xC0490FDB, 0x7F7FFFFF]
F64_SPECIAL_BITS = [0x0000000000000000, 0x8000000000000000, 0x0000000000000001, 0x7FF0000000000000,
                    0x7FF8000000000001, 0xFFF4000000000000, 0x3FF0000000000000, 0x400921FB54442D18]
BF16_BITS = [0x0000, 0x8000, 0x0001, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x4049, 0x0080, 0xC2F7]


def gen_flat(path, rng):
    with h5py.File(path, "w") as f:
        f["bert.embeddings.word_embeddings.weight"] = values(rng, (5, 4), np.float32)
        f["bert.embeddings.LayerNorm.weight"] = values(rng, (4,), np.float64)
        f["bert.embeddings.position_ids"] = np.arange(6, dtype=np.int64).reshape(1, 6)
        f["encoder.i32"] = values(rng, (2, 3), np.int32)
        f["encoder.i16"] = values(rng, (3,), np.int16)
        f["encoder.i8"] = values(rng, (2, 2), np.int8)
        f["encoder.u8"] = values(rng, (3,), np.uint8)
        f["encoder.mask"] = np.array([[True, False, True], [False, False, True]])
        f["encoder.layer.0.memory.query_proj.query_mlps.1.num_batches_tracked"] = np.int64(1234567890123)
        f["encoder.empty"] = np.zeros((0, 3), dtype=np.float32)
        f["encoder.rank4"] = values(rng, (2, 1, 3, 2), np.float32)
        f["encoder.bool_bytes"] = np.array([0, 1, 1, 0], dtype=np.uint8)
        f["encoder.bool_bytes"].attrs["dtype"] = "bool"
        f.attrs["config"] = CONFIG
        f.attrs["generator"] = "gen_hdf5_fixtures.py flat"
        f.attrs["atol"] = np.float64(1e-4)
        f.attrs["rtol"] = np.float32(2.5e-3)
        f.attrs["count"] = np.int64(-17)
        f.attrs["flag"] = np.bool_(True)
        f.attrs["shape_list"] = np.array([1, 2, 3])  # not a one-element value: not metadata


def gen_nested(path, rng):
    with h5py.File(path, "w") as f:
        f["bert/embeddings/word_embeddings/weight"] = values(rng, (6, 4), np.float32)
        f["bert/encoder/layer/0/attention/self/query/weight"] = values(rng, (4, 4), np.float32)
        f["bert/encoder/layer/0/attention/self/query/bias"] = values(rng, (4,), np.float32)
        f["bert/encoder/layer/0/memory/keys"] = values(rng, (1, 2, 4, 2), np.float32)
        f["bert/encoder/layer/0/memory/query_proj/query_mlps/1/num_batches_tracked"] = np.int64(7)
        f["bert/encoder/layer/10/output.dense.weight"] = values(rng, (2, 2), np.float32)  # dots inside a group
        f["cls.predictions.bias"] = values(rng, (6,), np.float32)
        f["outputs/memory/0/indices"] = rng.integers(0, 16, size=(1, 2, 1, 2)).astype(np.int64)
        f.attrs["config"] = CONFIG


def gen_chunked(path, rng):
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip_shuffle.f32", data=values(rng, (10, 7), np.float32), chunks=(4, 3),
                         compression="gzip", compression_opts=6, shuffle=True)
        f.create_dataset("gzip.i64", data=np.arange(-16, 17, dtype=np.int64) * 1_000_003, chunks=(8,),
                         compression="gzip", compression_opts=9)
        f.create_dataset("shuffle.f16", data=values(rng, (20,), np.float16), chunks=(6,), shuffle=True)
        f.create_dataset("gzip.bool", data=values(rng, (17,), np.bool_), chunks=(5,), compression="gzip")
        f.create_dataset("fletcher.f64", data=values(rng, (3, 3), np.float64), chunks=(2, 2), fletcher32=True)
        f.create_dataset("gzip.zeros", data=np.zeros((64, 64), dtype=np.float32), chunks=(64, 64), compression="gzip",
                         compression_opts=9)


def gen_float16(path, rng):
    bits = np.array(F16_SPECIAL_BITS, dtype=np.uint16)
    with h5py.File(path, "w") as f:
        f["special"] = bits.view(np.float16)
        f["matrix"] = values(rng, (3, 4), np.float16)
        f["scalar"] = np.float16(-0.0)
        f["special_be"] = bits.view(np.float16).astype(">f2")


def gen_bfloat16(path, rng):
    bits = np.array(BF16_BITS, dtype=np.uint16)
    with h5py.File(path, "w") as f:
        f["weight.vlen_attr"] = bits.reshape(3, 4)
        f["weight.vlen_attr"].attrs["dtype"] = "bfloat16"
        f["weight.fixed_attr"] = bits[:6]
        f["weight.fixed_attr"].attrs["dtype"] = np.bytes_(b"bfloat16")
        f["weight.int16_storage"] = bits[:4].view(np.int16)
        f["weight.int16_storage"].attrs["dtype"] = "bfloat16"
        f["weight.be"] = bits[:5].astype(">u2")
        f["weight.be"].attrs["dtype"] = "bfloat16"


def gen_bigendian(path, rng):
    with h5py.File(path, "w") as f:
        f["be.f32"] = np.array(F32_SPECIAL_BITS, dtype=np.uint32).view(np.float32).astype(">f4")
        f["be.f64"] = np.array(F64_SPECIAL_BITS, dtype=np.uint64).view(np.float64).astype(">f8")
        f["be.i64"] = values(rng, (2, 3), np.int64).astype(">i8")
        f["be.i32"] = values(rng, (5,), np.int32).astype(">i4")
        f["be.i16"] = values(rng, (5,), np.int16).astype(">i2")
        f["be.f16"] = np.array(F16_SPECIAL_BITS, dtype=np.uint16).view(np.float16).astype(">f2")
        f.create_dataset("be.chunked_gzip_f32", data=values(rng, (9, 5), np.float32).astype(">f4"), chunks=(4, 5),
                         compression="gzip", shuffle=True)


def gen_strings(path, rng):
    with h5py.File(path, "w") as f:
        f["tensor"] = np.arange(3, dtype=np.float32)
        f.attrs["config"] = CONFIG                                   # variable-length UTF-8 (h5py str)
        f.attrs["pkm_provenance"] = PROVENANCE
        f.attrs["unicode"] = "µ-ß ✓"
        f.attrs["vlen_bytes"] = np.array(b"ascii bytes", dtype=h5py.string_dtype("ascii"))
        f.attrs["fixed_nullpad"] = np.bytes_(b"padded with nulls")    # h5py: fixed-length NULLPAD
        fixed_string_attr(f, "fixed_nullterm", "terminated", h5py.h5t.STR_NULLTERM)
        fixed_string_attr(f, "fixed_spacepad", "spaced", h5py.h5t.STR_SPACEPAD)
        f.attrs["empty"] = ""
        f.attrs["string_array"] = np.array([b"a", b"b"])             # not one element: not metadata


def gen_userblock(path, rng):
    """A 512-byte user block before the superblock (the signature is then at byte 512)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f["weight"] = values(rng, (2, 2), np.float32)
    with open(path, "r+b") as handle:
        handle.write(b"user block text, not HDF5".ljust(512, b"\0"))


def gen_unallocated(directory):
    """Datasets that declare far more data than the file stores (never written)."""
    made = {}
    path = os.path.join(directory, "unallocated_contiguous.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("never.written", shape=(1 << 28,), dtype=np.float32)  # 1 GiB declared, nothing stored
    made["unallocated_contiguous.h5"] = path
    path = os.path.join(directory, "unallocated_chunked.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("never.written", shape=(1 << 16, 1 << 16), dtype=np.float32, chunks=(64, 64),
                         compression="gzip")  # 16 GiB declared, no chunk stored
    made["unallocated_chunked.h5"] = path
    return made


def gen_unsupported(directory):
    """One small file per unsupported dataset kind; each also holds one good dataset."""
    made = {}

    def make(name, build):
        path = os.path.join(directory, name)
        with h5py.File(path, "w") as f:
            f["good"] = np.arange(3, dtype=np.float32)
            build(f)
        made[name] = path

    make("unsupported_compound.h5", lambda f: f.create_dataset(
        "bad.compound", data=np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")])))
    make("unsupported_string.h5", lambda f: f.create_dataset(
        "bad.strings", data=np.array(["x", "yz"], dtype=object), dtype=h5py.string_dtype()))
    make("unsupported_vlen.h5", lambda f: f.create_dataset(
        "bad.vlen", data=np.array([np.arange(2), np.arange(3)], dtype=object), dtype=h5py.vlen_dtype(np.int32)))
    make("unsupported_uint32.h5", lambda f: f.create_dataset("bad.uint32", data=np.arange(4, dtype=np.uint32)))
    make("unsupported_uint16.h5", lambda f: f.create_dataset("bad.uint16", data=np.arange(4, dtype=np.uint16)))

    def soft(f):
        f["real"] = np.arange(2, dtype=np.float32)
        f["alias"] = h5py.SoftLink("/real")

    make("soft_link.h5", soft)
    return made


def zstd_compress(raw, level=3):
    name = ctypes.util.find_library("zstd")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    capacity = lib.ZSTD_compressBound(len(raw))
    out = ctypes.create_string_buffer(capacity)
    size = lib.ZSTD_compress(out, capacity, raw, len(raw), level)
    if lib.ZSTD_isError(size):
        return None
    return out.raw[:size]


def gen_zstd(path, rng):
    """Filter 32015 (zstd plugin): whole chunks compressed as zstd frames, written directly.

    The filter is marked optional so HDF5 creates the dataset without the plugin installed.
    Returns False when libzstd is not available to this script.
    """
    data = values(rng, (4, 8), np.float32)
    with h5py.File(path, "w") as f:
        f["plain"] = np.arange(3, dtype=np.float32)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((2, 8))
        dcpl.set_obj_track_times(False)  # reproducible bytes
        dcpl.set_filter(32015, h5py.h5z.FLAG_OPTIONAL, (3,))
        space = h5py.h5s.create_simple(data.shape)
        dataset = h5py.h5d.create(f.id, b"zstd.f32", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        for row in range(0, 4, 2):
            frame = zstd_compress(np.ascontiguousarray(data[row:row + 2]).tobytes())
            if frame is None:
                return False
            dataset.write_direct_chunk((row, 0), frame, 0)
    return {"tensors": [tensor_entry("plain", "F32", [3], np.arange(3, dtype=np.float32)),
                        tensor_entry("zstd.f32", "F32", [4, 8], data)],
            "metadata": {}, "provenance": None}


# The sample HDF5Tests writes (testWritesSampleForH5py); its values must match that test.
def check_swift(path):
    problems = []

    def expect(condition, message):
        if not condition:
            problems.append(message)

    with h5py.File(path, "r") as f:
        expect(list(f.keys()) == ["weight.f32", "half", "brain", "mask", "ids", "i32", "i16", "i8", "u8",
                                  "f64", "scalar", "empty", "outputs"], "root order %r" % list(f.keys()))
        w = f["weight.f32"]
        expect(w.dtype == np.float32 and w.shape == (2, 3), "weight.f32 %s %s" % (w.dtype, w.shape))
        expect(np.array_equal(w[()], (np.arange(6, dtype=np.float32) * 0.5 - 1).reshape(2, 3)), "weight.f32 values")
        h = f["half"]
        expect(h.dtype == np.float16, "half comes back as %s, not float16" % h.dtype)
        expect(h[()].view(np.uint16).tolist() == [0x3C00, 0xC100, 0x8000, 0x7BFF, 0x0001, 0x7E01],
               "half bits %r" % h[()].view(np.uint16).tolist())
        b = f["brain"]
        expect(b.dtype == np.uint16 and attr_text(b.attrs["dtype"]) == "bfloat16", "brain %s %r" % (b.dtype, dict(b.attrs)))
        expect(b[()].tolist() == [0x3F80, 0xC000, 0x7FC0], "brain bits")
        m = f["mask"]
        expect(m.dtype == np.bool_, "mask comes back as %s, not bool" % m.dtype)
        expect(m[()].tolist() == [[True, False], [False, True]], "mask values")
        expect(f["ids"].dtype == np.int64 and f["ids"][()].tolist() == [-1, 0, 1 << 40], "ids")
        expect(f["i32"].dtype == np.int32 and f["i32"][()].tolist() == [-7, 7], "i32")
        expect(f["i16"].dtype == np.int16 and f["i16"][()].tolist() == [-300, 300], "i16")
        expect(f["i8"].dtype == np.int8 and f["i8"][()].tolist() == [-128, 127], "i8")
        expect(f["u8"].dtype == np.uint8 and f["u8"][()].tolist() == [0, 255], "u8")
        expect(f["f64"].dtype == np.float64 and f["f64"][()].tolist() == [np.pi, -1e300], "f64")
        expect(f["scalar"].shape == () and f["scalar"][()] == 42, "scalar")
        expect(f["empty"].shape == (0, 4) and f["empty"].dtype == np.float32, "empty")
        expect(f["outputs/memory/1/indices"][()].tolist() == [[3, 5]], "nested dataset")
        expect(attr_text(f.attrs["config"]) == '{"model_type": "bert"}', "config attribute %r" % f.attrs.get("config"))
        expect(attr_text(f.attrs["note"]) == "µ unicode ✓", "note attribute %r" % f.attrs.get("note"))
        provenance = json.loads(attr_text(f.attrs["pkm_provenance"]))
        expect(provenance.get("tool") == "pkm-convert 0.1.0" and provenance.get("source_file") == "sample.safetensors",
               "provenance %r" % provenance)
    return problems


def format_expected(expected):
    """JSON with one line per tensor, so diffs stay readable."""
    lines = ["{"]
    for file_index, name in enumerate(sorted(expected)):
        entry = expected[name]
        lines.append("  %s: {" % json.dumps(name))
        lines.append("    \"metadata\": %s," % json.dumps(entry["metadata"], sort_keys=True, ensure_ascii=False))
        if "first_chunks" in entry:
            lines.append("    \"first_chunks\": %s," % json.dumps(entry["first_chunks"], sort_keys=True))
        lines.append("    \"provenance\": %s," % json.dumps(entry["provenance"], sort_keys=True))
        lines.append("    \"tensors\": [")
        tensors = [json.dumps(tensor, sort_keys=True) for tensor in entry["tensors"]]
        lines.append(",\n".join("      " + tensor for tensor in tensors))
        lines.append("    ]")
        lines.append("  }" + ("," if file_index + 1 < len(expected) else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(expected))
    return text


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-swift", metavar="FILE", help="check a file written by the Swift HDF5Writer sample test")
    args = parser.parse_args()
    if args.check_swift:
        problems = check_swift(args.check_swift)
        for problem in problems:
            print("FAIL:", problem)
        print("h5py check of %s: %s" % (args.check_swift, "ok" if not problems else "%d problems" % len(problems)))
        return 1 if problems else 0

    os.makedirs(OUT, exist_ok=True)
    versions = {"h5py": h5py.__version__, "numpy": np.__version__, "hdf5": h5py.version.hdf5_version,
                "python": sys.version.split()[0]}
    expected = {}
    manifest = {"generator": GENERATOR, "seed": SEED, "versions": versions, "files": {}}
    fixtures = [
        ("flat.h5", gen_flat, "root datasets named by dotted keys, every dtype, scalar, empty, rank 4; root attributes"),
        ("nested.h5", gen_nested, "nested groups split on dots, plus a root dotted dataset; config attribute"),
        ("chunked.h5", gen_chunked, "chunked datasets: gzip+shuffle, gzip, shuffle, fletcher32, edge chunks"),
        ("float16.h5", gen_float16, "float16 special values (NaN payloads, -0, subnormals, inf), big-endian half"),
        ("bfloat16.h5", gen_bfloat16, "bfloat16 as uint16/int16 with dtype attribute (variable and fixed length), big-endian"),
        ("bigendian.h5", gen_bigendian, "big-endian float32/64 (NaN payloads), ints, half, chunked gzip"),
        ("strings.h5", gen_strings, "string attributes: variable-length UTF-8 and ASCII, fixed NULLPAD/NULLTERM/SPACEPAD, provenance"),
        ("userblock.h5", gen_userblock, "a 512-byte user block before the superblock"),
    ]
    for index, (name, build, description) in enumerate(fixtures):
        path = os.path.join(OUT, name)
        build(path, np.random.default_rng(SEED + index))
        expected[name] = expected_of(path)
        manifest["files"][name] = {"generator": GENERATOR, "seed": SEED + index, "description": description}

    for name, path in gen_unsupported(OUT).items():
        manifest["files"][name] = {"generator": GENERATOR, "seed": None,
                                   "description": "one dataset HDF5Reader must reject, named in the error"}

    # Where chunk bytes live, so tests can damage data (not metadata: libhdf5 1.10.8 itself can
    # crash on arbitrarily corrupted metadata) and expect a FormatError.
    with h5py.File(os.path.join(OUT, "chunked.h5"), "r") as f:
        chunks = {}
        for name in ("gzip_shuffle.f32", "fletcher.f64"):
            info = f[name].id.get_chunk_info(0)
            chunks[name] = {"offset": int(info.byte_offset), "size": int(info.size)}
        expected["chunked.h5"]["first_chunks"] = chunks

    for name, path in gen_unallocated(OUT).items():
        manifest["files"][name] = {"generator": GENERATOR, "seed": None,
                                   "description": "a dataset declaring far more bytes than the file stores; HDF5Reader must refuse it before allocating"}

    zstd_path = os.path.join(OUT, "zstd.h5")
    zstd_expected = gen_zstd(zstd_path, np.random.default_rng(SEED + 100))
    if zstd_expected:
        expected["zstd.h5"] = zstd_expected
        manifest["files"]["zstd.h5"] = {"generator": GENERATOR, "seed": SEED + 100, "description":
                                        "zstd filter 32015 (optional) chunks written directly; read only where the plugin exists"}
    elif os.path.exists(zstd_path):
        os.remove(zstd_path)

    swift_path = os.path.join(OUT, "swift_written.h5")
    if os.path.exists(swift_path):
        problems = check_swift(swift_path)
        if problems:
            print("swift_written.h5 fails the h5py check:", *problems, sep="\n  ")
            return 1
        manifest["files"]["swift_written.h5"] = {
            "generator": "Tests/PKMFormatsTests/HDF5Tests.swift (PKM_HDF5_SAMPLE_OUT=... swift test --filter HDF5)",
            "seed": None, "versions": {"libhdf5": "1.10.8"},
            "description": "written by HDF5Writer; checked with h5py by this script (float16, bool enum, bfloat16 attribute, nested groups, attributes)",
            "h5py_check": "ok with h5py %s / HDF5 %s" % (h5py.__version__, h5py.version.hdf5_version)}

    with open(os.path.join(OUT, "expected.json"), "w") as handle:
        handle.write(format_expected(expected))
    for name, entry in manifest["files"].items():
        entry.setdefault("versions", versions)
        entry["sha256"] = sha256(os.path.join(OUT, name))
        entry["bytes"] = os.path.getsize(os.path.join(OUT, name))
    manifest["files"]["expected.json"] = {"generator": GENERATOR, "seed": None,
                                          "description": "expected tensors (hex bytes), metadata, provenance per fixture",
                                          "sha256": sha256(os.path.join(OUT, "expected.json"))}
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.write("\n")
    print("wrote %d files to %s" % (len(manifest["files"]), OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
