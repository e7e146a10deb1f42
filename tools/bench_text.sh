#!/usr/bin/env bash
# Text throughput (issue 12): `run --text-file` and `usage --text-file` on the real MiniLM next to the same jobs in
# Python (transformers + tokenizers, tools/bench_text.py), same machine, same threads, one run.
#
#   python3 tools/real_bert_parity.py && python3 tools/make_text_corpus.py    # .real-model/, bench-data/corpus.txt
#   swift build -c release --product pkm-convert
#   tools/bench_text.sh [lines of the corpus, default 9000]
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${1:-9000}"
bin=.build/release/pkm-convert
model=.real-model/all-MiniLM-L6-v2
work=bench-data/work
mkdir -p "$work"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
head -n "$lines" bench-data/corpus.txt > "$work/corpus.txt"
[ -f "$work/minilm-pkm.pkmz" ] || "$bin" graft "$model" -o "$work/minilm-pkm.pkmz" --layers 2,4 --seed 1 >/dev/null
[ -f "$work/minilm-pkm.safetensors" ] || "$bin" convert "$work/minilm-pkm.pkmz" -o "$work/minilm-pkm.safetensors" >/dev/null
now() { python3 -c "import time; print(time.perf_counter())"; }
t0=$(now); "$bin" run "$model" --text-file "$work/corpus.txt" --batch-size 32 --json > "$work/swift-run.json"; t1=$(now)
python3 tools/bench_text.py run "$model" "$work/corpus.txt" > "$work/python-run.json"
t2=$(now); "$bin" usage "$work/minilm-pkm.pkmz" --text-file "$work/corpus.txt" --batch-size 32 --json --plot "$work/usage.svg" > "$work/swift-usage.json"; t3=$(now)
python3 tools/bench_text.py usage "$work/minilm-pkm.safetensors" "$model" "$work/corpus.txt" > "$work/python-usage.json"
python3 - "$work" "$t0" "$t1" "$t2" "$t3" "$lines" <<'PY'
import json, os, sys
work, t0, t1, t2, t3, lines = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
swift_run = json.load(open(f"{work}/swift-run.json")); py_run = json.load(open(f"{work}/python-run.json"))
swift_usage = json.load(open(f"{work}/swift-usage.json")); py_usage = json.load(open(f"{work}/python-usage.json"))
usage_tokens = swift_usage["layers"][0]["tokens"]
print(f"| job ({lines} lines, batches of 32) | pkm-convert tokens/s | Python tokens/s | ratio |")
print("|---|---|---|---|")
print(f"| run --text-file (MiniLM), forward only | {swift_run['tokensPerSecond']:.0f} | {py_run['tokens_per_second']:.0f} | {swift_run['tokensPerSecond'] / py_run['tokens_per_second']:.2f}× |")
print(f"| run --text-file, whole process (load + tokenize + forward) | {swift_run['tokens'] / (t1 - t0):.0f} | — | |")
print(f"| usage --text-file (MiniLM + 2 memories of 262,144 slots), whole process | {usage_tokens / (t3 - t2):.0f} | {py_usage['tokens_per_second']:.0f} (forward + accumulate only) | {usage_tokens / (t3 - t2) / py_usage['tokens_per_second']:.2f}× |")
print()
print(f"tokens: pkm-convert run {swift_run['tokens']}, Python run {py_run['tokens']}; usage {usage_tokens} vs {py_usage['tokens']}")
print("usage % per layer: pkm-convert " + ", ".join(f"{l['layer']}: {l['usagePercent']:.2f}" for l in swift_usage["layers"])
      + "; Python " + ", ".join(f"{k}: {v:.2f}" for k, v in py_usage["usage_percent"].items()))
print(f"load average at the end: {os.getloadavg()[0]:.2f}")
PY
