#!/usr/bin/env python3
"""PyTorch side of the forward benchmark, and the checkpoints the Swift side runs.

BERT-base shape (12 layers, hidden 768, 12 heads, intermediate 3072), batch 8 x sequence 128, float32, CPU,
torch.set_num_threads(THREADS). Two models with the same base weights (transformers' init, seed 0):
  plain   : no memory
  memory  : one paper-sized residual memory at layer 6 (n_keys 512 -> 262,144 slots, heads 4, knn 32, k_dim 256,
            query batchnorm), the XLM pq_fast computation (torch.topk per half, k x k grid, topk, softmax,
            F.embedding_bag over value rows) in eval mode.
Writes bench-data/forward/{plain,memory}/model.safetensors (+config.json) for `pkm-convert run`, then prints JSON
timings: median seconds per forward over --runs after --warmup, tokens/s, and the memory layer's and the FFN's own time.
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pkm_reference import ProductKeyMemory, attach_memory  # noqa: E402


class FastMemory(ProductKeyMemory):
    """Same parameters and semantics as the reference memory, computed the way XLM's pq_fast does (torch.topk)."""

    def forward(self, x):
        prefix = x.shape[:-1]
        flat = x.reshape(-1, self.input_dim)
        n, H, N, K, k = flat.shape[0], self.heads, self.n_keys, self.k_dim, self.knn
        query = self.query_proj(flat).view(n, H, K)
        s1 = torch.einsum("nhc,hmc->nhm", query[..., : K // 2], self.keys[:, 0])
        s2 = torch.einsum("nhc,hmc->nhm", query[..., K // 2:], self.keys[:, 1])
        t1, i1 = s1.topk(k, dim=-1)
        t2, i2 = s2.topk(k, dim=-1)
        grid = (t1[..., :, None] + t2[..., None, :]).reshape(n, H, k * k)
        slots = (i1[..., :, None] * N + i2[..., None, :]).reshape(n, H, k * k)
        scores, best = grid.topk(k, dim=-1)
        indices = slots.gather(-1, best)
        weights = torch.softmax(scores.float(), dim=-1)
        out = F.embedding_bag(indices.reshape(n, H * k), self.values.weight, per_sample_weights=weights.reshape(n, H * k), mode="sum")
        return out.reshape(*prefix, self.v_dim)


MINIMA = {}


def timed(fn, runs, warmup, key=None):
    """Median seconds over `runs` after `warmup`; the minimum is kept in MINIMA[key] (robust to load spikes)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if key:
        MINIMA[key] = min(times)
    return statistics.median(times)


def onnx_runtime(model, ids, args, results):
    """Exports the plain model to ONNX (TorchScript exporter, opset 17) and times ONNX Runtime's CPU provider on it."""
    import numpy as np
    import onnxruntime as ort

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids).last_hidden_state

    with torch.inference_mode():
        reference = model(ids).last_hidden_state.numpy()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "plain.onnx")
    torch.onnx.export(LastHidden(model), (ids,), path, input_names=["input_ids"], output_names=["last_hidden_state"],
                      dynamo=False, opset_version=17)
    # The TorchScript exporter leaves the module in training mode (dropout on): back to eval for the timings after it.
    model.eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy()}
    results["onnxruntime"] = ort.__version__
    results["onnxruntime_seconds"] = timed(lambda: session.run(None, feed), args.runs, args.warmup, "onnxruntime")
    results["onnxruntime_min_seconds"] = MINIMA["onnxruntime"]
    results["onnxruntime_max_abs_diff"] = float(np.abs(session.run(None, feed)[0] - reference).max())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default="bench-data/forward")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (CPU, same threads) on the plain model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = BertConfig(attn_implementation="eager")
    model = BertModel(config).eval()
    batch, sequence = 8, 128
    ids = torch.randint(1000, 20000, (batch, sequence))
    config_json = json.loads(config.to_json_string())
    config_json["model_type"] = "bert"
    results = {"threads": args.threads, "batch": batch, "sequence": sequence, "torch": torch.__version__}

    def export(name, module, pkm=None):
        if args.skip_export:
            return
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        cfg = dict(config_json)
        if pkm:
            cfg["pkm"] = pkm
        state = {key: value.contiguous() for key, value in module.state_dict().items() if not key.endswith("position_ids")}
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"config": json.dumps(cfg)})

    with torch.inference_mode():
        results["plain_seconds"] = timed(lambda: model(ids), args.runs, args.warmup, "plain")
        layer6 = model.encoder.layer[6]
        hidden = torch.randn(batch, sequence, 768)
        results["ffn_block_seconds"] = timed(lambda: layer6.output(layer6.intermediate(hidden), hidden), args.runs, args.warmup)
    export("plain", model)
    if args.onnx:
        onnx_runtime(model, ids, args, results)

    memory = FastMemory(768, n_keys=512, heads=4, knn=32, k_dim=256, v_dim=768).eval()
    with torch.no_grad():
        memory.keys.uniform_(-1 / (128 ** 0.5), 1 / (128 ** 0.5))
        memory.values.weight.normal_(0, 768 ** -0.5)
        bn = memory.query_proj.query_mlps[1]
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    attach_memory(model, 6, "residual", memory)
    with torch.inference_mode():
        results["memory_seconds"] = timed(lambda: model(ids), args.runs, args.warmup, "memory")
        results["memory_layer_seconds"] = timed(lambda: memory(hidden), args.runs, args.warmup)
    export("memory", model, {"layers": [6], "modes": ["residual"], "n_keys": 512, "heads": 4, "knn": 32, "k_dim": 256,
                             "v_dim": 768, "query_batchnorm": True, "query_bias": True, "bn_eps": 1e-5})
    results["plain_min_seconds"] = MINIMA["plain"]
    results["memory_min_seconds"] = MINIMA["memory"]
    tokens = batch * sequence
    results["plain_tokens_per_second"] = tokens / results["plain_seconds"]
    results["memory_tokens_per_second"] = tokens / results["memory_seconds"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
