#!/usr/bin/env python3
"""Round trip of `pkm-convert export` through the real libraries (not needed by `swift test`).

    swift build && python3 tools/export_roundtrip.py [--binary .build/debug/pkm-convert] [--keep DIR]

1. graft a lucidrains-compatible memory (per-half LayerNorm queries, no query bias) into the memory-free
   fixtures/models/bert_base_plain with pkm-convert, export it with --export-memory-layout lucidrains --export-memory-attribute pkm,
   load the folder's model.safetensors with load_state_dict(strict=True) into an HF BertModel carrying
   lucidrains product_key_memory.PKM modules under `pkm` (residual beside the FFN), and compare its outputs
   with `pkm-convert run -o` on the grafted checkpoint;
2. the same for a peer fixture imported from lucidrains names with pre_layernorm/norm_output (after/replace modes);
3. export the plain BERT (unsharded, and sharded with --max-shard-size) and load it with
   BertModel.from_pretrained: no missing or unexpected keys, outputs equal to the fixture's reference.
Prints max |Δ| per output and exits non-zero when any exceeds 1e-5.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
from product_key_memory import PKM
from safetensors.torch import load_file
from transformers import BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_reference as peers  # noqa: E402
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5


def sh(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pkm-convert {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def read_h5(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@torch.no_grad()
def outputs(model, data):
    ids = torch.from_numpy(data["inputs/input_ids"])
    mask = torch.from_numpy(data["inputs/attention_mask"])
    types = torch.from_numpy(data["inputs/token_type_ids"]) if "inputs/token_type_ids" in data else None
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    result = {"outputs/last_hidden_state": out.last_hidden_state.numpy()}
    if out.pooler_output is not None:
        result["outputs/pooler_output"] = out.pooler_output.numpy()
    for n, h in enumerate(out.hidden_states):
        result[f"outputs/hidden_states/{n}"] = h.numpy()
    return result


def compare(label, actual, expected):
    worst = 0.0
    for name in sorted(actual):
        if name not in expected:
            continue
        diff = float(np.max(np.abs(actual[name] - expected[name])))
        worst = max(worst, diff)
        print(f"  {label}: {name}: max |Δ| {diff:.3g}")
    return worst


def pkm_bert(folder, attribute, pkm_kwargs):
    """BertModel from the exported config (pkm removed) with lucidrains PKM modules under `attribute`."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    pkm = config.pop("pkm")
    model = ref.build_model(config)
    d = config["hidden_size"]
    for layer, mode in zip(pkm["layers"], pkm["modes"]):
        module = PKM(d, heads=pkm["heads"], num_keys=pkm["n_keys"], topk=pkm["knn"], dim_head=pkm["k_dim"] // 2,
                     pre_layernorm=pkm["input_norm"], norm_output=pkm["output_norm"],
                     non_competitive_gates=pkm["score_activation"] == "relu", **pkm_kwargs)
        peers.attach(model, layer, mode, module, attribute)
    model.eval()
    state = load_file(os.path.join(folder, "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/debug/pkm-convert"))
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.keep or tempfile.mkdtemp(prefix="pkm-export-")
    os.makedirs(work, exist_ok=True)
    base = os.path.join(ROOT, "fixtures/models/bert_base_plain")
    reference = os.path.join(base, "reference.h5")
    worst = {}

    # 1. graft -> export lucidrains -> strict load into PKM modules -> compare with `pkm-convert run -o`.
    grafted = os.path.join(work, "grafted.pkmz")
    sh(args.binary, "graft", os.path.join(base, "model.safetensors"), "-o", grafted, "--layers", "1", "--mode", "residual",
       "--n-keys", "16", "--heads", "2", "--knn", "4", "--k-dim", "16", "--query-norm", "layernorm", "--no-query-bias", "--seed", "7")
    lucid = os.path.join(work, "grafted-lucidrains")
    sh(args.binary, "export", grafted, "-o", lucid, "--export-memory-layout", "lucidrains", "--export-memory-attribute", "pkm")
    run = os.path.join(work, "run.h5")
    sh(args.binary, "run", grafted, "--inputs", reference, "-o", run)
    print("graft -> export --export-memory-layout lucidrains -> PKM.load_state_dict(strict=True) vs pkm-convert run -o:")
    worst["grafted lucidrains"] = compare("grafted", outputs(pkm_bert(lucid, "pkm", {}), read_h5(reference)), read_h5(run))

    # 2. a lucidrains fixture (pre_layernorm, norm_output; replace and after) imported, exported back, loaded strictly.
    fixture = os.path.join(ROOT, "fixtures/peers/bert_lucidrains_norms")
    back = os.path.join(work, "norms-lucidrains")
    sh(args.binary, "export", os.path.join(fixture, "model.safetensors"), "-o", back, "--export-memory-layout", "lucidrains",
       "--export-memory-attribute", "memory")
    print("lucidrains fixture -> export --export-memory-layout lucidrains -> strict load vs its PyTorch reference:")
    worst["lucidrains fixture"] = compare("norms", outputs(pkm_bert(back, "memory", {}), read_h5(os.path.join(fixture, "reference.h5"))),
                                          read_h5(os.path.join(fixture, "reference.h5")))

    # 3. plain BERT: export (one file and sharded) -> BertModel.from_pretrained, no missing/unexpected keys.
    for label, extra in [("plain", []), ("plain sharded", ["--max-shard-size", "40KB"])]:
        folder = os.path.join(work, label.replace(" ", "-"))
        sh(args.binary, "export", os.path.join(base, "model.safetensors"), "-o", folder, *extra)
        model, info = BertModel.from_pretrained(folder, output_loading_info=True, attn_implementation="eager")
        model.eval()
        problems = {k: v for k, v in info.items() if v}
        files = sorted(os.listdir(folder))
        print(f"{label} export -> BertModel.from_pretrained: files {files}; loading info problems: {problems or 'none'}")
        if problems:
            raise SystemExit(f"{label}: transformers reports {problems}")
        worst[label] = compare(label, outputs(model, read_h5(reference)), read_h5(reference))
        if extra:
            # The shard split must be huggingface_hub's for the same tensors in the model's state-dict order.
            from huggingface_hub import split_torch_state_dict_into_shards
            split = split_torch_state_dict_into_shards(model.state_dict(), max_shard_size=extra[1])
            with open(os.path.join(folder, "model.safetensors.index.json")) as f:
                index = json.load(f)
            same = index["weight_map"] == split.tensor_to_filename and index["metadata"]["total_size"] == split.metadata["total_size"]
            print(f"  index.json weight_map and total_size equal huggingface_hub's split: {same}")
            if not same:
                raise SystemExit("shard split differs from huggingface_hub")

    print("worst max |Δ| per round trip:", {k: f"{v:.3g}" for k, v in worst.items()})
    failed = [k for k, v in worst.items() if not v <= TOLERANCE]
    if failed:
        raise SystemExit(f"beyond {TOLERANCE}: {failed}")
    print("OK")


if __name__ == "__main__":
    main()
