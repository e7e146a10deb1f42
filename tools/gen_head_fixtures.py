#!/usr/bin/env python3
"""Generate the committed task-head fixtures in fixtures/heads/ (schemas/pkm-checkpoints.md §3b and §5).

    python3 tools/gen_head_fixtures.py            # (re)write every case, check, write fixtures/heads/MANIFEST.json
    python3 tools/gen_head_fixtures.py --check    # only re-check the committed files (no writing)

Each case folder holds what transformers' `save_pretrained` writes for a tiny `BertForMaskedLM` (tied
and untied decoder), `BertForSequenceClassification`, `BertForTokenClassification`,
`BertForQuestionAnswering`, `RobertaForMaskedLM` or `RobertaForSequenceClassification` (hidden 32,
2 layers, vocab 99) whose encoder carries a product-key memory beside the feed-forward block
(residual mode, tools/pkm_reference.py): `model.safetensors` (tied decoders saved once, as
transformers does), the same state dict as `pytorch_model.bin` (torch.save) and as `model.h5` (flat
h5py, uncompressed), `config.json` (transformers' own, plus the `pkm` object) and `reference.h5`
(spec §5: inputs, hidden states, memory traces and the head's logits / start_logits / end_logits;
float32, eager attention, eval mode).

Every parameter and buffer is randomised from a seeded generator. Checks made before anything is
kept (the script fails otherwise):
* the head's logits equal an independent float64 NumPy computation of the head from the model's
  final hidden states (and pooler) within 1e-4;
* the memory changes the logits (zeroing its values moves them);
* no exact tie and no near tie (< 1e-5) at a memory top-k;
* each of `model.safetensors`, `pytorch_model.bin` and `model.h5`, read back into a freshly built
  model of the same class (memory attached, tied weights re-tied by transformers), reproduces every
  reference output bit for bit, and the three hold the same tensors (names, dtypes, values).

Needs tools/requirements-fixtures.txt (pip install --find-links /opt/wheels -r ...); never run by
`swift build` or `swift test`.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys

import h5py
import numpy as np
import safetensors
import torch
import transformers
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_fixtures as models  # noqa: E402
import pkm_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "heads")
GENERATOR = "tools/gen_head_fixtures.py"
COMMAND = "python3 tools/gen_head_fixtures.py"
ATOL, RTOL = 1e-5, 1e-4
MIN_GAP = models.MIN_GAP

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            hidden_act="gelu", max_position_embeddings=40)
PKM = dict(n_keys=16, heads=2, knn=4, k_dim=16, v_dim=32, bn_eps=1e-5, query_batchnorm=True, query_bias=True)

CASES = [
    dict(name="bert_mlm_residual", seed=20250101, family="bert", cls="BertForMaskedLM", memory_layer=1,
         description="BertForMaskedLM, residual memory at layer 1; decoder tied to the word embeddings "
                     "(cls.predictions.decoder.* not saved); reference holds outputs/logits [3, 9, 99]"),
    dict(name="bert_seqcls_residual", seed=20250102, family="bert", cls="BertForSequenceClassification", memory_layer=0,
         labels=["negative", "neutral", "positive"],
         description="BertForSequenceClassification (3 labels with id2label, classifier on the pooler), residual memory "
                     "at layer 0; reference holds outputs/logits [3, 3]"),
    dict(name="bert_tokcls_residual", seed=20250103, family="bert", cls="BertForTokenClassification", memory_layer=1,
         labels=["O", "B-X", "I-X", "B-Y", "I-Y"],
         description="BertForTokenClassification (5 labels, no pooler), residual memory at layer 1; reference holds "
                     "outputs/logits [3, 9, 5]"),
    dict(name="bert_qa_residual", seed=20250114, family="bert", cls="BertForQuestionAnswering", memory_layer=1,
         description="BertForQuestionAnswering (qa_outputs [2, 32]), residual memory at layer 1; reference holds "
                     "outputs/start_logits and outputs/end_logits [3, 9]"),
    dict(name="roberta_mlm_residual", seed=20250105, family="roberta", cls="RobertaForMaskedLM", memory_layer=1,
         description="RobertaForMaskedLM (lm_head, decoder tied to the word embeddings), residual memory at layer 1; "
                     "no token_type_ids in the reference; reference holds outputs/logits [3, 9, 99]"),
    dict(name="roberta_seqcls_residual", seed=20250106, family="roberta", cls="RobertaForSequenceClassification",
         memory_layer=0, labels=["contradiction", "neutral", "entailment"],
         description="RobertaForSequenceClassification (3 labels with id2label; classifier.dense + tanh + "
                     "classifier.out_proj on <s>, no pooler), residual memory at layer 0; no token_type_ids in the "
                     "reference; reference holds outputs/logits [3, 3]"),
    dict(name="bert_mlm_untied_residual", seed=20250108, family="bert", cls="BertForMaskedLM", memory_layer=1,
         untied=True,
         description="BertForMaskedLM with tie_word_embeddings=False: cls.predictions.decoder.weight [99, 32] and "
                     "cls.predictions.decoder.bias saved and distinct from the word embeddings and from "
                     "cls.predictions.bias (which transformers' forward then does not use); residual memory at "
                     "layer 1; reference holds outputs/logits [3, 9, 99]"),
]

# Every case folder holds the same state dict three times (what model.safetensors holds, tied copies not saved):
# model.safetensors (save_pretrained), pytorch_model.bin (torch.save of the state dict, zip format, as
# save_pretrained(safe_serialization=False) wrote it before transformers 5) and model.h5 (flat h5py state dict,
# uncompressed contiguous datasets, default libver, written by tools/gen_model_fixtures.py's write_h5; config.json
# beside it, no config attribute). Uncompressed because gzip(+shuffle) chunking makes these small random tensors
# larger (204 KB vs 168 KB for the untied case). A folder holding several
# weights files resolves to model.safetensors (ModelFolder.preferredWeightsFiles); tests open each by path.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin", "model.h5")
H5_SPEC = dict(layout="flat", compression=None, shuffle=False, config_in_file=False)


def hf_config(case):
    if case["family"] == "bert":
        config = transformers.BertConfig(**TINY, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
    else:
        config = transformers.RobertaConfig(**TINY, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                                            bos_token_id=0, eos_token_id=2)
    if case.get("untied"):
        config.tie_word_embeddings = False
    if "labels" in case:
        config.num_labels = len(case["labels"])
        config.id2label = dict(enumerate(case["labels"]))
        config.label2id = {name: i for i, name in enumerate(case["labels"])}
    config._attn_implementation = "eager"
    return config


def build(case):
    """The transformers model with the case's memory attached to its encoder (parameters as constructed)."""
    model = getattr(transformers, case["cls"])(hf_config(case))
    base = model.base_model
    memory = ref.ProductKeyMemory(TINY["hidden_size"], PKM["n_keys"], PKM["heads"], PKM["knn"], PKM["k_dim"],
                                  PKM["v_dim"], PKM["query_batchnorm"], PKM["query_bias"], PKM["bn_eps"])
    ref.attach_memory(base, case["memory_layer"], "residual", memory)
    model.float()
    model.eval()
    assert model.config._attn_implementation == "eager"
    return model


def randomise(model, generator):
    """Seeded values for every distinct tensor (tied ones once): scales near 1, shifts near 0, linears ~ 1/sqrt(in)."""
    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator, dtype=torch.float64).mul(std).add(mean).float()

    seen = set()
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            shape = tuple(tensor.shape)
            if name.endswith("num_batches_tracked"):
                value = torch.tensor(int(torch.randint(100, 100000, (1,), generator=generator)), dtype=torch.int64)
            elif name.endswith("running_var"):
                value = (torch.rand(shape, generator=generator, dtype=torch.float64) * 1.5 + 0.5).float()
            elif name.endswith("running_mean"):
                value = normal(shape, 0.3)
            elif name.endswith(("LayerNorm.weight", "layer_norm.weight", "query_mlps.1.weight")):
                value = normal(shape, 0.2, 1.0)
            elif name.endswith(("LayerNorm.bias", "layer_norm.bias", "query_mlps.1.bias")):
                value = normal(shape, 0.1)
            elif name.endswith("memory.keys"):
                value = normal(shape, 1.0 / math.sqrt(shape[-1]))
            elif name.endswith("memory.values.weight"):
                value = normal(shape, 0.5)
            elif "embeddings" in name and name.endswith(".weight"):
                value = normal(shape, 0.5)
            elif name.endswith(".weight") and len(shape) == 2:
                value = normal(shape, 1.0 / math.sqrt(shape[1]))
            elif name.endswith(".bias") or name.endswith("predictions.bias"):
                value = normal(shape, 0.1)
            else:
                raise RuntimeError(f"no randomisation rule for {name}")
            tensor.data.copy_(value)


@torch.no_grad()
def run(model, inputs):
    ids, mask, types = inputs
    base = model.base_model
    kwargs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    if types is not None:
        kwargs["token_type_ids"] = types
    out = model(**kwargs)
    result = {"hidden_states": [h.float().numpy() for h in out.hidden_states],
              "memory": {i: {"indices": m.last_indices.numpy(), "scores": m.last_weights.float().numpy(), "stats": m.last_stats}
                         for i, m in ref.memories(base).items()}}
    result["last_hidden_state"] = result["hidden_states"][-1]
    if hasattr(out, "start_logits"):
        result["start_logits"] = out.start_logits.float().numpy()
        result["end_logits"] = out.end_logits.float().numpy()
    else:
        result["logits"] = out.logits.float().numpy()
    return result


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)


def spec_head(case, sd, config, hidden):
    """The head of spec §3b in float64 NumPy from the final hidden state [B, T, d] and the state dict."""
    g = lambda name: sd[name].astype(np.float64)  # noqa: E731
    h = hidden.astype(np.float64)
    eps = config.layer_norm_eps
    kind = case["cls"]
    if kind.endswith("ForMaskedLM"):
        p = "cls.predictions." if case["family"] == "bert" else "lm_head."
        dense = p + ("transform.dense" if case["family"] == "bert" else "dense")
        norm = p + ("transform.LayerNorm" if case["family"] == "bert" else "layer_norm")
        u = h @ g(dense + ".weight").T + g(dense + ".bias")
        u = 0.5 * u * (1.0 + _erf(u / math.sqrt(2.0)))
        u = _layer_norm(u, g(norm + ".weight"), g(norm + ".bias"), eps)
        word = ("bert." if case["family"] == "bert" else "roberta.") + "embeddings.word_embeddings.weight"
        if case.get("untied"):
            # Untied: the decoder's own weight and bias (cls.predictions.bias is not used by transformers 5).
            return {"logits": u @ g(p + "decoder.weight").T + g(p + "decoder.bias")}
        return {"logits": u @ g(word).T + g(p + "bias")}
    if kind.endswith("ForSequenceClassification"):
        if case["family"] == "bert":
            pooled = np.tanh(h[:, 0] @ g("bert.pooler.dense.weight").T + g("bert.pooler.dense.bias"))
            return {"logits": pooled @ g("classifier.weight").T + g("classifier.bias")}
        x = np.tanh(h[:, 0] @ g("classifier.dense.weight").T + g("classifier.dense.bias"))
        return {"logits": x @ g("classifier.out_proj.weight").T + g("classifier.out_proj.bias")}
    if kind.endswith("ForTokenClassification"):
        return {"logits": h @ g("classifier.weight").T + g("classifier.bias")}
    if kind.endswith("ForQuestionAnswering"):
        both = h @ g("qa_outputs.weight").T + g("qa_outputs.bias")
        return {"start_logits": both[..., 0], "end_logits": both[..., 1]}
    raise ValueError(kind)


def head_outputs(result):
    return {key: result[key] for key in ("logits", "start_logits", "end_logits") if key in result}


def write_reference(path, inputs, result, generator_text):
    ids, mask, types = inputs
    with h5py.File(path, "w") as f:
        f.create_dataset("inputs/input_ids", data=ids.numpy().astype(np.int64))
        f.create_dataset("inputs/attention_mask", data=mask.numpy().astype(np.int64))
        if types is not None:
            f.create_dataset("inputs/token_type_ids", data=types.numpy().astype(np.int64))
        f.create_dataset("outputs/last_hidden_state", data=result["last_hidden_state"].astype(np.float32))
        for n, state in enumerate(result["hidden_states"]):
            f.create_dataset(f"outputs/hidden_states/{n}", data=state.astype(np.float32))
        for layer, trace in result["memory"].items():
            f.create_dataset(f"outputs/memory/{layer}/indices", data=trace["indices"].astype(np.int64))
            f.create_dataset(f"outputs/memory/{layer}/scores", data=trace["scores"].astype(np.float32))
        for key, value in head_outputs(result).items():
            f.create_dataset(f"outputs/{key}", data=value.astype(np.float32))
        f.attrs["atol"] = ATOL
        f.attrs["rtol"] = RTOL
        f.attrs["generator"] = generator_text


def reference_outputs(result):
    produced = {"outputs/last_hidden_state": result["last_hidden_state"]}
    for n, state in enumerate(result["hidden_states"]):
        produced[f"outputs/hidden_states/{n}"] = state
    for layer, trace in result["memory"].items():
        produced[f"outputs/memory/{layer}/indices"] = trace["indices"]
        produced[f"outputs/memory/{layer}/scores"] = trace["scores"]
    for key, value in head_outputs(result).items():
        produced[f"outputs/{key}"] = value
    return produced


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
            "safetensors": safetensors.__version__}


def read_weights(path):
    """The tensors of one weights file by name, as NumPy arrays."""
    if path.endswith(".safetensors"):
        return load_file(path)
    if path.endswith(".bin"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in loaded.items()}
    if path.endswith(".h5"):
        tensors, config = models.read_h5(path)
        assert config is None, path
        return tensors
    raise ValueError(path)


def read_back(case, weights="model.safetensors"):
    """A weights file loaded into a fresh model of the case's class: (model, missing keys, names)."""
    case_dir = os.path.join(OUT, case["name"])
    with open(os.path.join(case_dir, "config.json")) as f:
        stored = json.load(f)
    assert stored["architectures"] == [case["cls"]], stored["architectures"]
    assert stored.get("tie_word_embeddings", True) == (not case.get("untied")), stored.get("tie_word_embeddings")
    model = build(case)
    tensors = read_weights(os.path.join(case_dir, weights))
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v, order="C", copy=True)) for k, v in tensors.items()}, strict=False)
    model.tie_weights()
    # Only tied copies may be absent (transformers saves a tied tensor once).
    tied = {k for k in missing if k.endswith("decoder.weight") or k.endswith("decoder.bias")}
    assert set(missing) == tied, (case["name"], missing)
    if case.get("untied"):
        assert not missing, (case["name"], missing)
        assert not np.array_equal(tensors["cls.predictions.decoder.weight"], tensors["bert.embeddings.word_embeddings.weight"])
        assert not np.array_equal(tensors["cls.predictions.decoder.bias"], tensors["cls.predictions.bias"])
    assert not unexpected, (case["name"], unexpected)
    model.eval()
    return model, sorted(missing), sorted(tensors)


def check_case(case):
    case_dir = os.path.join(OUT, case["name"])
    reference = {}
    with h5py.File(os.path.join(case_dir, "reference.h5"), "r") as f:
        f.visititems(lambda name, obj: reference.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        assert float(f.attrs["atol"]) == ATOL and float(f.attrs["rtol"]) == RTOL
    inputs = (torch.from_numpy(reference["inputs/input_ids"]), torch.from_numpy(reference["inputs/attention_mask"]),
              torch.from_numpy(reference["inputs/token_type_ids"]) if "inputs/token_type_ids" in reference else None)
    stored = {k: v for k, v in reference.items() if k.startswith("outputs/")}
    first = None
    for weights in WEIGHTS_FILES:
        model, missing, names = read_back(case, weights)
        if first is None:
            first = (missing, names)
        assert (missing, names) == first, f"{case['name']}: {weights} holds other tensors than {WEIGHTS_FILES[0]}"
        produced = reference_outputs(run(model, inputs))
        assert set(produced) == set(stored), (case["name"], sorted(set(produced) ^ set(stored)))
        for key, value in produced.items():
            assert np.array_equal(value, stored[key]), f"{case['name']}: {key} from {weights} does not reproduce the reference"
    missing, names = first
    tensors = {w: read_weights(os.path.join(case_dir, w)) for w in WEIGHTS_FILES}
    for w in WEIGHTS_FILES[1:]:
        for name in names:
            a, b = tensors[WEIGHTS_FILES[0]][name], tensors[w][name]
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f"{case['name']}: {name} differs in {w}"
    return {"tied_not_saved": missing, "tensor_count": len(names),
            "head_tensors": [n for n in names if not n.startswith(("bert.", "roberta."))]}


def generate_case(case):
    torch.manual_seed(case["seed"])
    generator = torch.Generator().manual_seed(case["seed"])
    model = build(case)
    randomise(model, generator)
    model.tie_weights()
    config = model.config
    inputs = models.make_inputs({"pad_token_id": config.pad_token_id, "vocab_size": config.vocab_size,
                                 "model_type": case["family"], "type_vocab_size": config.type_vocab_size},
                                generator, token_types=case["family"] == "bert")
    result = run(model, inputs)
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    expected = spec_head(case, sd, config, result["last_hidden_state"])
    spec_diff = 0.0
    for key, value in expected.items():
        diff = float(np.abs(result[key] - value).max())
        assert diff < 1e-4, f"{case['name']}: {key} differs from the float64 head by {diff}"
        spec_diff = max(spec_diff, diff)
    # The memory must matter to the logits.
    memory = ref.memories(model.base_model)[case["memory_layer"]]
    saved = memory.values.weight.detach().clone()
    with torch.no_grad():
        memory.values.weight.zero_()
    other = head_outputs(run(model, inputs))
    with torch.no_grad():
        memory.values.weight.copy_(saved)
    moved = max(float(np.abs(other[k] - v).max()) for k, v in head_outputs(result).items())
    assert moved > 0.05, f"{case['name']}: the memory barely changes the logits ({moved})"
    result = run(model, inputs)  # traces of the unmodified model
    for layer, trace in result["memory"].items():
        stats = trace["stats"]
        assert stats["exact_ties_half"] == 0 and stats["exact_ties_product"] == 0, (case["name"], layer, stats)
        assert min(stats["half_boundary_gap"], stats["product_gap"]) > MIN_GAP, f"{case['name']}: near tie {stats}; pick another seed"

    case_dir = os.path.join(OUT, case["name"])
    shutil.rmtree(case_dir, ignore_errors=True)
    model.save_pretrained(case_dir, safe_serialization=True)
    with open(os.path.join(case_dir, "config.json")) as f:
        stored = json.load(f)
    stored["pkm"] = dict(layers=[case["memory_layer"]], modes=["residual"], **PKM)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        json.dump(stored, f, indent=1, sort_keys=True)
        f.write("\n")
    for name in os.listdir(case_dir):
        assert name in ("config.json", "model.safetensors"), f"{case['name']}: save_pretrained wrote {name}"
    saved = load_file(os.path.join(case_dir, "model.safetensors"))
    # torch.save of the same state dict (each tensor its own storage, so no shared buffer is pickled whole).
    torch.save({k: torch.from_numpy(np.array(v, copy=True)) for k, v in saved.items()},
               os.path.join(case_dir, "pytorch_model.bin"))
    models.write_h5(os.path.join(case_dir, "model.h5"), {k: np.array(v, order="C", copy=True) for k, v in saved.items()}, H5_SPEC, None)
    generator_text = (f"{GENERATOR} case {case['name']} seed {case['seed']}; transformers {transformers.__version__} "
                      f"{case['cls']} (eager, eval, float32) + tools/pkm_reference.py memory; torch {torch.__version__}")
    write_reference(os.path.join(case_dir, "reference.h5"), inputs, result, generator_text)
    for name in os.listdir(case_dir):
        os.chmod(os.path.join(case_dir, name), 0o644)
    return {"max_abs_diff_vs_float64_head": spec_diff, "max_logit_change_when_memory_values_zeroed": moved,
            "ties": {str(k): v["stats"] for k, v in result["memory"].items()}}


def manifest_entry(case, info, checked):
    case_dir = os.path.join(OUT, case["name"])
    files = {name: {"bytes": os.path.getsize(os.path.join(case_dir, name)), "sha256": sha256(os.path.join(case_dir, name))}
             for name in sorted(os.listdir(case_dir))}
    return {"description": case["description"], "seed": case["seed"], "architecture": case["cls"],
            "model_type": case["family"], "labels": case.get("labels"),
            "memory": {"layers": [case["memory_layer"]], "modes": ["residual"]},
            "inputs": {"batch": models.BATCH, "sequence": models.SEQ, "padded_row": models.PADDED_ROW,
                       "real_tokens_in_padded_row": models.PADDED_LENGTH, "token_type_ids": case["family"] == "bert"},
            "tolerances": {"atol": ATOL, "rtol": RTOL}, "files": files,
            "checks": {**{k: v for k, v in info.items() if k != "ties"}, "checkpoint_reproduces_reference_bitwise": True,
                       "tied_tensors_not_saved": checked["tied_not_saved"], "head_tensors": checked["head_tensors"]},
            "ties": info["ties"], "command": COMMAND, "versions": versions()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the committed fixtures")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.check:
        for case in CASES:
            check_case(case)
            print(f"ok {case['name']}")
        return
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": GENERATOR, "command": COMMAND, "check_command": COMMAND + " --check",
                "requirements": "tools/requirements-fixtures.txt (pip install --find-links /opt/wheels -r ...)",
                "reference_implementation": "transformers' own head classes + tools/pkm_reference.py (memory)",
                "spec": "schemas/pkm-checkpoints.md §3b, §5", "versions": versions(), "cases": {}}
    for case in CASES:
        info = generate_case(case)
        checked = check_case(case)
        manifest["cases"][case["name"]] = manifest_entry(case, info, checked)
        print(f"{case['name']}: head diff {info['max_abs_diff_vs_float64_head']:.2e}, "
              f"memory moves logits by {info['max_logit_change_when_memory_values_zeroed']:.3f}")
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, n)) for dp, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
