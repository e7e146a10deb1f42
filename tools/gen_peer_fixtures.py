#!/usr/bin/env python3
"""Parity fixtures for the peer PKM layouts: lucidrains product-key-memory 0.3.0, XLM options, Meta's memory layer.

    python3 tools/gen_peer_fixtures.py            # (re)write fixtures/peers/* and fixtures/peers/MANIFEST.json

Each case is a tiny HF BertModel/RobertaModel (hidden 32, 3 layers, like fixtures/models) with memories attached
under their implementation's own module and tensor names (tools/peer_reference.py), EVERY parameter randomised
(LayerNorm γ/β, batchnorm statistics, keys, values, projections), in eval mode. Written per case:
  model.safetensors (or model.pth for the XLM training-checkpoint case)  native names, __metadata__ {format: pt}
  config.json   HF fields + a `pkm` object holding only what weights cannot tell (layers, modes, knn, and the
                activation/normalisation options that have no tensor); none at all for the XLM `params` case
  reference.h5  spec §5 layout: inputs, last_hidden_state, pooler_output, hidden_states/*, memory/{i}/indices
                (the value rows read) and memory/{i}/scores (their weights)
`pkm-convert verify CHECKPOINT reference.h5` must pass on every case (Tests/PKMPipelineTests/FixtureParityTests).
"""
import hashlib
import json
import math
import os
import platform
import sys

import h5py
import numpy as np
import product_key_memory
import safetensors
import torch
import transformers
from product_key_memory import PKM
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_reference as peers  # noqa: E402
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "peers")
ATOL, RTOL = 1e-5, 1e-4
BATCH, SEQ, PADDED_ROW, PADDED_LENGTH = 3, 9, 2, 5
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=40)
HEADS, N_KEYS, KNN, DIM_HEAD = 2, 16, 4, 8      # K = 2·DIM_HEAD = 16


def base_config(model_type):
    if model_type == "bert":
        return dict(model_type="bert", architectures=["BertModel"], type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, **TINY)
    return dict(model_type="roberta", architectures=["RobertaModel"], type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                bos_token_id=0, eos_token_id=2, **TINY)


CASES = [
    dict(name="bert_lucidrains_residual", seed=31, model_type="bert", kind="lucidrains", attribute="pkm",
         memories=[(1, "residual")], options={}, pkm_extra={},
         description="lucidrains PKM 0.3.0 (use_layernorm) beside the FFN of layer 1, attribute `pkm`, BertModel names (no prefix)"),
    dict(name="bert_lucidrains_norms", seed=32, model_type="bert", kind="lucidrains", attribute="memory",
         memories=[(0, "replace"), (2, "after")], options=dict(pre_layernorm=True, norm_output=True), pkm_extra={},
         description="lucidrains PKM 0.3.0 with pre_layernorm and norm_output, replacing layer 0's FFN and after layer 2"),
    dict(name="roberta_lucidrains_relu", seed=33, model_type="roberta", kind="lucidrains", attribute="mem", prefix="roberta.",
         memories=[(1, "after")], options=dict(non_competitive_gates=True), pkm_extra=dict(score_activation="relu"),
         description="lucidrains PKM 0.3.0 with non_competitive_gates (ReLU weights), after RoBERTa layer 1, attribute `mem`, roberta. prefix"),
    dict(name="bert_lucidrains_01_batchnorm", seed=37, model_type="bert", kind="lucidrains01", attribute="pkm",
         memories=[(2, "residual")], options={}, pkm_extra={},
         description="lucidrains 0.1.x layout (re-implemented from its source): BatchNorm over the whole query (norm.fn.*), "
                     "dim_head = K, beside layer 2's FFN"),
    dict(name="bert_xlm_options_params", seed=34, model_type="bert", kind="xlm", pth=True,
         memories=[(0, "replace"), (2, "after")],
         options=dict(query_layer_sizes=(24,), query_batchnorm=True, normalize_query=True, temperature=0.5,
                      shuffle_indices=True, use_different_keys=False),
         description="XLM training checkpoint {model, params}: memories.0_in / memories.2_after, query MLP 0,24,0 with batchnorm, "
                     "normalised queries, temperature 0.5, head_permutations, shared [N, K/2] keys, shared values; config.json has no pkm"),
    dict(name="bert_xlm_modulo_raw", seed=35, model_type="bert", kind="xlm", attribute="mem",
         memories=[(1, "residual")], options=dict(score_softmax=False, modulo_size=200, query_bias=True),
         pkm_extra=dict(score_activation="identity"),
         description="XLM memory beside layer 1's FFN: raw scores as weights (mem_score_softmax=False), slots mod 200 (200 value rows)"),
    dict(name="bert_meta_memory_plus", seed=36, model_type="bert", kind="meta", attribute="memory",
         memories=[(0, "replace"), (2, "replace")], options=dict(v_dim=24, swilu_projection=True, gated=True),
         pkm_extra={},
         description="Meta Memory Layers at Scale: keys [2HN, K/2], bf16 values [N², 24] held by layer 0 only (shared), "
                     "Memory+ swilu_projection/value_proj, sigmoid gating; replacing the FFN of layers 0 and 2"),
]


def randomise(model, generator):
    """Overwrites every float parameter and buffer with seeded random values (integer buffers: counts; permutations kept)."""
    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator, dtype=torch.float64).mul(std).add(mean)

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("head_permutations"):
                continue
            if leaf == "num_batches_tracked":
                value = torch.tensor(int(torch.randint(100, 100000, (1,), generator=generator)))
            elif leaf == "running_var":
                value = torch.rand(shape, generator=generator, dtype=torch.float64) * 1.5 + 0.5
            elif leaf == "running_mean":
                value = normal(shape, 0.3)
            elif name.endswith("keys"):
                value = normal(shape, 1.0 / math.sqrt(shape[-1]))
            elif name.endswith("values.weight"):
                value = normal(shape, 0.5)
            elif "embeddings" in name and leaf == "weight":
                value = normal(shape, 0.5)
            elif leaf == "weight" and len(shape) == 1:          # LayerNorm / BatchNorm γ
                value = normal(shape, 0.2, 1.0)
            elif leaf == "weight" and len(shape) == 2:
                value = normal(shape, 1.0 / math.sqrt(shape[1]))
            elif leaf == "bias":
                value = normal(shape, 0.1)
            else:
                raise RuntimeError(f"no randomisation rule for {name}")
            tensor.copy_(value.to(tensor.dtype))


def make_inputs(config, generator):
    pad = config["pad_token_id"]
    ids = torch.randint(3, config["vocab_size"], (BATCH, SEQ), generator=generator)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[PADDED_ROW, PADDED_LENGTH:] = 0
    if config["model_type"] == "roberta":
        ids[:, 0], ids[:, SEQ - 1], ids[PADDED_ROW, PADDED_LENGTH - 1] = 0, 2, 2
    else:
        ids[:, 0] = 2
    ids[mask == 0] = pad
    types = torch.randint(0, config["type_vocab_size"], (BATCH, SEQ), generator=generator)
    return ids, mask, types


def build(case):
    config = base_config(case["model_type"])
    model = ref.build_model(config)
    d, memories, owner = config["hidden_size"], {}, None
    for layer, mode in case["memories"]:
        options = dict(case["options"])
        if case["kind"] == "lucidrains":
            memory = PKM(d, heads=HEADS, num_keys=N_KEYS, topk=KNN, dim_head=DIM_HEAD, **options)
            peers.hook_lucidrains(memory)
        elif case["kind"] == "lucidrains01":
            memory = peers.Lucidrains01PKM(d, heads=HEADS, num_keys=N_KEYS, topk=KNN, dim_head=2 * DIM_HEAD)
        elif case["kind"] == "xlm":
            share = case.get("pth", False)
            memory = peers.XLMMemory(d, N_KEYS, HEADS, KNN, 2 * DIM_HEAD, owns_values=True, **options)
            if share and owner is not None:
                memory.values = owner.values          # XLM shares the Parameter: both names in the state dict
            owner = owner or memory
        else:
            memory = peers.MetaMemory(d, N_KEYS, HEADS, KNN, 2 * DIM_HEAD, owns_values=owner is None, **options)
            if owner is not None:
                # A plain attribute, not a registered submodule: only the first memory's state dict holds values.
                object.__setattr__(memory, "shared_values", owner.values)
            owner = owner or memory
        attribute = case.get("attribute", "memory")
        peers.attach(model, layer, mode, memory, attribute)
        memories[layer] = memory
    model.float()
    for memory in memories.values():
        if case["kind"] == "meta" and hasattr(memory, "values"):
            memory.values.weight.data = memory.values.weight.data.to(torch.bfloat16)
    model.eval()
    return config, model, memories


@torch.no_grad()
def run(model, memories, inputs):
    ids, mask, types = inputs
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    result = {"last_hidden_state": out.last_hidden_state.numpy(), "pooler_output": out.pooler_output.numpy(),
              "hidden_states": [h.numpy() for h in out.hidden_states], "memory": {}}
    for layer, memory in memories.items():
        shape = (BATCH, SEQ) + tuple(memory.last_indices.shape[-2:])
        result["memory"][layer] = {"indices": memory.last_indices.reshape(shape).numpy(),
                                   "scores": memory.last_weights.reshape(shape).numpy()}
    return result


def write_reference(path, inputs, result, text):
    ids, mask, types = inputs
    with h5py.File(path, "w") as f:
        f.create_dataset("inputs/input_ids", data=ids.numpy().astype(np.int64))
        f.create_dataset("inputs/attention_mask", data=mask.numpy().astype(np.int64))
        f.create_dataset("inputs/token_type_ids", data=types.numpy().astype(np.int64))
        f.create_dataset("outputs/last_hidden_state", data=result["last_hidden_state"].astype(np.float32))
        f.create_dataset("outputs/pooler_output", data=result["pooler_output"].astype(np.float32))
        for n, state in enumerate(result["hidden_states"]):
            f.create_dataset(f"outputs/hidden_states/{n}", data=state.astype(np.float32))
        for layer, trace in result["memory"].items():
            f.create_dataset(f"outputs/memory/{layer}/indices", data=trace["indices"].astype(np.int64))
            f.create_dataset(f"outputs/memory/{layer}/scores", data=trace["scores"].astype(np.float32))
        f.attrs["atol"], f.attrs["rtol"], f.attrs["generator"] = ATOL, RTOL, text


def xlm_params(case, config):
    o = case["options"]
    return {"emb_dim": config["hidden_size"], "n_layers": config["num_hidden_layers"], "use_memory": True,
            "mem_enc_positions": [[layer, "in" if mode == "replace" else "after"] for layer, mode in case["memories"]],
            "mem_implementation": "pq_fast", "mem_n_keys": N_KEYS, "mem_heads": HEADS, "mem_knn": KNN, "mem_k_dim": 2 * DIM_HEAD,
            "mem_v_dim": -1, "mem_query_layer_sizes": [0, *o.get("query_layer_sizes", ()), 0],   # XLM's check_params parses "0,24,0"
            "mem_query_bias": o.get("query_bias", True), "mem_query_batchnorm": o.get("query_batchnorm", False),
            "mem_normalize_query": o.get("normalize_query", False), "mem_temperature": o.get("temperature", 1.0),
            "mem_score_softmax": o.get("score_softmax", True), "mem_score_subtract": "", "mem_score_normalize": False,
            "mem_shuffle_indices": o.get("shuffle_indices", False), "mem_modulo_size": o.get("modulo_size", -1),
            "mem_use_different_keys": o.get("use_different_keys", True), "mem_keys_learn": True,
            "mem_share_values": True, "mem_multi_query_net": False, "mem_input2d": False,
            "mem_input_dropout": 0.0, "mem_query_dropout": 0.0, "mem_value_dropout": 0.0, "mem_sparse": False}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate(case):
    torch.manual_seed(case["seed"])
    generator = torch.Generator().manual_seed(case["seed"])
    config, model, memories = build(case)
    randomise(model, generator)
    inputs = make_inputs(config, generator)
    result = run(model, memories, inputs)
    folder = os.path.join(OUT, case["name"])
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
    if case.get("pth"):
        renamed = {}
        for name, tensor in state.items():
            for layer, mode in case["memories"]:
                head = f"encoder.layer.{layer}.memory."
                if name.startswith(head):
                    name = f"memories.{layer}_{'in' if mode == 'replace' else 'after'}." + name[len(head):]
            renamed["bert." + name] = tensor
        # XLM's shared values are one Parameter under both memories' names.
        first = f"bert.memories.{case['memories'][0][0]}_in.values.weight"
        for name in list(renamed):
            if name.endswith(".values.weight"):
                renamed[name] = renamed[first]
        torch.save({"model": renamed, "params": xlm_params(case, config), "epoch": 1}, os.path.join(folder, "model.pth"))
        checkpoint = "model.pth"
    else:
        prefix = case.get("prefix", "")
        save_file({prefix + name: tensor for name, tensor in state.items()}, os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})
        checkpoint = "model.safetensors"
        config["pkm"] = dict(layers=[l for l, _ in case["memories"]], modes=[m for _, m in case["memories"]], knn=KNN,
                             **case.get("pkm_extra", {}))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
    write_reference(os.path.join(folder, "reference.h5"), inputs, result, f"tools/gen_peer_fixtures.py case {case['name']}")
    files = {name: {"bytes": os.path.getsize(os.path.join(folder, name)), "sha256": sha256(os.path.join(folder, name))}
             for name in sorted(os.listdir(folder))}
    return {"description": case["description"], "seed": case["seed"], "kind": case["kind"], "checkpoint": checkpoint,
            "memories": {str(l): m for l, m in case["memories"]},
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in case["options"].items()},
            "files": files, "tolerances": {"atol": ATOL, "rtol": RTOL}}


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/gen_peer_fixtures.py", "command": "python3 tools/gen_peer_fixtures.py",
                "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                             "product-key-memory": getattr(product_key_memory, "__version__", "0.3.0"), "h5py": h5py.version.version,
                             "safetensors": safetensors.__version__, "numpy": np.__version__},
                "cases": {}}
    for case in CASES:
        manifest["cases"][case["name"]] = generate(case)
        print(case["name"], manifest["cases"][case["name"]]["files"])
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
