#!/usr/bin/env python3
"""Generate the committed safetensors fixtures in fixtures/safetensors/ with the Python
`safetensors` package, and check that files written by the Swift SafetensorsWriter read back
in it.

    python3 tools/gen_safetensors_fixtures.py              # (re)write fixtures, expected.json, MANIFEST.json
    python3 tools/gen_safetensors_fixtures.py --check-swift FILE
                                                           # check a file written by SafetensorsWriter

Fixtures:
  all_dtypes.safetensors   every dtype pkm-convert reads (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL),
                           special float bit patterns (NaN payloads, -0, subnormals, inf), a rank-0
                           tensor, two zero-size tensors, a rank-4 seeded tensor, and __metadata__
                           with config, pkm_provenance and a string needing JSON escapes.
                           Written by safetensors.torch.save_file (which orders tensors by dtype
                           alignment, then name).
  no_metadata.safetensors  written by safetensors.numpy.save_file without metadata (no __metadata__ key).
  sharded/                 model.safetensors.index.json plus two shards, as transformers writes them
                           (index: {"metadata": {"total_size": N}, "weight_map": {...}}).

expected.json lists, per fixture, the tensors in the order the Swift readers must report them
(by data offset; zero-size tensors at one offset in header order; shards in file-name order),
each with dtype, shape and little-endian bytes in hex, plus the expected metadata (without
pkm_provenance) and provenance.

fixtures/safetensors/swift_written.safetensors is written by the Swift test suite
(`PKM_SAFETENSORS_SAMPLE_OUT=$PWD/fixtures/safetensors/swift_written.safetensors swift test --filter Safetensors`):
all_dtypes' tensors, metadata and provenance, re-written by SafetensorsWriter in all_dtypes'
file order. When present, this script reads it with safetensors (safe_open, framework "pt" and
"numpy" loads), checks every tensor bit for bit and the metadata, and records the check in
MANIFEST.json.
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np
import safetensors
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as numpy_save_file
from safetensors.torch import save_file as torch_save_file

SEED = 20240701
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "safetensors")
GENERATOR = "tools/gen_safetensors_fixtures.py"

CONFIG = json.dumps({"model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1,
                     "pkm": {"layers": [0], "modes": ["residual"], "n_keys": 4, "heads": 1}},
                    sort_keys=True)
PROVENANCE = json.dumps({"source_file": "model.h5", "source_sha256": "cd" * 32,
                         "tool": "pkm-convert 0.1.0", "created": "2024-07-01T12:00:00Z",
                         "operation": "convert"}, sort_keys=True)
NOTE = "µ ünïcode \"quoted\" back\\slash\ttab\nnewline"

TORCH_DTYPE = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8", torch.bool: "BOOL"}


def bits(values, dtype):
    """A numpy array of the given unsigned bit patterns, viewed as dtype (little-endian)."""
    width = np.dtype(dtype).itemsize
    unsigned = {2: "<u2", 4: "<u4", 8: "<u8"}[width]
    return np.array(values, dtype=unsigned).view(np.dtype(dtype).newbyteorder("<"))


def all_dtypes_tensors(rng):
    f64 = bits([0x7FF8000000000001, 0x8000000000000000, 0x0000000000000001, 0x7FF0000000000000,
                0xFFF0000000000000, 0x400921FB54442D18], "f8").reshape(2, 3)
    f32 = bits([0x7FC00001, 0x7F800001, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000,
                0x3F800000, 0xC0490FDB], "f4").reshape(2, 2, 2)
    f16 = bits([0x3C00, 0xC100, 0x8000, 0x7BFF, 0x0001, 0x7E01, 0x7C00], "f2")
    bf16 = torch.from_numpy(np.array([0x3F80, 0xC000, 0x7FC1, 0x8000, 0x0001], dtype=np.uint16).view(np.int16)).view(torch.bfloat16)
    tensors = {
        "f64": torch.from_numpy(f64.astype("<f8")),
        "f32": torch.from_numpy(f32.astype("<f4")),
        "f16": torch.from_numpy(f16.astype("<f2")),
        "bf16": bf16,
        "i64": torch.tensor([-(1 << 63), (1 << 63) - 1, -1, 0], dtype=torch.int64),
        "i32": torch.tensor([[-(1 << 31), (1 << 31) - 1], [-7, 7]], dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767, -300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, -1], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 128], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]], dtype=torch.bool),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty.f32": torch.zeros((0, 4), dtype=torch.float32),
        "empty.i64": torch.zeros((3, 0), dtype=torch.int64),
        "rank4": torch.from_numpy(rng.standard_normal((1, 2, 3, 4)).astype("<f4")),
        "bert.encoder.layer.0.memory.keys": torch.from_numpy(rng.uniform(-1, 1, (1, 2, 4, 2)).astype("<f4")),
    }
    metadata = {"format": "pt", "config": CONFIG, "pkm_provenance": PROVENANCE, "note": NOTE}
    return tensors, metadata


def shard_tensors(rng):
    first = {
        "bert.embeddings.word_embeddings.weight": torch.from_numpy(rng.standard_normal((8, 4)).astype("<f4")),
        "bert.embeddings.position_ids": torch.arange(6, dtype=torch.int64).reshape(1, 6),
        "bert.embeddings.LayerNorm.weight": torch.ones(4, dtype=torch.float16),
    }
    second = {
        "bert.encoder.layer.0.memory.values.weight": torch.from_numpy(rng.standard_normal((16, 4)).astype("<f4")).to(torch.bfloat16),
        "bert.encoder.layer.0.memory.keys": torch.from_numpy(rng.uniform(-1, 1, (1, 2, 4, 2)).astype("<f4")),
        "bert.encoder.layer.0.memory.query_proj.query_mlps.1.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
    }
    return first, second


def save_stable(save, tensors, path, metadata=None):
    """Writes with `save` (a safetensors save_file), keeping an existing file with the same content.

    safetensors serialises __metadata__ from a Rust HashMap, so its key order (and the file's
    bytes) change from run to run; keeping an equivalent existing file keeps the committed
    fixtures and their sha256 stable when this script is re-run.
    """
    temporary = path + ".new"
    save(tensors, temporary, metadata=metadata)
    if os.path.exists(path) and expected_of(path) == expected_of(temporary) and read_header(path)[0] == read_header(temporary)[0]:
        os.remove(temporary)
    else:
        os.chmod(temporary, 0o644)  # the Rust writer creates files readable by their owner only
        os.replace(temporary, path)


def read_header(path):
    """The raw header of a safetensors file, as an ordered dict."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length).decode("utf-8"))
        data_start = 8 + length
    return header, data_start


def expected_of(path):
    """Tensors in the order the Swift reader reports them, with bytes; metadata and provenance."""
    header, data_start = read_header(path)
    metadata = dict(header.pop("__metadata__", None) or {})
    provenance = json.loads(metadata.pop("pkm_provenance")) if "pkm_provenance" in metadata else None
    entries = sorted(enumerate(header.items()), key=lambda item: (item[1][1]["data_offsets"][0], item[1][1]["data_offsets"][1], item[0]))
    with open(path, "rb") as handle:
        raw = handle.read()
    tensors = []
    for _, (name, entry) in entries:
        begin, end = entry["data_offsets"]
        tensors.append({"name": name, "dtype": entry["dtype"], "shape": entry["shape"],
                        "hex": raw[data_start + begin:data_start + end].hex()})
    # Cross-check with the safetensors package itself.
    with safe_open(path, framework="pt") as handle:
        assert sorted(handle.keys()) == sorted(t["name"] for t in tensors)
        for tensor in tensors:
            value = handle.get_tensor(tensor["name"])
            assert TORCH_DTYPE[value.dtype] == tensor["dtype"] and list(value.shape) == tensor["shape"], tensor["name"]
            assert tensor_bytes(value) == bytes.fromhex(tensor["hex"]), tensor["name"]
    return {"metadata": metadata, "provenance": provenance, "tensors": tensors}


def tensor_bytes(value):
    value = value.contiguous()
    if value.dtype == torch.bool:
        return value.to(torch.uint8).numpy().tobytes()
    if value.dtype == torch.bfloat16:
        return value.view(torch.int16).numpy().astype("<i2").tobytes()
    return value.numpy().astype(value.numpy().dtype.newbyteorder("<")).tobytes()


def check_swift(path, reference_path):
    """Problems found reading a SafetensorsWriter file with the safetensors package (empty = ok)."""
    problems = []
    reference = expected_of(reference_path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
        keys = list(handle.keys())
        if sorted(keys) != sorted(t["name"] for t in reference["tensors"]):
            problems.append("tensor names %r" % keys)
        for tensor in reference["tensors"]:
            if tensor["name"] not in keys:
                continue
            value = handle.get_tensor(tensor["name"])
            if TORCH_DTYPE[value.dtype] != tensor["dtype"] or list(value.shape) != tensor["shape"]:
                problems.append("%s is %s %s" % (tensor["name"], value.dtype, list(value.shape)))
            elif tensor_bytes(value) != bytes.fromhex(tensor["hex"]):
                problems.append("%s bytes differ" % tensor["name"])
    expected_metadata = dict(reference["metadata"])
    if metadata.get("pkm_provenance") is None or json.loads(metadata.pop("pkm_provenance")) != reference["provenance"]:
        problems.append("pkm_provenance missing or different")
    if metadata != expected_metadata:
        problems.append("metadata %r != %r" % (metadata, expected_metadata))
    # The raw layout: header padded with spaces to 8 bytes, tensors in the writer's order.
    header, data_start = read_header(path)
    if data_start % 8 != 0:
        problems.append("data starts at byte %d, not 8-byte aligned" % data_start)
    order = [name for name in header if name != "__metadata__"]
    if order != [t["name"] for t in reference["tensors"]]:
        problems.append("header order %r" % order)
    # The numpy binding reads everything but bfloat16.
    try:
        from safetensors.numpy import load_file
        load_file(path)
    except Exception as error:  # noqa: BLE001 - reported, not hidden
        if "bf16" not in str(error).lower() and "bfloat16" not in str(error).lower():
            problems.append("safetensors.numpy.load_file: %s" % error)
    return problems


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def format_expected(expected):
    """JSON with one line per tensor, so diffs stay readable."""
    lines = ["{"]
    for file_index, name in enumerate(sorted(expected)):
        entry = expected[name]
        lines.append("  %s: {" % json.dumps(name))
        lines.append("    \"metadata\": %s," % json.dumps(entry["metadata"], sort_keys=True, ensure_ascii=False))
        lines.append("    \"provenance\": %s," % json.dumps(entry["provenance"], sort_keys=True))
        lines.append("    \"tensors\": [")
        lines.append(",\n".join("      " + json.dumps(tensor, sort_keys=True) for tensor in entry["tensors"]))
        lines.append("    ]")
        lines.append("  }" + ("," if file_index + 1 < len(expected) else ""))
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(expected))
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-swift", metavar="FILE", help="check a file written by the Swift SafetensorsWriter sample test")
    args = parser.parse_args()
    reference_path = os.path.join(OUT, "all_dtypes.safetensors")
    if args.check_swift:
        problems = check_swift(args.check_swift, reference_path)
        for problem in problems:
            print("FAIL:", problem)
        print("safetensors check of %s: %s" % (args.check_swift, "ok" if not problems else "%d problems" % len(problems)))
        return 1 if problems else 0

    os.makedirs(os.path.join(OUT, "sharded"), exist_ok=True)
    torch.manual_seed(SEED)
    versions = {"safetensors": safetensors.__version__, "torch": torch.__version__.split("+")[0],
                "numpy": np.__version__, "python": sys.version.split()[0]}
    manifest = {"generator": GENERATOR, "seed": SEED, "versions": versions, "files": {}}
    expected = {}

    tensors, metadata = all_dtypes_tensors(np.random.default_rng(SEED))
    save_stable(torch_save_file, tensors, reference_path, metadata=metadata)
    expected["all_dtypes.safetensors"] = expected_of(reference_path)
    manifest["files"]["all_dtypes.safetensors"] = {
        "seed": SEED, "description": "every dtype, special float bits, rank 0, zero-size, rank 4; metadata with config, pkm_provenance, escapes (safetensors.torch.save_file)"}

    path = os.path.join(OUT, "no_metadata.safetensors")
    rng = np.random.default_rng(SEED + 1)
    save_stable(numpy_save_file, {"weight": rng.standard_normal((3, 2)).astype("<f4"), "bias": np.array([1, -2], dtype="<i8")}, path)
    expected["no_metadata.safetensors"] = expected_of(path)
    manifest["files"]["no_metadata.safetensors"] = {"seed": SEED + 1, "description": "no __metadata__ key (safetensors.numpy.save_file)"}

    first, second = shard_tensors(np.random.default_rng(SEED + 2))
    shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shard_metadata = [{"format": "pt", "config": CONFIG}, {"format": "pt", "shard_note": "second"}]
    weight_map = {}
    total = 0
    sharded_tensors = []
    for shard_name, shard, shard_meta in zip(shard_names, [first, second], shard_metadata):
        shard_path = os.path.join(OUT, "sharded", shard_name)
        save_stable(torch_save_file, shard, shard_path, metadata=shard_meta)
        for name, value in shard.items():
            weight_map[name] = shard_name
            total += value.numel() * value.element_size()
        sharded_tensors += expected_of(shard_path)["tensors"]
        manifest["files"]["sharded/" + shard_name] = {"seed": SEED + 2, "description": "shard of the sharded fixture"}
    index_path = os.path.join(OUT, "sharded", "model.safetensors.index.json")
    with open(index_path, "w") as handle:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, handle, indent=2)
        handle.write("\n")
    manifest["files"]["sharded/model.safetensors.index.json"] = {"seed": None, "description": "index in transformers' layout (metadata.total_size, weight_map)"}
    expected["sharded"] = {"metadata": {"format": "pt", "config": CONFIG, "shard_note": "second"},
                           "provenance": None, "tensors": sharded_tensors}

    expected_path = os.path.join(OUT, "expected.json")
    with open(expected_path, "w") as handle:
        handle.write(format_expected(expected))
    manifest["files"]["expected.json"] = {"seed": None, "description": "expected tensors (hex bytes, reader order), metadata, provenance per fixture"}

    swift_path = os.path.join(OUT, "swift_written.safetensors")
    if os.path.exists(swift_path):
        problems = check_swift(swift_path, reference_path)
        if problems:
            print("swift_written.safetensors fails the safetensors check:", *problems, sep="\n  ")
            return 1
        manifest["files"]["swift_written.safetensors"] = {
            "generator": "Tests/PKMFormatsTests/SafetensorsTests.swift (PKM_SAFETENSORS_SAMPLE_OUT=... swift test --filter Safetensors)",
            "seed": None,
            "description": "all_dtypes re-written by SafetensorsWriter; read back by this script with the safetensors package",
            "safetensors_check": "ok with safetensors %s (safe_open framework=pt, every tensor bit-exact, metadata)" % safetensors.__version__}

    for name, entry in manifest["files"].items():
        full = os.path.join(OUT, name)
        entry.setdefault("generator", GENERATOR)
        entry["bytes"] = os.path.getsize(full)
        entry["sha256"] = sha256(full)
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    print("wrote", len(manifest["files"]), "files to", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
