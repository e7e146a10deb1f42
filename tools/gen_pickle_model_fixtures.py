#!/usr/bin/env python3
"""PyTorch-pickle copies of the bert_residual PKM fixture, written by real torch.save.

    python3 tools/gen_pickle_model_fixtures.py

Reads fixtures/models/bert_residual/model.safetensors (made by tools/gen_model_fixtures.py) and writes
  fixtures/models/bert_residual_torch/          pytorch_model.bin (zip container, torch >= 1.6),
                                                legacy.pt (the pre-1.6 container), config.json, reference.h5
  fixtures/models/bert_residual_torch_sharded/  pytorch_model-0000N-of-00002.bin + pytorch_model.bin.index.json
                                                exactly as transformers shards (huggingface_hub's splitter,
                                                weight_map, metadata.total_size), config.json, reference.h5
  fixtures/models/bert_xlm_params/              model.pth: an XLM-style training checkpoint {"model": state_dict,
                                                "params": {...}} of bert_replace_nested's weights with the memory
                                                named memories.0_in.*, and a config.json WITHOUT a pkm object: the
                                                memory's config must come from params (mem_enc_positions, mem_*)
and MANIFEST.json in each (torch version, sha256). reference.h5 is the source fixture's (same weights), so
pkm-convert must verify every pickle against PyTorch's outputs, and convert them bit-exactly to safetensors.
"""
import hashlib
import json
import os
import shutil

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "fixtures/models/bert_residual")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def manifest(folder, description):
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)), "sha256": sha256(os.path.join(folder, name))}
             for name in sorted(os.listdir(folder)) if name != "MANIFEST.json"}
    with open(os.path.join(folder, "MANIFEST.json"), "w") as f:
        json.dump({"generator": "tools/gen_pickle_model_fixtures.py", "torch": torch.__version__,
                   "source": "fixtures/models/bert_residual/model.safetensors", "description": description,
                   "files": files}, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    state = load_file(os.path.join(SOURCE, "model.safetensors"))
    # An OrderedDict of tensors, as model.state_dict() returns it.
    state = dict(sorted(state.items()))

    single = os.path.join(ROOT, "fixtures/models/bert_residual_torch")
    os.makedirs(single, exist_ok=True)
    torch.save(state, os.path.join(single, "pytorch_model.bin"))
    torch.save(state, os.path.join(single, "legacy.pt"), _use_new_zipfile_serialization=False)
    for name in ("config.json", "reference.h5"):
        shutil.copyfile(os.path.join(SOURCE, name), os.path.join(single, name))
    manifest(single, "bert_residual's weights saved by torch.save: zip container (pytorch_model.bin) and legacy container (legacy.pt)")

    sharded = os.path.join(ROOT, "fixtures/models/bert_residual_torch_sharded")
    os.makedirs(sharded, exist_ok=True)
    split = split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin", max_shard_size="100KB")
    assert split.is_sharded and len(split.filename_to_tensors) == 2, split.filename_to_tensors.keys()
    for filename, names in split.filename_to_tensors.items():
        torch.save({name: state[name] for name in names}, os.path.join(sharded, filename))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": split.tensor_to_filename}
    with open(os.path.join(sharded, "pytorch_model.bin.index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    for name in ("config.json", "reference.h5"):
        shutil.copyfile(os.path.join(SOURCE, name), os.path.join(sharded, name))
    manifest(sharded, "bert_residual's weights as an HF sharded PyTorch checkpoint (2 shards + pytorch_model.bin.index.json)")

    xlm = os.path.join(ROOT, "fixtures/models/bert_xlm_params")
    os.makedirs(xlm, exist_ok=True)
    nested = os.path.join(ROOT, "fixtures/models/bert_replace_nested")
    import h5py
    tensors = {}
    with h5py.File(os.path.join(nested, "model.h5"), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tensors[name.replace("/", ".")] = torch.from_numpy(__import__("numpy").asarray(obj[()]))
        f.visititems(visit)
    renamed = {k.replace("bert.encoder.layer.0.memory.", "bert.memories.0_in."): v for k, v in tensors.items()}
    assert any(k.startswith("bert.memories.0_in.") for k in renamed)
    with open(os.path.join(nested, "config.json")) as f:
        config = json.load(f)
    pkm = config.pop("pkm")
    params = {"emb_dim": config["hidden_size"], "n_layers": config["num_hidden_layers"], "n_heads": config["num_attention_heads"],
              "use_memory": True, "mem_enc_positions": [(layer, "in") for layer in pkm["layers"]], "mem_dec_positions": [],
              "mem_n_keys": pkm["n_keys"], "mem_heads": pkm["heads"], "mem_knn": pkm["knn"], "mem_k_dim": pkm["k_dim"],
              "mem_v_dim": -1, "mem_query_batchnorm": pkm["query_batchnorm"], "mem_query_bias": pkm["query_bias"],
              "dropout": 0.1, "dump_path": "/checkpoint/xlm"}
    torch.save({"model": renamed, "params": params, "epoch": 3}, os.path.join(xlm, "model.pth"))
    with open(os.path.join(xlm, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.copyfile(os.path.join(nested, "reference.h5"), os.path.join(xlm, "reference.h5"))
    manifest(xlm, "bert_replace_nested as an XLM training checkpoint: memories.0_in.* names, params with mem_* options, config.json without pkm")

    # Sanity: torch reads back what it wrote.
    back = torch.load(os.path.join(single, "legacy.pt"), weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    print("wrote", single, sharded)


if __name__ == "__main__":
    main()
