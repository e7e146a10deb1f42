#!/usr/bin/env bash
# What the release build's flags cost or buy, both sides in one run on the same machine (issue 9, item 5):
#   A = the default release build (no unsafe flags: every module -O, parsers keep their checks)
#   B = PKM_BENCH_UNCHECKED=1 (the model's kernels, PKMModel, with -Ounchecked)
#   C = an older build to compare with, e.g. the commit before the change (-Ounchecked on every module)
# Forward: `run --random-inputs 8x128 --repeat N` on bench-data/forward/{plain,memory} (tools/bench_forward.py
# writes them), A and B interleaved. Formats: hyperfine of `convert → pkmz` and `inspect --verify-data` on the
# two bench checkpoints, A and C in one hyperfine call.
#
#   swift build -c release --product pkm-convert                                      # A: .build/release
#   PKM_BENCH_UNCHECKED=1 swift build -c release --product pkm-convert --scratch-path .build-unchecked   # B
#   git worktree add /tmp/before <commit> && (cd /tmp/before && swift build -c release --product pkm-convert)  # C
#   tools/bench_build_flags.sh A_BIN B_BIN C_BIN [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
a="$1"; b="$2"; c="$3"; runs="${4:-5}"
work=bench-data/work
mkdir -p "$work"
threads=2
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
echo "| model (batch 8 × 128) | A: default -O, median / min s | B: kernels -Ounchecked, median / min s | B / A (min) |"
echo "|---|---|---|---|"
for variant in plain memory; do
    for round in 1 2; do   # interleaved: A B A B
        "$a" run "bench-data/forward/$variant" --random-inputs 8x128 --repeat "$runs" --json > "$work/flags-a-$variant-$round.json"
        "$b" run "bench-data/forward/$variant" --random-inputs 8x128 --repeat "$runs" --json > "$work/flags-b-$variant-$round.json"
    done
    python3 - "$variant" "$work" <<'PY'
import json, sys
variant, work = sys.argv[1], sys.argv[2]
def best(side):
    runs = [json.load(open(f"{work}/flags-{side}-{variant}-{r}.json"))["timing"] for r in (1, 2)]
    return min(r["medianSeconds"] for r in runs), min(r["minimumSeconds"] for r in runs)
(am, an), (bm, bn) = best("a"), best("b")
print(f"| {variant} | {am:.3f} / {an:.3f} | {bm:.3f} / {bn:.3f} | {bn / an:.3f} |")
PY
done
echo
echo "| checkpoint | command | A: default (this build) s | C: older build s | A / C |"
echo "|---|---|---|---|---|"
for checkpoint in bench-data/all-MiniLM-L6-v2/model.safetensors bench-data/bert-base-random/model.safetensors; do
    name=$(basename "$(dirname "$checkpoint")")
    "$a" convert "$checkpoint" -o "$work/$name-a.pkmz" >/dev/null
    "$c" convert "$checkpoint" -o "$work/$name-c.pkmz" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/flags-convert.json" \
        "$a convert $checkpoint -o $work/$name-a.pkmz" "$c convert $checkpoint -o $work/$name-c.pkmz" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/flags-decode.json" \
        "$a inspect --verify-data $work/$name-a.pkmz" "$c inspect --verify-data $work/$name-c.pkmz" >/dev/null
    python3 - "$name" "$work" <<'PY'
import json, sys
name, work = sys.argv[1], sys.argv[2]
for label, file in (("convert → pkmz", "flags-convert.json"), ("inspect --verify-data", "flags-decode.json")):
    a, c = (r["median"] for r in json.load(open(f"{work}/{file}"))["results"])
    print(f"| {name} | {label} | {a:.3f} | {c:.3f} | {a / c:.3f} |")
PY
done
python3 -c "import os; print(f'\nload average at the end: {os.getloadavg()[0]:.2f}')"
