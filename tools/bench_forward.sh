#!/usr/bin/env bash
# Forward benchmark (issue: Swift PKM-BERT): tokens/s of the Swift forward pass next to PyTorch CPU, same machine,
# same thread count, same weights. BERT-base shape, batch 8 x sequence 128, with and without one paper-sized memory.
#
#   swift build -c release --product pkm-convert
#   tools/bench_forward.sh [threads] [runs]
#
# ONNX Runtime (pip install onnxruntime onnx) is timed on the plain model when it is installed. MODELS=DIR reads the
# Swift side's checkpoints from DIR (exported earlier by the same script, same seed) and leaves them untouched;
# results go to OUT (default bench-data/forward).
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
runs="${2:-5}"
bin=.build/release/pkm-convert
models="${MODELS:-bench-data/forward}"
out="${OUT:-bench-data/forward}"
mkdir -p "$out"
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
flags=()
if [ "$models" != "bench-data/forward" ]; then flags+=(--skip-export); fi
if python3 -c "import onnxruntime, onnx" 2>/dev/null; then flags+=(--onnx); fi
python3 tools/bench_forward.py --threads "$threads" --runs "$runs" --out "$out" "${flags[@]}" > "$out/pytorch.json"
for variant in plain memory; do
    taskset -c 0-$((threads - 1)) "$bin" run "$models/$variant" --random-inputs 8x128 --repeat "$runs" --json \
        > "$out/swift-$variant.json"
done
python3 - "$threads" "$out" <<'PY'
import json, sys
out = sys.argv[2]
torch = json.load(open(f"{out}/pytorch.json"))
swift = {v: json.load(open(f"{out}/swift-{v}.json"))["timing"] for v in ("plain", "memory")}
print(f"| model | PyTorch {torch['torch']} s/forward (median / min) | PyTorch tokens/s (best) | Swift s/forward (median / min) | Swift tokens/s (best) | Swift / PyTorch speed (best) |")
print("|---|---|---|---|---|---|")
for variant, label in (("plain", "BERT-base"), ("memory", "BERT-base + PKM (layer 6, residual)")):
    t, tmin = torch[f"{variant}_seconds"], torch[f"{variant}_min_seconds"]
    s, smin = swift[variant]["medianSeconds"], swift[variant]["minimumSeconds"]
    print(f"| {label} | {t:.3f} / {tmin:.3f} | {1024 / tmin:.0f} | {s:.3f} / {smin:.3f} | {1024 / smin:.0f} | {tmin / smin:.2f}x |")
if "onnxruntime_seconds" in torch:
    o, omin = torch["onnxruntime_seconds"], torch["onnxruntime_min_seconds"]
    s = swift["plain"]
    print(f"| BERT-base, ONNX Runtime {torch['onnxruntime']} | {o:.3f} / {omin:.3f} | {1024 / omin:.0f} | {s['medianSeconds']:.3f} / {s['minimumSeconds']:.3f} | "
          f"{1024 / s['minimumSeconds']:.0f} | {o / s['medianSeconds']:.2f}x (median) |")
    print(f"ONNX Runtime max |Δ| against PyTorch: {torch['onnxruntime_max_abs_diff']:.3g}")
parts = swift["memory"]["componentSeconds"]
ffn_per_layer = parts["feed_forward"] / 12
print()
print(f"Swift components per forward (memory model): " + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
print(f"Swift memory layer {parts['memory']:.3f} s vs one FFN block {ffn_per_layer:.3f} s: ratio {parts['memory'] / ffn_per_layer:.2f}")
print(f"PyTorch memory layer {torch['memory_layer_seconds']:.3f} s vs one FFN block {torch['ffn_block_seconds']:.3f} s: ratio {torch['memory_layer_seconds'] / torch['ffn_block_seconds']:.2f}")
import os
print(f"threads {sys.argv[1]}; load average at the end: {os.getloadavg()[0]:.2f}")
PY
