#!/usr/bin/env python3
"""PyTorch side of tools/bench_graft.sh: the same graft as `pkm-convert graft --layers 4,8 --n-keys 512
--heads 4 --knn 32 --k-dim 256` done with torch's own initialisers, then saved with safetensors.

Loads the base safetensors, creates per layer: keys [heads, 2, n_keys, k_dim/2] uniform ±1/sqrt(k_dim/2),
values [n_keys², hidden] normal std hidden^-0.5 (nn.EmbeddingBag-style init as XLM does), the query
nn.Linear(hidden, heads·k_dim) with its default init, batchnorm (weight 1, bias 0, mean 0, var 1,
num_batches_tracked 0); then save_file and fsync (pkm-convert fsyncs too). Prints the wall time.
"""
import argparse, math, os, time

import torch
from safetensors.torch import load_file, save_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("output")
    parser.add_argument("--layers", default="4,8")
    parser.add_argument("--n-keys", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--k-dim", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    tensors = load_file(args.base)
    hidden = tensors["embeddings.word_embeddings.weight"].shape[1] if "embeddings.word_embeddings.weight" in tensors else 768
    h, n, k = args.heads, args.n_keys, args.k_dim
    for layer in map(int, args.layers.split(",")):
        p = f"encoder.layer.{layer}.memory."
        bound = 1 / math.sqrt(k / 2)
        tensors[p + "keys"] = torch.empty(h, 2, n, k // 2).uniform_(-bound, bound)
        tensors[p + "values.weight"] = torch.empty(n * n, hidden).normal_(0, hidden ** -0.5)
        query = torch.nn.Linear(hidden, h * k)
        tensors[p + "query_proj.query_mlps.0.weight"] = query.weight.detach()
        tensors[p + "query_proj.query_mlps.0.bias"] = query.bias.detach()
        norm = torch.nn.BatchNorm1d(h * k)
        for name, value in norm.state_dict().items():
            tensors[p + "query_proj.query_mlps.1." + name] = value
    save_file(tensors, args.output, metadata={"format": "pt"})
    descriptor = os.open(args.output, os.O_RDONLY)
    os.fsync(descriptor)
    os.close(descriptor)
    print(f"torch graft: {time.perf_counter() - start:.2f} s, {os.path.getsize(args.output)} bytes, torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
