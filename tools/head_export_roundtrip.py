#!/usr/bin/env python3
"""Round trip of a task head through `pkm-convert graft` and `export` into transformers (not needed by `swift test`).

    swift build && python3 tools/head_export_roundtrip.py [--binary .build/debug/pkm-convert] [--keep DIR]

For a memory-free BertForMaskedLM and a BertForSequenceClassification made by transformers (`save_pretrained`,
seeded random weights, tied MLM decoder not saved):
1. `pkm-convert graft` a residual memory into it (pkmz), then `export` the pkmz to a model folder;
2. the folder's config.json names the source's class in `architectures`;
3. that class, with the memories of config["pkm"] attached (tools/pkm_reference.py), loads the folder's
   model.safetensors with no missing keys but transformers' tied copies and no unexpected keys;
4. every head tensor is bit-identical to the source model's;
5. its logits equal those of `pkm-convert run -o` on the grafted checkpoint (max |Δ| <= 1e-5).
Exits non-zero on any failure.
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
import transformers
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_head_fixtures as heads  # noqa: E402
from export_roundtrip import read_h5, sh  # noqa: E402  (one pkm-convert runner and HDF5 reader for both round trips)
import gen_model_fixtures as models  # noqa: E402
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5
CLASSES = [("BertForMaskedLM", None), ("BertForSequenceClassification", ["no", "yes", "maybe"])]


def base_model(cls, labels, seed):
    case = dict(family="bert", cls=cls, labels=labels) if labels else dict(family="bert", cls=cls)
    model = getattr(transformers, cls)(heads.hf_config(case))
    heads.randomise(model, torch.Generator().manual_seed(seed))
    model.tie_weights()
    model.eval()
    return model, case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "debug", "pkm-convert"))
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.keep or tempfile.mkdtemp(prefix="pkm-heads-")
    os.makedirs(work, exist_ok=True)
    failures = []
    for index, (cls, labels) in enumerate(CLASSES):
        model, case = base_model(cls, labels, 20250200 + index)
        base = os.path.join(work, f"{cls}-base")
        model.save_pretrained(base, safe_serialization=True)
        inputs = models.make_inputs({"pad_token_id": 0, "vocab_size": model.config.vocab_size, "model_type": "bert",
                                     "type_vocab_size": 2}, torch.Generator().manual_seed(5))
        reference = os.path.join(work, f"{cls}-inputs.h5")
        with h5py.File(reference, "w") as f:
            f.create_dataset("inputs/input_ids", data=inputs[0].numpy())
            f.create_dataset("inputs/attention_mask", data=inputs[1].numpy())
            f.create_dataset("inputs/token_type_ids", data=inputs[2].numpy())
        grafted = os.path.join(work, f"{cls}-grafted.pkmz")
        sh(args.binary, "graft", os.path.join(base, "model.safetensors"), "-o", grafted, "--layers", "1", "--mode", "residual",
           "--n-keys", "16", "--heads", "2", "--knn", "4", "--k-dim", "16", "--seed", "7")
        exported = os.path.join(work, f"{cls}-export")
        sh(args.binary, "export", grafted, "-o", exported)
        run = os.path.join(work, f"{cls}-run.h5")
        sh(args.binary, "run", grafted, "--inputs", reference, "-o", run)

        with open(os.path.join(exported, "config.json")) as f:
            config = json.load(f)
        if config.get("architectures") != [cls]:
            failures.append(f"{cls}: exported architectures {config.get('architectures')}")
            continue
        loaded = getattr(transformers, config["architectures"][0])(heads.hf_config(case))
        pkm = config["pkm"]
        for layer, mode in zip(pkm["layers"], pkm["modes"]):
            memory = ref.ProductKeyMemory(config["hidden_size"], pkm["n_keys"], pkm["heads"], pkm["knn"], pkm["k_dim"], pkm["v_dim"],
                                          pkm["query_batchnorm"], pkm["query_bias"], pkm["bn_eps"])
            ref.attach_memory(loaded.base_model, layer, mode, memory)
        missing, unexpected = loaded.load_state_dict(load_file(os.path.join(exported, "model.safetensors")), strict=False)
        loaded.tie_weights()
        loaded.eval()
        tied = {k for k in missing if k.startswith("cls.predictions.decoder.")}
        if set(missing) != tied or unexpected:
            failures.append(f"{cls}: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
        source = model.state_dict()
        for name, tensor in loaded.state_dict().items():
            if name.startswith(("cls.", "classifier.")) and not torch.equal(tensor, source[name]):
                failures.append(f"{cls}: head tensor {name} changed")
        with torch.no_grad():
            logits = loaded(input_ids=inputs[0], attention_mask=inputs[1], token_type_ids=inputs[2]).logits.numpy()
        swift = read_h5(run)["outputs/logits"]
        diff = float(np.abs(logits - swift).max())
        print(f"{cls}: graft -> export -> {config['architectures'][0]}: missing {sorted(missing)}, logits max |Δ| vs pkm-convert run {diff:.2e}")
        if diff > TOLERANCE:
            failures.append(f"{cls}: logits differ by {diff}")
    if failures:
        print("\n".join(failures))
        raise SystemExit(1)
    print("ok")


if __name__ == "__main__":
    main()
