#!/usr/bin/env bash
# Reading a ~440 MB pytorch_model.bin (torch.save zip container) into pkmz with pkm-convert, next to the
# usual Python route (`torch.load` + `safetensors.torch.save_file`), same machine, one run, with peak RSS.
#
#   python3 tools/make_bench_checkpoints.py      # once: bench-data/bert-base-random (438 MB float32)
#   swift build -c release --product pkm-convert
#   tools/bench_pickle.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
bin=.build/release/pkm-convert
work=bench-data/work
mkdir -p "$work"
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)"; exit 2; }
source=bench-data/bert-base-random/model.safetensors
pickle="$work/pytorch_model.bin"
[ -f "$pickle" ] || python3 - "$source" "$pickle" <<'PY'
import sys, torch
from safetensors.torch import load_file
torch.save(load_file(sys.argv[1]), sys.argv[2])
PY
cat > "$work/torch_to_safetensors.py" <<'PY'
import sys, torch
from safetensors.torch import save_file
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[2], metadata={"format": "pt"})
PY
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/pickle.json" \
    "$bin convert $pickle -o $work/from-pickle.pkmz" \
    "$bin convert $pickle -o $work/from-pickle.safetensors" \
    "python3 $work/torch_to_safetensors.py $pickle $work/python.safetensors" >/dev/null
rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
pkmz_rss=$(rss "$bin" convert "$pickle" -o "$work/from-pickle.pkmz")
st_rss=$(rss "$bin" convert "$pickle" -o "$work/from-pickle.safetensors")
py_rss=$(rss python3 "$work/torch_to_safetensors.py" "$pickle" "$work/python.safetensors")
# The pkm-convert and Python safetensors outputs hold the same tensors, bit for bit.
"$bin" inspect "$work/from-pickle.safetensors" --json > /dev/null
python3 - "$work/pickle.json" "$(stat -c %s "$pickle")" "$pkmz_rss" "$st_rss" "$py_rss" "$work" <<'PY'
import json, sys
from safetensors.numpy import load_file
results = json.load(open(sys.argv[1]))["results"]
size = int(sys.argv[2])
rss = [int(x) / 1024 for x in sys.argv[3:6]]
a, b = load_file(sys.argv[6] + "/from-pickle.safetensors"), load_file(sys.argv[6] + "/python.safetensors")
assert a.keys() == b.keys() and all((a[k].tobytes() == b[k].tobytes()) for k in a), "outputs differ"
labels = ["pkm-convert convert → pkmz", "pkm-convert convert → safetensors", "torch.load + save_file (Python)"]
print(f"| route ({size / 1e6:.0f} MB pytorch_model.bin) | median s | min s | peak RSS MB |")
print("|---|---|---|---|")
for label, result, peak in zip(labels, results, rss):
    print(f"| {label} | {result['median']:.3f} | {result['min']:.3f} | {peak:.0f} |")
import os
print(f"\nsafetensors outputs of both routes bit-identical: yes; load average {os.getloadavg()[0]:.2f}")
PY
