#!/usr/bin/env bash
# Forward benchmark (issue: Swift PKM-BERT): tokens/s of the Swift forward pass next to PyTorch CPU, same machine,
# same thread count, same weights. BERT-base shape, batch 8 x sequence 128, with and without one paper-sized memory.
#
#   swift build -c release --product pkm-convert
#   tools/bench_forward.sh [threads] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
runs="${2:-5}"
bin=.build/release/pkm-convert
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
python3 tools/bench_forward.py --threads "$threads" --runs "$runs" > bench-data/forward/pytorch.json
for variant in plain memory; do
    taskset -c 0-$((threads - 1)) "$bin" run "bench-data/forward/$variant" --random-inputs 8x128 --repeat "$runs" --json \
        > "bench-data/forward/swift-$variant.json"
done
python3 - "$threads" <<'PY'
import json, sys
torch = json.load(open("bench-data/forward/pytorch.json"))
swift = {v: json.load(open(f"bench-data/forward/swift-{v}.json"))["timing"] for v in ("plain", "memory")}
print(f"| model | PyTorch {torch['torch']} s/forward (median / min) | PyTorch tokens/s (best) | Swift s/forward (median / min) | Swift tokens/s (best) | Swift / PyTorch speed (best) |")
print("|---|---|---|---|---|---|")
for variant, label in (("plain", "BERT-base"), ("memory", "BERT-base + PKM (layer 6, residual)")):
    t, tmin = torch[f"{variant}_seconds"], torch[f"{variant}_min_seconds"]
    s, smin = swift[variant]["medianSeconds"], swift[variant]["minimumSeconds"]
    print(f"| {label} | {t:.3f} / {tmin:.3f} | {1024 / tmin:.0f} | {s:.3f} / {smin:.3f} | {1024 / smin:.0f} | {tmin / smin:.2f}x |")
parts = swift["memory"]["componentSeconds"]
ffn_per_layer = parts["feed_forward"] / 12
print()
print(f"Swift components per forward (memory model): " + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
print(f"Swift memory layer {parts['memory']:.3f} s vs one FFN block {ffn_per_layer:.3f} s: ratio {parts['memory'] / ffn_per_layer:.2f}")
print(f"PyTorch memory layer {torch['memory_layer_seconds']:.3f} s vs one FFN block {torch['ffn_block_seconds']:.3f} s: ratio {torch['memory_layer_seconds'] / torch['ffn_block_seconds']:.2f}")
import os
print(f"threads {sys.argv[1]}; load average at the end: {os.getloadavg()[0]:.2f}")
PY
