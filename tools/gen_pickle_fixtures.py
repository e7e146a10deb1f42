#!/usr/bin/env python3
"""Generate the committed PyTorch pickle checkpoint fixtures in fixtures/pickle/ with real
`torch.save`, plus damaged and malicious variants for the reader's regression tests.

    python3 tools/gen_pickle_fixtures.py     # (re)write fixtures/pickle/*, expected.json, MANIFEST.json

Good fixtures (the Swift TorchCheckpointReader must read every tensor bit for bit):
  flat_dtypes.pt      zip container (torch >= 1.6), flat OrderedDict state dict: F32 F16 BF16 F64 I64
                      I32 I16 I8 U8 BOOL, special float bits, a rank-0 and a zero-size tensor.
  flat_proto4.pt      the same dict saved with pickle_protocol=4 (FRAME, SHORT_BINUNICODE, MEMOIZE,
                      STACK_GLOBAL).
  legacy.pt           the same dict in the legacy (pre-1.6) stream (_use_new_zipfile_serialization=False).
  bigendian.pt        flat_dtypes.pt rewritten: `byteorder` = "big" and every storage byte-swapped.
  deflated.pt         flat_dtypes.pt re-zipped with every entry DEFLATED.
  shared.pt           tied weights (two names, one tensor), a slice view with a storage offset and its base.
  views.pt            non-contiguous views saved as views: a transpose, every other column, a permuted 3-D.
  lightning.ckpt      {"epoch", "global_step", "state_dict": nn.Module.state_dict() (with _metadata),
                      "hyper_parameters"} as PyTorch Lightning saves it; includes an nn.Parameter.
  model_state_dict.pt {"model_state_dict": ..., "epoch": 1, "loss": 0.5}.
  xlm.pth             XLM-style {"model": sd with `memories.0_in.*` names, "params": {...}, "dico_*"}.

Refused fixtures (the reader must throw the FormatError named in expected.json):
  malicious.pt        a real torch.save of an object whose __reduce__ returns
                      (os.system, ("touch /tmp/pkm-pwned",)): the pickle calls posix.system.
  bad_*.pt            damaged zip containers (see DAMAGED below).

expected.json: per good fixture, tensors in the reader's order (name, dtype, shape, little-endian
bytes in hex), groups of names sharing a storage, the extras' keys and selected metadata; per
refused fixture, the FormatError case and substrings its message must contain.
"""
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch

SEED = 20240710
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "pickle")
GENERATOR = "tools/gen_pickle_fixtures.py"

DTYPE_CODE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}


def le_hex(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
    else:
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
    return raw.hex()


def describe(sd):
    return [{"name": k, "dtype": DTYPE_CODE[v.dtype], "shape": list(v.shape), "hex": le_hex(v)} for k, v in sd.items()]


def flat_dict(g):
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 4, generator=g)
    sd["f16"] = torch.tensor([1.0, -0.0, 65504.0, 6e-8, float("inf")], dtype=torch.float16)
    sd["bf16"] = torch.randn(2, 3, generator=g).to(torch.bfloat16)
    sd["f64"] = torch.tensor([[1.0 / 3.0, -2.5], [float("nan"), 1e-310]], dtype=torch.float64)
    sd["i64"] = torch.tensor([0, -1, 2**62, -(2**63)], dtype=torch.int64)
    sd["i32"] = torch.tensor([7, -8, 2**31 - 1], dtype=torch.int32)
    sd["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, -1, 0, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 1, 128, 255, 3, 4], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True, True, False])
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    return sd


def save(obj, name, **kwargs):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kwargs)
    return path


def rewrite_zip(src, dst, replace=None, drop=(), compression=None, transform=None):
    """Copies a torch zip entry by entry; `replace` maps an entry's suffix to new bytes,
    `transform(name, bytes)` may rewrite any entry, `drop` lists suffixes to leave out."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            suffix = info.filename.split("/", 1)[1]
            if suffix in drop:
                continue
            if suffix in replace:
                data = replace[suffix]
            if transform:
                data = transform(suffix, data)
            out = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            out.compress_type = compression if compression is not None else zipfile.ZIP_STORED
            zout.writestr(out, data)


def entry(path, suffix):
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.split("/", 1)[1] == suffix:
                return z.read(name)
    raise KeyError(suffix)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    g = torch.Generator().manual_seed(SEED)
    expected = {"good": {}, "refused": {}}
    descriptions = {}

    # Flat state dicts in every container.
    flat = flat_dict(g)
    save(flat, "flat_dtypes.pt")
    save(flat, "flat_proto4.pt", pickle_protocol=4)
    save(flat, "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ["flat_dtypes.pt", "flat_proto4.pt", "legacy.pt"]:
        expected["good"][name] = {"tensors": describe(flat), "shared": [], "extras": []}
    descriptions["flat_dtypes.pt"] = "zip container, flat OrderedDict: every dtype, special floats, rank 0, zero-size"
    descriptions["flat_proto4.pt"] = "flat_dtypes' dict saved with pickle_protocol=4"
    descriptions["legacy.pt"] = "flat_dtypes' dict in the legacy (pre-1.6) stream"

    # Big-endian: byteorder entry says big and every storage is byte-swapped.
    sizes = {}
    for key, value in flat.items():
        sizes[key] = value.element_size()
    with zipfile.ZipFile(os.path.join(OUT, "flat_dtypes.pt")) as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
    # Map storage key -> element size from the pickle's persistent ids (key i is the i-th tensor here).
    storage_sizes = {str(i): v.element_size() for i, v in enumerate(flat.values())}

    def swap(suffix, data):
        if suffix == "byteorder":
            return b"big"
        if suffix.startswith("data/"):
            size = storage_sizes[suffix[5:]]
            if size > 1:
                return np.frombuffer(data, dtype=np.dtype(f"<u{size}")).byteswap().tobytes()
        return data
    rewrite_zip(os.path.join(OUT, "flat_dtypes.pt"), os.path.join(OUT, "bigendian.pt"), transform=swap)
    check = torch.load(os.path.join(OUT, "bigendian.pt"), weights_only=True)
    for k in flat:
        assert le_hex(check[k]) == le_hex(flat[k]), k
    expected["good"]["bigendian.pt"] = {"tensors": describe(flat), "shared": [], "extras": []}
    descriptions["bigendian.pt"] = "flat_dtypes.pt with byteorder 'big' and byte-swapped storages (torch.load reads it back equal)"

    rewrite_zip(os.path.join(OUT, "flat_dtypes.pt"), os.path.join(OUT, "deflated.pt"), compression=zipfile.ZIP_DEFLATED)
    expected["good"]["deflated.pt"] = {"tensors": describe(flat), "shared": [], "extras": []}
    descriptions["deflated.pt"] = "flat_dtypes.pt re-zipped with every entry deflated"

    # Shared storages.
    emb = torch.randn(6, 4, generator=g)
    base = torch.arange(10, dtype=torch.float32)
    shared = collections.OrderedDict()
    shared["embeddings.weight"] = emb
    shared["decoder.weight"] = emb
    shared["base"] = base
    shared["slice"] = base[2:5]
    save(shared, "shared.pt")
    expected["good"]["shared.pt"] = {"tensors": describe(shared),
                                     "shared": [["embeddings.weight", "decoder.weight"], ["base", "slice"]],
                                     "extras": []}
    descriptions["shared.pt"] = "tied weights (one tensor, two names) and a slice view with storage offset 2 of a saved base"

    # Non-contiguous views.
    x = torch.randn(3, 5, generator=g)
    y = torch.randn(2, 3, 4, generator=g)
    views = collections.OrderedDict()
    views["transposed"] = x.t()
    views["every_other_column"] = x[:, ::2]
    views["permuted"] = y.permute(2, 0, 1)
    views["offset_strided"] = y[1, :, 1::2]
    assert not views["transposed"].is_contiguous() and not views["every_other_column"].is_contiguous()
    save(views, "views.pt")
    expected["good"]["views.pt"] = {"tensors": describe(views),
                                    "shared": [["transposed", "every_other_column"], ["permuted", "offset_strided"]],
                                    "extras": []}
    descriptions["views.pt"] = "non-contiguous views saved as views (transpose, ::2 columns, permute, offset + stride)"

    # Lightning-style checkpoint holding a real module state dict (with _metadata) and a Parameter.
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    module_sd = module.state_dict()
    lightning = {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
                 "state_dict": module_sd, "hyper_parameters": {"lr": 0.1, "name": "tiny"},
                 "gate": torch.nn.Parameter(torch.ones(2))}
    save(lightning, "lightning.ckpt")
    expected["good"]["lightning.ckpt"] = {"tensors": describe(module_sd), "shared": [],
                                          "extras": ["epoch", "gate", "global_step", "hyper_parameters", "pytorch-lightning_version"],
                                          "state_dict_key": "state_dict"}
    descriptions["lightning.ckpt"] = "Lightning-style {'state_dict': Module.state_dict() with _metadata, epoch, ...} plus an nn.Parameter extra"

    inner = collections.OrderedDict([("layer.weight", torch.randn(2, 2, generator=g)), ("layer.bias", torch.zeros(2))])
    save({"model_state_dict": inner, "epoch": 1, "loss": 0.5}, "model_state_dict.pt")
    expected["good"]["model_state_dict.pt"] = {"tensors": describe(inner), "shared": [], "extras": ["epoch", "loss"],
                                               "state_dict_key": "model_state_dict"}
    descriptions["model_state_dict.pt"] = "{'model_state_dict': ..., 'epoch': 1, 'loss': 0.5}"

    # XLM-style checkpoint.
    xlm_sd = collections.OrderedDict()
    xlm_sd["position_embeddings.weight"] = torch.randn(4, 16, generator=g)
    xlm_sd["embeddings.weight"] = torch.randn(5, 16, generator=g)
    xlm_sd["memories.0_in.keys"] = torch.randn(2, 2, 8, 4, generator=g)
    xlm_sd["memories.0_in.query_proj.query_mlps.0.weight"] = torch.randn(16, 16, generator=g)
    xlm_sd["memories.0_in.query_proj.query_mlps.0.bias"] = torch.randn(16, generator=g)
    xlm_sd["memories.0_in.values.weight"] = torch.randn(64, 16, generator=g)
    params = {"emb_dim": 16, "n_layers": 2, "n_heads": 2, "dropout": 0.1, "use_memory": True,
              "mem_enc_positions": [(0, "in")], "mem_dec_positions": [], "mem_n_keys": 8, "mem_heads": 2,
              "mem_knn": 4, "mem_k_dim": 8, "mem_v_dim": -1, "mem_query_batchnorm": False,
              "lang2id": {"en": 0}, "langs": ["en"], "dump_path": "/checkpoint/xlm", "mem_values": None}
    xlm = {"model": xlm_sd, "params": params, "dico_id2word": {0: "<s>", 1: "</s>"},
           "dico_word2id": {"<s>": 0, "</s>": 1}, "dico_counts": {"<s>": 0, "</s>": 0}}
    save(xlm, "xlm.pth")
    expected["good"]["xlm.pth"] = {"tensors": describe(xlm_sd), "shared": [],
                                   "extras": ["dico_counts", "dico_id2word", "dico_word2id", "params"],
                                   "state_dict_key": "model",
                                   "xlm_params": {"emb_dim": 16, "n_layers": 2, "mem_n_keys": 8, "mem_heads": 2,
                                                  "mem_knn": 4, "mem_k_dim": 8, "mem_v_dim": -1,
                                                  "mem_enc_positions": [[0, "in"]], "use_memory": True,
                                                  "dropout": 0.1, "langs": ["en"], "mem_values": None}}
    descriptions["xlm.pth"] = "XLM-style {'model': sd with memories.0_in.* names, 'params': {...}, 'dico_*': ...}"

    # A real malicious checkpoint: torch.save pickles the __reduce__ result, a call of os.system.
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/pkm-pwned",))
    save({"weight": torch.ones(2), "payload": Evil()}, "malicious.pt")
    system_global = f"{os.system.__module__}.system"
    assert system_global.encode().split(b".")[0] in entry(os.path.join(OUT, "malicious.pt"), "data.pkl")
    expected["refused"]["malicious.pt"] = {"error": "refusedGlobal", "contains": [system_global, "malicious.pt", "nothing was executed"]}
    descriptions["malicious.pt"] = "torch.save of an object whose __reduce__ calls os.system('touch /tmp/pkm-pwned')"

    # Damaged containers, derived from small good files.
    small = collections.OrderedDict([("w", torch.arange(6, dtype=torch.float32).reshape(2, 3))])
    small_path = save(small, "small.pt")
    pkl = entry(small_path, "data.pkl")
    expected["good"]["small.pt"] = {"tensors": describe(small), "shared": [], "extras": []}
    descriptions["small.pt"] = "one 2x3 float32 tensor (the damaged variants derive from it)"
    damaged = {}

    def variant(name, error, contains, description, **kwargs):
        rewrite_zip(small_path, os.path.join(OUT, name), **kwargs)
        expected["refused"][name] = {"error": error, "contains": contains}
        descriptions[name] = description
        damaged[name] = True

    variant("bad_missing_storage.pt", "invalidTensor", ["'w'", "data/0"], "data/0 entry removed", drop=("data/0",))
    variant("bad_short_storage.pt", "invalidTensor", ["'w'"], "data/0 holds 8 bytes for a 6-element storage",
            replace={"data/0": b"\0" * 8})
    # Size (2, 3) -> (2, 30): the view runs past its storage.
    assert pkl.count(b"K\x02K\x03\x86") == 1
    variant("bad_extent.pt", "invalidTensor", ["'w'", "storage"], "size (2, 30) on a 6-element storage",
            replace={"data.pkl": pkl.replace(b"K\x02K\x03\x86", b"K\x02K\x1e\x86")})
    # Absurd sizes: (2**40, 2**40) with a 0 stride, so the extent check alone would pass.
    huge = b"J" + (2**20).to_bytes(4, "little")
    variant("bad_absurd_size.pt", "limitExceeded", ["total bytes"], "size (2**20, 2**20) with strides (0, 0): 4 TiB of float32 from 24 bytes",
            replace={"data.pkl": pkl.replace(b"K\x02K\x03\x86", huge + huge + b"\x86").replace(b"K\x03K\x01\x86", b"K\x00K\x00\x86")})
    variant("bad_negative_stride.pt", "invalidTensor", ["'w'", "stride"], "stride (3, -1)",
            replace={"data.pkl": pkl.replace(b"K\x03K\x01\x86", b"K\x03J\xff\xff\xff\xff\x86")})
    variant("bad_protocol1.pt", "pickle", ["protocol 1 is not supported", "re-save with torch.save"],
            "data.pkl replaced by a protocol-1 pickle", replace={"data.pkl": pickle.dumps({"w": 1}, protocol=1)})
    variant("bad_opcode.pt", "pickle", ["0x69"], "data.pkl with an INST opcode ('i', protocol 0/1 only) after PROTO 2",
            replace={"data.pkl": b"\x80\x02ibuiltins\nobject\n."})
    bomb = b"\x80\x02" + b"]" * 20000 + b"a" * 19999 + b"."
    variant("bad_recursion_bomb.pt", "pickle", ["nest"], "data.pkl: 20,000 nested EMPTY_LIST + APPEND",
            replace={"data.pkl": bomb})
    evil_pkl = b"\x80\x02cbuiltins\neval\nX\x0e\x00\x00\x00print('pwned')\x85R."
    variant("bad_builtins_eval.pt", "refusedGlobal", ["builtins.eval", "nothing was executed"],
            "data.pkl calling builtins.eval", replace={"data.pkl": evil_pkl})
    persid = b"\x80\x02X\x03\x00\x00\x00abcQ."
    variant("bad_persistent_id.pt", "pickle", ["persistent"], "a persistent id that is a string, not the storage tuple",
            replace={"data.pkl": persid})
    variant("bad_truncated_pickle.pt", "pickle", ["data.pkl"], "data.pkl cut in half",
            replace={"data.pkl": pkl[: len(pkl) // 2]})
    raw = open(os.path.join(OUT, "flat_dtypes.pt"), "rb").read()
    open(os.path.join(OUT, "bad_truncated_zip.pt"), "wb").write(raw[: len(raw) // 2])
    expected["refused"]["bad_truncated_zip.pt"] = {"error": "any", "contains": ["bad_truncated_zip.pt"]}
    descriptions["bad_truncated_zip.pt"] = "the first half of flat_dtypes.pt (no central directory)"

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    descriptions["expected.json"] = "expected tensors (hex little-endian bytes, reader order), shared groups, extras; expected errors"

    files = {}
    total = 0
    for name in sorted(os.listdir(OUT)):
        if name == "MANIFEST.json":
            continue
        data = open(os.path.join(OUT, name), "rb").read()
        total += len(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "description": descriptions.get(name, ""), "generator": GENERATOR, "seed": SEED}
    manifest = {"generator": GENERATOR, "seed": SEED, "torch": torch.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0], "total_bytes": total, "files": files}
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {len(files)} files, {total} bytes, into {OUT}")


if __name__ == "__main__":
    main()
