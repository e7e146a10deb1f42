"""MKL side of tools/bench_sgemm.sh: GFLOP/s of torch.mm (x @ w.T) on the BERT-base forward's GEMM shapes."""
import time

import torch

SHAPES = [(1024, 2304, 768), (1024, 768, 768), (1024, 3072, 768), (1024, 768, 3072), (128, 256, 768), (128, 256, 3072)]

for threads in (1, 2):
    torch.set_num_threads(threads)
    for m, n, k in SHAPES:
        a = torch.rand(m, k) - 0.5
        b = torch.rand(n, k) - 0.5
        c = torch.empty(m, n)
        flops = 2.0 * m * n * k
        repeats = 20 if flops > 1e9 else 400
        best = 1e30
        with torch.inference_mode():
            for r in range(repeats + 2):
                t0 = time.perf_counter()
                torch.mm(a, b.t(), out=c)
                t = time.perf_counter() - t0
                if r >= 2:
                    best = min(best, t)
        print(f"{m} {n} {k} mkl(t={threads}) {flops / best / 1e9:.1f}")
