#!/usr/bin/env python3
"""Generate the committed PKM-BERT model fixtures in fixtures/models/ (schemas/pkm-checkpoints.md §1–§6).

    python3 tools/gen_model_fixtures.py            # (re)write every case, verify, write MANIFEST.json
    python3 tools/gen_model_fixtures.py --check    # only re-verify the committed files (no writing)

Each case folder holds `config.json` (spec §2), one or more checkpoint files and `reference.h5`
(spec §5): float32 outputs of a HuggingFace `BertModel`/`RobertaModel` (transformers, eager
attention, eval mode) with XLM-style product-key memories attached by tools/pkm_reference.py.
Every parameter and buffer is randomised from a seeded generator (LayerNorm and batchnorm
scales around 1, shifts around 0, positive running variances), so a wrong formula cannot pass.

Checks made before anything is kept (the script fails otherwise):
* the HF model agrees with an independent spec-literal float64 NumPy forward pass
  (embeddings, positions, mask, attention, erf GELU, memory modes, brute-force top-k over all
  N² product keys) and picks the same memory slots;
* the grid top-k equals the brute-force top-k; at least one slot differs between heads;
  no exact ties occurred at a top-k (exact ties and the smallest score gaps go to the manifest);
* each memory changes the model's output (zeroing its values moves last_hidden_state);
* every checkpoint file, read back with h5py/safetensors and mapped to canonical names,
  rebuilds a model whose outputs equal the reference bit for bit.

Files are written with h5py's default libver and gzip(+shuffle) or no compression, so
libhdf5 1.10.8 opens them.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys

import h5py
import numpy as np
import safetensors
import safetensors.numpy
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "models")
GENERATOR = "tools/gen_model_fixtures.py"
COMMAND = "python3 tools/gen_model_fixtures.py"
ATOL, RTOL = 1e-5, 1e-4
MIN_GAP = 1e-5            # smallest accepted score gap at a top-k boundary/order (float32 noise is ~1e-6)
CHUNK_MIN_ELEMENTS = 1024  # in compressed HDF5 files, smaller datasets stay contiguous (mixes both layouts)
BATCH, SEQ = 3, 9
PADDED_ROW, PADDED_LENGTH = 2, 5          # row 2 keeps 5 real tokens, 4 padded

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, max_position_embeddings=40)
PKM = dict(n_keys=16, heads=2, knn=4, k_dim=16, v_dim=32, bn_eps=1e-5)


def bert_config(pkm=None):
    config = dict(model_type="bert", architectures=["BertModel"], type_vocab_size=2,
                  layer_norm_eps=1e-12, pad_token_id=0, **TINY)
    if pkm:
        config["pkm"] = pkm
    return config


def roberta_config(pkm=None):
    config = dict(model_type="roberta", architectures=["RobertaModel"], type_vocab_size=1,
                  layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, **TINY)
    if pkm:
        config["pkm"] = pkm
    return config


def pkm_config(layers, modes, batchnorm=True, bias=True):
    return dict(layers=layers, modes=modes, query_batchnorm=batchnorm, query_bias=bias, **PKM)


# Spec §6 alias names used by the xlm_aliases case: (canonical regex, alias template), first match wins.
XLM_ALIASES = [
    # layer 0 (replace): XLM in-model container `memories.0_in` + notebook `query_proj.0/1`
    (r"^encoder\.layer\.0\.memory\.query_proj\.query_mlps\.([01])\.(.+)$", r"memories.0_in.query_proj.\1.\2"),
    (r"^encoder\.layer\.0\.memory\.(.+)$", r"memories.0_in.\1"),
    # layer 0's norm, replace-mode name
    (r"^encoder\.layer\.0\.output\.LayerNorm\.(weight|bias)$", r"encoder.layer.0.layer_norm.\1"),
    # layer 1 (residual): memory in place, notebook `query_proj.0/1`
    (r"^encoder\.layer\.1\.memory\.query_proj\.query_mlps\.([01])\.(.+)$", r"encoder.layer.1.memory.query_proj.\1.\2"),
    # layer 2 (after): XLM in-model container `memories.2_after` (query_mlps kept, as in XLM's QueryMLP)
    (r"^encoder\.layer\.2\.memory\.(.+)$", r"memories.2_after.\1"),
    # every other LayerNorm: legacy gamma/beta
    (r"^(.*)LayerNorm\.weight$", r"\1LayerNorm.gamma"),
    (r"^(.*)LayerNorm\.bias$", r"\1LayerNorm.beta"),
]
XLM_PREFIX = "module.bert."

CASES = [
    dict(name="bert_residual", seed=20240701, config=bert_config(pkm_config([1], ["residual"])),
         description="BERT, residual memory (ResM) at layer 1, query batchnorm and bias; flat HDF5 "
                     "(gzip+shuffle chunked for tensors of >= 1024 elements, contiguous below; `bert.` prefix, root attribute `config`) and safetensors "
                     "(`bert.` prefix, __metadata__ config)",
         files=[dict(file="model.h5", kind="h5", layout="flat", compression="gzip", shuffle=True,
                     prefix="bert.", config_in_file=True),
                dict(file="model.safetensors", kind="safetensors", prefix="bert.", config_in_file=True)]),
    dict(name="bert_replace_nested", seed=20240702, config=bert_config(pkm_config([0], ["replace"])),
         description="BERT, replace memory at layer 0 (no FFN tensors there), query batchnorm and bias; "
                     "HDF5 in nested groups (/bert/encoder/layer/0/...), uncompressed, no config in the "
                     "file (config.json beside it)",
         files=[dict(file="model.h5", kind="h5", layout="nested", compression=None, shuffle=False,
                     prefix="bert.", config_in_file=False)]),
    dict(name="roberta_after", seed=20240703, config=roberta_config(pkm_config([2], ["after"], batchnorm=False)),
         pooler=False, token_types=False,
         description="RoBERTa (positions from the padding index, pad_token_id 1, no pooler), after memory at "
                     "layer 2, no query batchnorm; safetensors with `roberta.` prefix, int64 "
                     "`roberta.embeddings.position_ids` [1, 40] and unused `lm_head.*` tensors; no "
                     "/inputs/token_type_ids in the reference (zeros)",
         extra="roberta_lm_head",
         files=[dict(file="model.safetensors", kind="safetensors", prefix="roberta.", config_in_file=False)]),
    dict(name="bert_two_memories_f16", seed=20240704,
         config=bert_config(pkm_config([0, 2], ["residual", "replace"], bias=False)), float16=True,
         description="BERT, residual memory at layer 0 and replace memory at layer 2, query batchnorm, no "
                     "query bias; float16 flat HDF5 (gzip+shuffle chunked for >= 1024 elements, `bert.` prefix, root attribute `config`); "
                     "the reference is the float32 model run on the float16-rounded weights",
         files=[dict(file="model.h5", kind="h5", layout="flat", compression="gzip", shuffle=True,
                     prefix="bert.", config_in_file=True, float16=True)]),
    dict(name="xlm_aliases", seed=20240705,
         config=bert_config(pkm_config([0, 1, 2], ["replace", "residual", "after"])),
         description="BERT with memories at layers 0 (replace), 1 (residual), 2 (after), stored under spec §6 "
                     "alias names: `module.bert.` prefix, legacy LayerNorm gamma/beta, XLM in-model "
                     "`memories.0_in.*` / `memories.2_after.*`, XLM notebook `memory.query_proj.0/1.*`, replace "
                     "layer norm `encoder.layer.0.layer_norm.*`; flat HDF5 (gzip without shuffle for >= 1024 elements), no config in the "
                     "file (config.json beside it)",
         aliases=True,
         files=[dict(file="model.h5", kind="h5", layout="flat", compression="gzip", shuffle=False,
                     prefix=XLM_PREFIX, config_in_file=False, aliases=True)]),
    dict(name="bert_exact_ties", seed=20240707, config=bert_config(pkm_config([1], ["residual"])),
         integer_keys=True,
         description="BERT, residual memory at layer 1 whose sub-keys are drawn from 3 integer-valued prototype "
                     "vectors (entries in {-1, 0, 1}), so many sub-keys are identical and PyTorch's top-k meets "
                     "exact ties (within halves and on the grid, at and inside the top-k boundary); safetensors, "
                     "`bert.` prefix, __metadata__ config. Verification must count the different tie orders as "
                     "ties and nothing else",
         files=[dict(file="model.safetensors", kind="safetensors", prefix="bert.", config_in_file=True)]),
    dict(name="bert_base_plain", seed=20240706, config=bert_config(None),
         description="memory-free BERT (no pkm object) with pooler, for grafting tests; safetensors without "
                     "prefix (as `save_pretrained` of a BertModel writes it), __metadata__ {format: pt}",
         files=[dict(file="model.safetensors", kind="safetensors", prefix="", config_in_file=False)]),
]


# ----------------------------------------------------------------------------------------------
# Randomisation


def randomise(model, generator):
    """Overwrites every parameter and buffer of the state dict with seeded random values."""
    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator, dtype=torch.float64).mul(std).add(mean).float()

    def uniform(shape, low, high):
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low).float()

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            if name.endswith("num_batches_tracked"):
                value = torch.tensor(int(torch.randint(100, 100000, (1,), generator=generator)), dtype=torch.int64)
            elif name.endswith("running_var"):
                value = uniform(shape, 0.5, 2.0)
            elif name.endswith("running_mean"):
                value = normal(shape, 0.3)
            elif name.endswith("LayerNorm.weight") or name.endswith("query_mlps.1.weight"):
                value = normal(shape, 0.2, 1.0)
            elif name.endswith("LayerNorm.bias") or name.endswith("query_mlps.1.bias"):
                value = normal(shape, 0.1)
            elif name.endswith("memory.keys"):
                value = normal(shape, 1.0 / math.sqrt(shape[-1]))
            elif name.endswith("memory.values.weight"):
                value = normal(shape, 0.5)
            elif "embeddings" in name and name.endswith(".weight"):
                value = normal(shape, 0.5)
            elif name.endswith(".weight") and len(shape) == 2:          # Linear [out, in]
                value = normal(shape, 1.0 / math.sqrt(shape[1]))
            elif name.endswith(".bias"):
                value = normal(shape, 0.1)
            else:
                raise RuntimeError(f"no randomisation rule for {name}")
            tensor.copy_(value)


def make_inputs(config, generator, token_types=True):
    """B=3, T=9 ids with a CLS-like first token; row 2 padded (mask 0, pad id) after 5 tokens."""
    pad = config["pad_token_id"]
    ids = torch.randint(3, config["vocab_size"], (BATCH, SEQ), generator=generator)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[PADDED_ROW, PADDED_LENGTH:] = 0
    if config["model_type"] == "roberta":
        ids[:, 0] = 0                                   # <s>
        ids[:, SEQ - 1] = 2                             # </s>
        ids[PADDED_ROW, PADDED_LENGTH - 1] = 2
    else:
        ids[:, 0] = 2                                   # CLS-like
    ids[mask == 0] = pad
    types = torch.randint(0, config["type_vocab_size"], (BATCH, SEQ), generator=generator) if token_types else None
    return ids, mask, types


# ----------------------------------------------------------------------------------------------
# Independent spec-literal forward pass (float64 NumPy), used as a cross-check of the HF model


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)


def _spec_memory(sd, prefix, pkm, x):
    """Spec §3 memory with a brute-force top-k over all N² product keys, ties by lower slot."""
    g = lambda name: sd[prefix + name].astype(np.float64)  # noqa: E731
    H, N, K, k = pkm["heads"], pkm["n_keys"], pkm["k_dim"], pkm["knn"]
    flat = x.reshape(-1, x.shape[-1])
    q = flat @ g("query_proj.query_mlps.0.weight").T
    if pkm["query_bias"]:
        q = q + g("query_proj.query_mlps.0.bias")
    if pkm["query_batchnorm"]:
        q = (g("query_proj.query_mlps.1.weight") * (q - g("query_proj.query_mlps.1.running_mean"))
             / np.sqrt(g("query_proj.query_mlps.1.running_var") + pkm["bn_eps"]) + g("query_proj.query_mlps.1.bias"))
    keys, values = g("keys"), g("values.weight")
    out = np.zeros((flat.shape[0], values.shape[1]))
    indices = np.zeros((flat.shape[0], H, k), dtype=np.int64)
    weights = np.zeros((flat.shape[0], H, k))
    for n in range(flat.shape[0]):
        for h in range(H):
            qh = q[n, h * K:(h + 1) * K]
            s1, s2 = keys[h, 0] @ qh[:K // 2], keys[h, 1] @ qh[K // 2:]
            full = (s1[:, None] + s2[None, :]).reshape(-1)           # slot a*N + b
            slots = np.arange(N * N)
            order = np.lexsort((slots, -full))[:k]
            e = np.exp(full[order] - full[order].max())
            w = e / e.sum()
            indices[n, h], weights[n, h] = order, w
            out[n] += (w[:, None] * values[order]).sum(0)
    shape = x.shape[:-1]
    return out.reshape(*shape, -1), indices.reshape(*shape, H, k), weights.reshape(*shape, H, k)


def spec_forward(sd, config, ids, mask, types):
    """Spec §3 literally, float64, from a canonical (prefix-free) state dict of numpy arrays."""
    g = lambda name: sd[name].astype(np.float64)  # noqa: E731
    eps, d, heads = config["layer_norm_eps"], config["hidden_size"], config["num_attention_heads"]
    ids, mask = ids.numpy(), mask.numpy()
    types = np.zeros_like(ids) if types is None else types.numpy()
    B, T = ids.shape
    if config["model_type"] == "roberta":
        pad = config["pad_token_id"]
        not_pad = (ids != pad).astype(np.int64)
        positions = np.cumsum(not_pad, axis=1) * not_pad + pad
    else:
        positions = np.broadcast_to(np.arange(T), (B, T))
    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[positions] \
        + g("embeddings.token_type_embeddings.weight")[types]
    x = _layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    hidden = [x]
    additive = np.where(mask == 0, float(np.finfo(np.float32).min), 0.0)[:, None, None, :]
    pkm = config.get("pkm") or {}
    modes = dict(zip(pkm.get("layers", []), pkm.get("modes", [])))
    traces = {}
    dh = d // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda name, v: v @ g(p + name + ".weight").T + g(p + name + ".bias")  # noqa: E731
        split = lambda v: v.reshape(B, T, heads, dh).transpose(0, 2, 1, 3)      # noqa: E731
        Q, Kt, V = split(lin("attention.self.query", x)), split(lin("attention.self.key", x)), split(lin("attention.self.value", x))
        scores = Q @ Kt.transpose(0, 1, 3, 2) / math.sqrt(dh) + additive
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ V).transpose(0, 2, 1, 3).reshape(B, T, d)
        a = _layer_norm(x + lin("attention.output.dense", context), g(p + "attention.output.LayerNorm.weight"),
                        g(p + "attention.output.LayerNorm.bias"), eps)
        ln_out = lambda v: _layer_norm(v, g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"), eps)  # noqa: E731

        def ffn(v):
            u = lin("intermediate.dense", v)
            return lin("output.dense", 0.5 * u * (1.0 + _erf(u / math.sqrt(2.0))))

        mode = modes.get(i)
        if mode is None:
            y = ln_out(a + ffn(a))
        elif mode == "replace":
            m, idx, w = _spec_memory(sd, p + "memory.", pkm, a)
            y = ln_out(a + m)
        elif mode == "residual":
            m, idx, w = _spec_memory(sd, p + "memory.", pkm, a)
            y = ln_out(a + ffn(a) + m)
        else:
            y = ln_out(a + ffn(a))
            m, idx, w = _spec_memory(sd, p + "memory.", pkm, y)
            y = y + m
        if mode is not None:
            traces[i] = (idx, w)
        x = y
        hidden.append(x)
    pooled = np.tanh(x[:, 0] @ g("pooler.dense.weight").T + g("pooler.dense.bias")) if "pooler.dense.weight" in sd else None
    return hidden, pooled, traces


# ----------------------------------------------------------------------------------------------
# Names: canonical → file names, and back


def to_file_name(canonical, spec):
    name = canonical
    if spec.get("aliases"):
        for pattern, template in XLM_ALIASES:
            if re.match(pattern, name):
                name = re.sub(pattern, template, name)
                break
    return spec["prefix"] + name


# Import-side mapping (spec §6), used to read the files back: prefix strip, containers, leaves.
PREFIXES = ("module.", "model.", "bert.", "roberta.")
CONTAINERS = [(r"^memories\.(\d+)_in\.(.+)$", r"encoder.layer.\1.memory.\2"),
              (r"^memories\.(\d+)_after\.(.+)$", r"encoder.layer.\1.memory.\2")]
LEAVES = [(r"^(.*)LayerNorm\.gamma$", r"\1LayerNorm.weight"),
          (r"^(.*)LayerNorm\.beta$", r"\1LayerNorm.bias"),
          (r"^(encoder\.layer\.\d+\.memory\.query_proj)\.([01])\.(.+)$", r"\1.query_mlps.\2.\3"),
          (r"^encoder\.layer\.(\d+)\.layer_norm\.(weight|bias)$", r"encoder.layer.\1.output.LayerNorm.\2")]


def to_canonical(name):
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
                break
    for rules in (CONTAINERS, LEAVES):
        for pattern, template in rules:
            if re.match(pattern, name):
                name = re.sub(pattern, template, name)
                break
    return name


# ----------------------------------------------------------------------------------------------
# Writers and readers


def write_h5(path, tensors, spec, config_text):
    with h5py.File(path, "w") as f:
        for name, array in tensors.items():
            dataset_name = name.replace(".", "/") if spec["layout"] == "nested" else name
            kwargs = {}
            if spec["compression"] and array.size >= CHUNK_MIN_ELEMENTS:
                kwargs = dict(compression=spec["compression"], shuffle=spec["shuffle"], chunks=True)
            f.create_dataset(dataset_name, data=array, **kwargs)
        if spec["config_in_file"]:
            f.attrs["config"] = config_text


def read_h5(path):
    tensors = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            tensors[name.replace("/", ".")] = obj[()]
    with h5py.File(path, "r") as f:
        f.visititems(visit)
        config = f.attrs.get("config")
    return tensors, config


def write_safetensors(path, tensors, spec, config_text):
    metadata = {"format": "pt"}
    if spec["config_in_file"]:
        metadata["config"] = config_text
    safetensors.numpy.save_file({k: np.array(v, order="C", copy=True) for k, v in tensors.items()}, path, metadata=metadata)


def read_safetensors(path):
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, metadata.get("config")


def write_reference(path, inputs, result, generator_text):
    ids, mask, types = inputs
    with h5py.File(path, "w") as f:
        f.create_dataset("inputs/input_ids", data=ids.numpy().astype(np.int64))
        f.create_dataset("inputs/attention_mask", data=mask.numpy().astype(np.int64))
        if types is not None:
            f.create_dataset("inputs/token_type_ids", data=types.numpy().astype(np.int64))
        f.create_dataset("outputs/last_hidden_state", data=result["last_hidden_state"].astype(np.float32))
        if "pooler_output" in result:
            f.create_dataset("outputs/pooler_output", data=result["pooler_output"].astype(np.float32))
        for n, state in enumerate(result["hidden_states"]):
            f.create_dataset(f"outputs/hidden_states/{n}", data=state.astype(np.float32))
        for layer, trace in result["memory"].items():
            f.create_dataset(f"outputs/memory/{layer}/indices", data=trace["indices"].astype(np.int64))
            f.create_dataset(f"outputs/memory/{layer}/scores", data=trace["scores"].astype(np.float32))
        f.attrs["atol"] = ATOL
        f.attrs["rtol"] = RTOL
        f.attrs["generator"] = generator_text


def read_reference(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Checks


def check_topk_tie_breaking():
    """The tie-breaking helper sorts on (-score, index)."""
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    indices = torch.tensor([[4, 9, 2, 0, 7]])
    top, idx = ref.topk_lowest_index(scores, indices, 4)
    assert idx.tolist() == [[2, 7, 9, 0]] and top.tolist() == [[3.0, 3.0, 3.0, 2.0]], (top, idx)


def check_against_spec(case, sd, config, inputs, result):
    hidden, pooled, traces = spec_forward(sd, config, *inputs)
    worst = 0.0
    for n, (ours, theirs) in enumerate(zip(result["hidden_states"], hidden)):
        diff = float(np.abs(ours - theirs).max())
        worst = max(worst, diff)
        assert diff < 1e-4, f"{case}: hidden_states/{n} differs from the spec forward by {diff}"
    assert np.array_equal(result["hidden_states"][-1], result["last_hidden_state"])
    if pooled is not None:
        diff = float(np.abs(result["pooler_output"] - pooled).max())
        assert diff < 1e-4, f"{case}: pooler differs from the spec forward by {diff}"
    else:
        assert "pooler_output" not in result
    assert set(traces) == set(result["memory"]), (case, traces.keys(), result["memory"].keys())
    for layer, (indices, weights) in traces.items():
        trace = result["memory"][layer]
        assert np.array_equal(trace["indices"], indices), f"{case}: memory {layer} slots differ from brute force"
        diff = float(np.abs(trace["scores"] - weights).max())
        assert diff < 1e-5, f"{case}: memory {layer} weights differ from the spec forward by {diff}"
        heads = trace["indices"].shape[-2]
        if heads > 1:
            assert (trace["indices"][..., 0, :] != trace["indices"][..., 1, :]).any(), f"{case}: heads pick identical slots"
        assert trace["scores"].max() < 0.999 and trace["scores"].min() > 1e-4, f"{case}: degenerate memory weights"
    return worst


def check_memory_matters(case, model, inputs, result):
    """Zeroing one memory's values must move the output (so a memory that is ignored cannot pass)."""
    moved = {}
    for layer, memory in ref.memories(model).items():
        saved = memory.values.weight.detach().clone()
        with torch.no_grad():
            memory.values.weight.zero_()
        other = ref.run_model(model, *inputs)
        with torch.no_grad():
            memory.values.weight.copy_(saved)
        moved[layer] = float(np.abs(other["last_hidden_state"] - result["last_hidden_state"]).max())
        assert moved[layer] > 0.05, f"{case}: memory {layer} barely changes the output ({moved[layer]})"
    return moved


def rebuild_and_compare(case_dir, spec, config, reference):
    """Reads a checkpoint file back, maps names to canonical, rebuilds the model, compares bitwise."""
    path = os.path.join(case_dir, spec["file"])
    tensors, config_text = (read_h5 if spec["kind"] == "h5" else read_safetensors)(path)
    if spec["config_in_file"]:
        assert config_text is not None and json.loads(config_text) == config, f"{path}: config in file differs"
    else:
        assert config_text is None, f"{path}: unexpected config in the file"
    with open(os.path.join(case_dir, "config.json")) as f:
        assert json.load(f) == config
    canonical = {}
    for name, array in tensors.items():
        key = to_canonical(name)
        assert key not in canonical, f"{path}: two tensors map to {key}"
        canonical[key] = array
    model = ref.build_model(config, add_pooling_layer="pooler.dense.weight" in canonical)
    expected = model.state_dict()
    unexpected = sorted(set(canonical) - set(expected))
    missing = sorted(set(expected) - set(canonical))
    assert not missing, f"{path}: missing {missing}"
    for key in unexpected:
        assert key == "embeddings.position_ids" or key.startswith("lm_head."), f"{path}: unexpected {key}"
    state = {}
    for key, value in expected.items():
        array = canonical[key]
        assert tuple(array.shape) == tuple(value.shape), f"{path}: {key} shape {array.shape} != {tuple(value.shape)}"
        if spec.get("float16") and value.is_floating_point():
            assert array.dtype == np.float16, f"{path}: {key} is {array.dtype}, expected float16"
        state[key] = torch.from_numpy(np.array(array)).to(value.dtype)
    model.load_state_dict(state, strict=True)
    ids = torch.from_numpy(reference["inputs/input_ids"])
    mask = torch.from_numpy(reference["inputs/attention_mask"])
    types = torch.from_numpy(reference["inputs/token_type_ids"]) if "inputs/token_type_ids" in reference else None
    result = ref.run_model(model, ids, mask, types)
    produced = {"outputs/last_hidden_state": result["last_hidden_state"]}
    if "pooler_output" in result:
        produced["outputs/pooler_output"] = result["pooler_output"]
    for n, state_n in enumerate(result["hidden_states"]):
        produced[f"outputs/hidden_states/{n}"] = state_n
    for layer, trace in result["memory"].items():
        produced[f"outputs/memory/{layer}/indices"] = trace["indices"]
        produced[f"outputs/memory/{layer}/scores"] = trace["scores"]
    reference_outputs = {k: v for k, v in reference.items() if k.startswith("outputs/")}
    assert set(produced) == set(reference_outputs), (path, sorted(set(produced) ^ set(reference_outputs)))
    for key, value in produced.items():
        assert np.array_equal(value, reference_outputs[key]), f"{path}: {key} does not reproduce the reference"
    return {"unexpected": unexpected, "tensors": len(tensors)}


# ----------------------------------------------------------------------------------------------


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "h5py": h5py.version.version,
            "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
            "safetensors": safetensors.__version__}


def generate_case(case):
    torch.manual_seed(case["seed"])
    generator = torch.Generator().manual_seed(case["seed"])
    config = case["config"]
    model = ref.build_model(config, add_pooling_layer=case.get("pooler", True))
    randomise(model, generator)
    if case.get("integer_keys"):
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name.endswith("memory.keys"):
                    h, two, n, half = tensor.shape
                    prototypes = torch.randint(-1, 2, (3, half), generator=generator).float()
                    choice = torch.randint(0, 3, (h, two, n), generator=generator)
                    tensor.copy_(prototypes[choice])
    if case.get("float16"):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    inputs = make_inputs(config, generator, token_types=case.get("token_types", True))
    result = ref.run_model(model, *inputs)
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    spec_diff = check_against_spec(case["name"], sd, config, inputs, result)
    moved = check_memory_matters(case["name"], model, inputs, result)

    tensors_by_canonical = dict(sd)
    extra = {}
    if case.get("extra") == "roberta_lm_head":
        d, v = config["hidden_size"], config["vocab_size"]
        g2 = torch.Generator().manual_seed(case["seed"] + 1)
        extra = {
            "roberta.embeddings.position_ids": np.arange(config["max_position_embeddings"], dtype=np.int64)[None, :],
            "lm_head.dense.weight": torch.randn(d, d, generator=g2).numpy(),
            "lm_head.dense.bias": torch.randn(d, generator=g2).numpy(),
            "lm_head.layer_norm.weight": torch.randn(d, generator=g2).numpy(),
            "lm_head.layer_norm.bias": torch.randn(d, generator=g2).numpy(),
            "lm_head.bias": torch.randn(v, generator=g2).numpy(),
        }

    case_dir = os.path.join(OUT, case["name"])
    os.makedirs(case_dir, exist_ok=True)
    config_text = ref.config_json(config)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        f.write(config_text + "\n")
    name_maps = {}
    for spec in case["files"]:
        tensors = {}
        for key, array in tensors_by_canonical.items():
            if spec.get("float16") and array.dtype == np.float32:
                array = array.astype(np.float16)
            tensors[to_file_name(key, spec)] = array
            assert to_canonical(to_file_name(key, spec)) == key, (key, to_file_name(key, spec))
        tensors.update(extra)
        name_maps[spec["file"]] = {to_file_name(k, spec): k for k in tensors_by_canonical}
        path = os.path.join(case_dir, spec["file"])
        if spec["kind"] == "h5":
            write_h5(path, tensors, spec, config_text)
        else:
            write_safetensors(path, tensors, spec, config_text)
        os.chmod(path, 0o644)
    generator_text = (f"{GENERATOR} case {case['name']} seed {case['seed']}; transformers {transformers.__version__} "
                      f"{'RobertaModel' if config['model_type'] == 'roberta' else 'BertModel'} (eager, eval, float32) "
                      f"+ tools/pkm_reference.py; torch {torch.__version__}")
    write_reference(os.path.join(case_dir, "reference.h5"), inputs, result, generator_text)
    stats = {str(layer): trace["stats"] for layer, trace in result["memory"].items()}
    for layer, layer_stats in stats.items():
        if case.get("integer_keys"):
            assert layer_stats["exact_ties_half"] > 0 and layer_stats["exact_ties_product"] > 0, (case["name"], layer, layer_stats)
            continue
        assert layer_stats["exact_ties_half"] == 0 and layer_stats["exact_ties_product"] == 0, (case["name"], layer, layer_stats)
        assert min(layer_stats["half_boundary_gap"], layer_stats["product_gap"]) > MIN_GAP, \
            f"{case['name']}: memory {layer} has a near tie {layer_stats}; pick another seed"
    return dict(spec_diff=spec_diff, moved=moved, stats=stats, name_maps=name_maps, extra=sorted(extra))


def verify_case(case):
    case_dir = os.path.join(OUT, case["name"])
    reference = read_reference(os.path.join(case_dir, "reference.h5"))
    with h5py.File(os.path.join(case_dir, "reference.h5"), "r") as f:
        assert float(f.attrs["atol"]) == ATOL and float(f.attrs["rtol"]) == RTOL
    return {spec["file"]: rebuild_and_compare(case_dir, spec, case["config"], reference) for spec in case["files"]}


def manifest_entry(case, info, checked):
    case_dir = os.path.join(OUT, case["name"])
    pkm = case["config"].get("pkm")
    files = {}
    for name in sorted(os.listdir(case_dir)):
        path = os.path.join(case_dir, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256(path)}
    for spec in case["files"]:
        files[spec["file"]]["format"] = {k: v for k, v in spec.items() if k not in ("file",)}
        files[spec["file"]]["unexpected_tensors"] = checked[spec["file"]]["unexpected"]
        files[spec["file"]]["tensor_count"] = checked[spec["file"]]["tensors"]
    entry = {
        "description": case["description"],
        "seed": case["seed"],
        "model_type": case["config"]["model_type"],
        "memory": ({"layers": pkm["layers"], "modes": pkm["modes"], "query_batchnorm": pkm["query_batchnorm"],
                    "query_bias": pkm["query_bias"]} if pkm else None),
        "pooler": case.get("pooler", True),
        "inputs": {"batch": BATCH, "sequence": SEQ, "padded_row": PADDED_ROW, "real_tokens_in_padded_row": PADDED_LENGTH,
                   "token_type_ids": case.get("token_types", True)},
        "tolerances": {"atol": ATOL, "rtol": RTOL},
        "files": files,
        "checks": {"max_abs_diff_vs_spec_float64_forward": info["spec_diff"],
                   "max_change_when_memory_values_zeroed": {str(k): v for k, v in info["moved"].items()},
                   "checkpoints_reproduce_reference_bitwise": True},
        "ties": info["stats"],
    }
    if case.get("aliases"):
        entry["alias_names"] = {file: {alias: canonical for alias, canonical in sorted(mapping.items())
                                       if alias != XLM_PREFIX + canonical}
                                for file, mapping in info["name_maps"].items()}
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify the committed fixtures")
    parser.add_argument("--only", help="regenerate only this case (the others and their manifest entries stay as committed)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    check_topk_tie_breaking()
    if args.check:
        for case in CASES:
            verify_case(case)
            print(f"ok {case['name']}")
        return
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": GENERATOR, "command": COMMAND, "check_command": COMMAND + " --check",
                "requirements": "tools/requirements-fixtures.txt (pip install --find-links /opt/wheels -r ...)",
                "reference_implementation": "tools/pkm_reference.py", "versions": versions(),
                "spec": "schemas/pkm-checkpoints.md §1–§6", "tie_breaking":
                "top-k ties broken by lower index (sub-key index per half, slot index a*N+b on the grid). "
                "ties lists, per memory layer over all B*T*H rows: half_boundary_gap = smallest gap between the "
                "k-th and (k+1)-th sub-key score of a half, product_gap = smallest gap between consecutive scores "
                "among the k+1 best of all N^2 product keys, exact_ties_* = rows with an exact tie there "
                f"(the generator requires no exact tie and every gap > {MIN_GAP})",
                "cases": {}}
    if args.only:
        with open(os.path.join(OUT, "MANIFEST.json")) as f:
            committed = json.load(f)
        manifest["cases"] = {name: entry for name, entry in committed["cases"].items() if name != args.only}
    for case in CASES:
        if args.only and case["name"] != args.only:
            continue
        info = generate_case(case)
        checked = verify_case(case)
        manifest["cases"][case["name"]] = manifest_entry(case, info, checked)
        manifest["cases"][case["name"]]["command"] = COMMAND
        manifest["cases"][case["name"]]["versions"] = versions()
        print(f"{case['name']}: spec diff {info['spec_diff']:.2e}, ties {info['stats']}, files {sorted(checked)}")
    manifest["cases"] = dict(sorted(manifest["cases"].items()))
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, n)) for dp, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
