#!/usr/bin/env python3
"""Write the issue-18 regression inputs (PyTorch-style checkpoints with crafted geometry and zip
records) into Tests/PKMFormatsTests/Regressions/Inputs/. Needs only the Python standard library:
the pickles are written by pickle itself with stand-in `torch` modules (the GLOBAL names and the
persistent ids are exactly torch.save's), the zips by the hand-written zip writer below, so that
each directory field can be set to what the attack needs.

    python3 tools/gen_issue18_regressions.py

Every file is small (< 64 KiB); the large ones (a deflate bomb) are generated inside the tests.
"""
import collections, os, pickle, struct, sys, types, zlib

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "PKMFormatsTests", "Regressions", "Inputs")

# Stand-in torch modules, so pickle writes torch's own GLOBAL names.
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils; torch._utils = utils
class FloatStorage: pass
FloatStorage.__module__ = "torch"; torch.FloatStorage = FloatStorage
def _rebuild_tensor_v2(*args): pass
_rebuild_tensor_v2.__module__ = "torch._utils"; utils._rebuild_tensor_v2 = _rebuild_tensor_v2

class Tensor:
    def __init__(self, key, numel, size, stride, offset=0):
        self.key, self.numel, self.size, self.stride, self.offset = key, numel, size, stride, offset
    def __reduce__(self):
        return (_rebuild_tensor_v2, (Storage(self.key, self.numel), self.offset, tuple(self.size), tuple(self.stride),
                                     False, collections.OrderedDict()))
class Storage:
    def __init__(self, key, numel): self.key, self.numel = key, numel

class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage): return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None

def data_pkl(obj):
    import io
    buffer = io.BytesIO(); TorchPickler(buffer, protocol=2).dump(obj); return buffer.getvalue()

def local_header(name, data, method=0, crc=None, csize=None, usize=None):
    crc = zlib.crc32(data) if crc is None else crc
    csize = len(data) if csize is None else csize; usize = len(data) if usize is None else usize
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, csize & 0xFFFFFFFF, usize & 0xFFFFFFFF, len(name), 0) + name

def build_zip(entries, *, cd_records=None, eocd_count=None, eocd_cd_size=None, zip64=None):
    """entries: [(name, data, method, stored_bytes, declared_usize)]; returns bytes."""
    body = b""; records = []
    for name, data, method, stored, usize in entries:
        name = name.encode(); offset = len(body)
        crc = zlib.crc32(data)
        body += local_header(name, stored, method, crc, len(stored), usize) + stored
        records.append((name, method, crc, len(stored), usize, offset))
    if cd_records: records = cd_records(records)
    cd = b""
    for name, method, crc, csize, usize, offset in records:
        extra = b""
        if usize > 0xFFFFFFFF or csize > 0xFFFFFFFF:
            extra = struct.pack("<HHQQ", 1, 16, usize, csize); usize32 = csize32 = 0xFFFFFFFF
        else:
            usize32, csize32 = usize, csize
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, csize32, usize32,
                          len(name), len(extra), 0, 0, 0, 0, offset) + name + extra
    cd_offset = len(body); count = len(records)
    tail = b""
    if zip64 is not None:
        record_offset = len(body) + len(cd)
        z_count = zip64.get("count", count)
        tail += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, z_count, z_count, len(cd), cd_offset)
        tail += struct.pack("<IIQI", 0x07064B50, 0, zip64.get("locator", record_offset), 1)
        eocd_count = 0xFFFF if eocd_count is None else eocd_count
    n = count if eocd_count is None else eocd_count
    size = len(cd) if eocd_cd_size is None else eocd_cd_size
    tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, size, cd_offset if zip64 is None else 0xFFFFFFFF, 0)
    return body + cd + tail

def checkpoint(state, storages, **zip_options):
    entries = [("archive/data.pkl", data_pkl(state), 0, data_pkl(state), len(data_pkl(state)))]
    entries += [("archive/byteorder", b"little", 0, b"little", 6)]
    for key, data in storages.items():
        entries.append(("archive/data/" + key, data, 0, data, len(data)))
    entries.append(("archive/version", b"3\n", 0, b"3\n", 2))
    return entries

def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f: f.write(data)
    print(f"{name}: {len(data)} bytes")

one_float = struct.pack("<f", 1.0)
# 1. Stride-0 views: 64 GiB (the 131072 x 131072 expand), and 64 views of 1 GiB each.
write("pickle-stride0-expand-64gib.pt", build_zip(checkpoint({"w": Tensor("0", 1, [131072, 131072], [0, 0])}, {"0": one_float})))
write("pickle-stride0-64-views-of-1gib.pt", build_zip(checkpoint(
    {f"w{i}": Tensor("0", 1, [1 << 28], [0]) for i in range(64)}, {"0": one_float})))
# 2. Zip entries declaring huge sizes / overlapping directory records.
entries = checkpoint({"w": Tensor("0", 1, [1], [1])}, {"0": one_float})
entries[2] = ("archive/data/0", one_float, 8, one_float, 64 << 30)  # deflated: 4 bytes declaring 64 GiB via ZIP64
write("zip64-entry-declares-64gib.pt", build_zip(entries))
big = bytes(8 << 10)
entries = checkpoint({f"w{i}": Tensor(str(i), 2048, [2048], [1]) for i in range(200)}, {"0": big})
def point_all_at_zero(records):
    zero = next(r for r in records if r[0] == b"archive/data/0")
    return records + [(b"archive/data/%d" % i,) + zero[1:] for i in range(1, 200)]
write("zip-200-records-one-entry.pt", build_zip(entries, cd_records=point_all_at_zero))
# 7. The six corrupt zips torch refuses.
entries = checkpoint({"w": Tensor("0", 1, [1], [1])}, {"0": one_float})
sizes = list(entries); sizes[2] = ("archive/data/0", one_float, 0, one_float, 8)
write("zip-stored-sizes-differ.pt", build_zip(sizes))
write("zip-eocd-count-65535.pt", build_zip(entries, eocd_count=0xFFFF))
write("zip-cd-size-fffffff0.pt", build_zip(entries, eocd_cd_size=0xFFFFFFF0))
write("zip64-count-2e62.pt", build_zip(entries, zip64={"count": 1 << 62}))
write("zip64-locator-past-end.pt", build_zip(entries, zip64={"locator": 1 << 40}))
dotdot = [("archive/data.pkl" if e[0] == "archive/data.pkl" else e[0].replace("archive/", "archive/../../"),) + e[1:] for e in entries]
write("zip-entry-names-dotdot.pt", build_zip(dotdot))
# 6. Tensors under tuple / list values: flattened as pair.0, pair.1, stack.0.0 (read, not dropped).
write("pickle-tensors-in-tuple-and-list.pt", build_zip(checkpoint(
    {"pair": (Tensor("0", 2, [2], [1]), Tensor("0", 2, [1], [1], 1)), "stack": [[Tensor("1", 1, [1], [1])]], "step": 3},
    {"0": struct.pack("<2f", 1.0, 2.0), "1": one_float})))
# 8. A tensor name holding terminal escapes, whose storage is missing (so the name is in the error line).
write("pickle-name-with-escape-sequences.pt", build_zip(checkpoint({"\x1b]0;pwned\x07\x1b[2J\rw": Tensor("9", 1, [1], [1])}, {"0": one_float})))
# 12. Billion laughs: each level a list holding the previous level twice (memo GET), 40 levels.
laughs = bytearray(b"]q\x01")                         # EMPTY_LIST, BINPUT 1 (level 0)
for level in range(1, 41):
    # POP the previous level (it stays in the memo), EMPTY_LIST, BINPUT, MARK, BINGET previous twice, APPENDS
    laughs += b"0]q%c(h%ch%ce" % (level + 1, level, level)
bomb = b"\x80\x02}q\x00X\x01\x00\x00\x00w" + bytes(laughs) + b"s."
write("pickle-billion-laughs.pt", build_zip([("archive/data.pkl", bomb, 0, bomb, len(bomb)), ("archive/version", b"3\n", 0, b"3\n", 2)]))

# 9. HDF5 (needs h5py, tools/requirements-fixtures.txt; default libver and gzip/scale-offset only, so
#    libhdf5 1.10.8 opens the files). Skipped with a note when h5py is not installed.
try:
    import h5py, numpy
except ImportError:
    print("h5py not installed: HDF5 inputs not regenerated")
else:
    # A gzip bomb: 96 MiB of zeros in one dataset, deflated to ~100 KB (the was 4 GiB in 4 MB).
    with h5py.File(os.path.join(OUT, "hdf5-gzip-bomb-96mib.h5"), "w") as f:
        d = f.create_dataset("w", shape=(96 << 18,), dtype="float32", chunks=(1 << 20,), compression="gzip", compression_opts=9)
        for start in range(0, 96 << 18, 1 << 20):
            d[start:start + (1 << 20)] = 0
    print("hdf5-gzip-bomb-96mib.h5:", os.path.getsize(os.path.join(OUT, "hdf5-gzip-bomb-96mib.h5")), "bytes")
    # A valid file using the scale-offset filter (read, not called damaged).
    path = os.path.join("fixtures", "hdf5", "scaleoffset.h5")
    path = os.path.join(os.path.dirname(__file__), "..", path)
    with h5py.File(path, "w") as f:
        f.create_dataset("ints", data=numpy.arange(64, dtype="int32").reshape(8, 8) * 3 + 1000, chunks=(4, 8), scaleoffset=0)
        f.create_dataset("floats", data=(numpy.arange(32, dtype="float32") / 4).reshape(4, 8), chunks=(2, 8), scaleoffset=2)
    print("fixtures/hdf5/scaleoffset.h5:", os.path.getsize(path), "bytes")
