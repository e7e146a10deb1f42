#!/usr/bin/env bash
# Load time (issue 14 part 5): from process start to the first forward output for a 1.24 GB PKM checkpoint
# (BERT-base + one paper-sized memory, bench-data/forward/memory from tools/bench_forward.py), in safetensors and
# pkmz, next to transformers + torch loading the same safetensors (tools/pkm_reference.py's model), one run.
#
#   python3 tools/bench_forward.py --runs 1        # once: bench-data/forward/{plain,memory}
#   swift build -c release --product pkm-convert
#   tools/bench_load.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
bin=.build/release/pkm-convert
work=bench-data/work
mkdir -p "$work"
model=bench-data/forward/memory/model.safetensors
[ -f "$work/memory-model.pkmz" ] || "$bin" convert "$model" -o "$work/memory-model.pkmz" >/dev/null
cat > "$work/load_torch.py" <<'PY'
import json, os, sys, time
start = time.perf_counter()
import torch
from safetensors import safe_open
from safetensors.torch import load_file
sys.path.insert(0, "tools")
import pkm_reference as ref
path = sys.argv[1]
with safe_open(path, "pt") as f:
    config = json.loads(f.metadata()["config"])
torch.set_num_threads(2)
model = ref.build_model(config)
model.load_state_dict(load_file(path), strict=False)
with torch.inference_mode():
    out = model(input_ids=torch.tensor([[101, 7592, 102]]))
print(float(out.last_hidden_state[0, 0, 0]))
PY
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/load.json" \
    "$bin run $model --input-ids 101,7592,102" \
    "$bin run $work/memory-model.pkmz --input-ids 101,7592,102" \
    "python3 $work/load_torch.py $model" >/dev/null
python3 - "$work/load.json" "$(stat -c %s "$model")" "$(stat -c %s "$work/memory-model.pkmz")" <<'PY'
import json, os, sys
results = json.load(open(sys.argv[1]))["results"]
labels = [f"pkm-convert run, safetensors ({int(sys.argv[2]) / 1e9:.2f} GB)", f"pkm-convert run, pkmz ({int(sys.argv[3]) / 1e9:.2f} GB)",
          "transformers + torch, same safetensors (import, build, load_state_dict, forward)"]
print("| process start → first forward output | median s | min s |")
print("|---|---|---|")
for label, r in zip(labels, results):
    print(f"| {label} | {r['median']:.3f} | {r['min']:.3f} |")
print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
PY
