#!/usr/bin/env python3
"""Python side of the text benchmarks (tools/bench_text.sh): the same jobs as `pkm-convert run --text-file`
and `pkm-convert usage --text-file`, with transformers + tokenizers (torch CPU), same threads.

    python3 tools/bench_text.py run   MODEL_FOLDER CORPUS [--batch 32]
    python3 tools/bench_text.py usage GRAFTED.safetensors TOKENIZER_FOLDER CORPUS [--batch 32]

Batches are formed as pkm-convert forms them: pools of 16 batches sorted by token count, each batch padded to
its longest. `usage` runs the grafted model (HF BertModel + the spec's memories computed as XLM's pq_fast) and
accumulates per-slot weights and counts like pkm-convert's UsageAccumulator. Prints JSON: tokens, seconds, tokens/s.
"""
import argparse, json, os, sys, time

import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pools(path, size):
    lines = [line.rstrip("\n") for line in open(path, encoding="utf-8")]
    lines = [line for line in lines if line.strip()]
    for start in range(0, len(lines), size):
        yield lines[start:start + size]


def batches(tokenizer, corpus, batch):
    for pool in pools(corpus, batch * 16):
        encodings = tokenizer.encode_batch(pool)
        order = sorted(range(len(pool)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch):
            chosen = [encodings[i] for i in order[start:start + batch]]
            longest = max(len(e.ids) for e in chosen)
            ids = torch.tensor([e.ids + [0] * (longest - len(e.ids)) for e in chosen])
            mask = torch.tensor([[1] * len(e.ids) + [0] * (longest - len(e.ids)) for e in chosen])
            yield ids, mask


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["run", "usage"])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import BertModel
    if args.job == "run":
        folder, corpus = args.paths
        model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
        tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        memories = {}
    else:
        checkpoint, folder, corpus = args.paths
        import pkm_reference as ref
        from bench_forward import FastMemory
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(checkpoint, "pt") as f:
            config = json.loads(f.metadata()["config"])
        model = ref.build_model(config, add_pooling_layer=True)
        pkm = config["pkm"]
        for layer, mode in zip(pkm["layers"], pkm["modes"]):
            fast = FastMemory(config["hidden_size"], pkm["n_keys"], pkm["heads"], pkm["knn"], pkm["k_dim"], pkm["v_dim"],
                              pkm["query_batchnorm"], pkm["query_bias"], pkm["bn_eps"])
            ref.attach_memory(model, layer, mode, fast)
        state = load_file(checkpoint)
        model.load_state_dict(state, strict=False)
        model.eval()
        tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        memories = {layer: model.encoder.layer[layer].memory for layer in pkm["layers"]}
        slots = pkm["n_keys"] ** 2
        weights = {layer: torch.zeros(slots, dtype=torch.float64) for layer in memories}
        counts = {layer: torch.zeros(slots, dtype=torch.float64) for layer in memories}
        captured = {}

        def hook(layer):
            def capture(module, inputs, output):
                x = inputs[0].reshape(-1, module.input_dim)
                n, H, N, K, k = x.shape[0], module.heads, module.n_keys, module.k_dim, module.knn
                q = module.query_proj(x).view(n, H, K)
                s1 = torch.einsum("nhc,hmc->nhm", q[..., : K // 2], module.keys[:, 0])
                s2 = torch.einsum("nhc,hmc->nhm", q[..., K // 2:], module.keys[:, 1])
                t1, i1 = s1.topk(k, dim=-1)
                t2, i2 = s2.topk(k, dim=-1)
                grid = (t1[..., :, None] + t2[..., None, :]).reshape(n, H, k * k)
                ids = (i1[..., :, None] * N + i2[..., None, :]).reshape(n, H, k * k)
                scores, best = grid.topk(k, dim=-1)
                captured[layer] = (ids.gather(-1, best), torch.softmax(scores, dim=-1))
            return capture
        for layer, memory in memories.items():
            memory.register_forward_hook(hook(layer))
    tokenizer.no_padding()
    tokenizer.enable_truncation(128)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches(tokenizer, corpus, args.batch):
            out = model(input_ids=ids, attention_mask=mask)
            tokens += int(mask.sum())
            if memories:
                keep = mask.reshape(-1).bool()
                for layer in memories:
                    slot_ids, slot_weights = captured[layer]
                    slot_ids, slot_weights = slot_ids[keep].reshape(-1), slot_weights[keep].reshape(-1).double()
                    weights[layer].index_add_(0, slot_ids, slot_weights)
                    counts[layer].index_add_(0, slot_ids, torch.ones_like(slot_weights))
            else:
                out.pooler_output.norm(dim=-1)
    seconds = time.perf_counter() - start
    result = {"job": args.job, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds, "torch": torch.__version__}
    if memories:
        result["usage_percent"] = {str(layer): float((counts[layer] > 0).double().mean() * 100) for layer in memories}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
