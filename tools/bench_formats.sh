#!/usr/bin/env bash
# Format benchmark (issue: I/O foundation): pkmz size, conversion time and decode throughput,
# side by side with the zstd CLI (`zstd -3 -T2`) on the same raw bytes, in one run.
#
#   python3 tools/make_bench_checkpoints.py      # once: real MiniLM + BERT-base-shaped random checkpoint
#   swift build -c release --product pkm-convert
#   tools/bench_formats.sh [runs]                 # prints a Markdown table for BENCHMARKS.md
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
bin=.build/release/pkm-convert
work="${BENCH_WORK:-bench-data/work}"
mkdir -p "$work"
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)"; exit 2; }
command -v zstd >/dev/null || { echo "needs zstd (apt-get install zstd)"; exit 2; }

seconds() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['median'])" "$1"; }
size() { stat -c %s "$1"; }

# pkm-convert fsyncs its output before the atomic rename (a crash never leaves a half-written file
# under the final name); the zstd CLI does not. Both are timed: zstd alone, and zstd followed by
# `sync FILE` (fsync of its output), the like-for-like comparison.
# ZipNN (pip install zipnn; float32 mode, 2 threads) runs in the same loop through tools/bench_zipnn.py,
# which writes and fsyncs its output; its time includes starting Python and importing ZipNN.
python3 -c "import zipnn" 2>/dev/null || { echo "needs zipnn (pip install zipnn)"; exit 2; }
echo "| checkpoint | raw tensor bytes | pkmz / raw | zstd -3 / raw | ZipNN / raw (bit-exact) | convert s (pkmz, with fsync) | zstd -3 -T2 s | zstd + fsync s | time ratio (both fsync) | ZipNN + fsync s | pkmz decode GB/s | zstd -d GB/s | ZipNN decode GB/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
for checkpoint in bench-data/all-MiniLM-L6-v2/model.safetensors bench-data/bert-base-random/model.safetensors; do
    name=$(basename "$(dirname "$checkpoint")")
    raw=$("$bin" inspect "$checkpoint" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['tensorBytes'])")
    # The zstd CLI compresses exactly the tensor bytes: the safetensors data section (header stripped).
    header=$(python3 -c "import struct,sys; print(8+struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" "$checkpoint")
    tail -c +$((header + 1)) "$checkpoint" > "$work/$name.raw"
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/convert.json" \
        "$bin convert $checkpoint -o $work/$name.pkmz" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/zstd.json" \
        "zstd -3 -T2 -q -f $work/$name.raw -o $work/$name.raw.zst" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/zstdsync.json" \
        "sh -c 'zstd -3 -T2 -q -f $work/$name.raw -o $work/$name.raw.zst && sync $work/$name.raw.zst'" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/decode.json" \
        "$bin inspect --verify-data $work/$name.pkmz" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/unzstd.json" \
        "zstd -d -q -f $work/$name.raw.zst -o $work/$name.raw.out" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/zipnn.json" \
        "python3 tools/bench_zipnn.py compress $work/$name.raw $work/$name.znn 2" >/dev/null
    hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/unzipnn.json" \
        "python3 tools/bench_zipnn.py decompress $work/$name.znn $work/$name.raw.out 2" >/dev/null
    exact=$(python3 tools/bench_zipnn.py check "$work/$name.raw" "$work/$name.znn" | awk '{print $4}')
    pkmz=$(size "$work/$name.pkmz"); zst=$(size "$work/$name.raw.zst"); znn=$(size "$work/$name.znn")
    zipnntime=$(seconds "$work/zipnn.json"); unzipnn=$(seconds "$work/unzipnn.json")
    convert=$(seconds "$work/convert.json"); zstdtime=$(seconds "$work/zstd.json")
    decode=$(seconds "$work/decode.json"); unzstd=$(seconds "$work/unzstd.json"); zstdsync=$(seconds "$work/zstdsync.json")
    python3 - "$name" "$raw" "$pkmz" "$zst" "$convert" "$zstdtime" "$decode" "$unzstd" "$zstdsync" "$znn" "$zipnntime" "$unzipnn" "$exact" <<'PY'
import sys
name, raw, pkmz, zst = sys.argv[1], *map(int, sys.argv[2:5])
convert, zstdtime, decode, unzstd, zstdsync = map(float, sys.argv[5:10])
znn, zipnntime, unzipnn, exact = int(sys.argv[10]), float(sys.argv[11]), float(sys.argv[12]), sys.argv[13]
print(f"| {name} | {raw:,} | {pkmz/raw:.4f} | {zst/raw:.4f} | {znn/raw:.4f} ({exact}) | {convert:.3f} | {zstdtime:.3f} | {zstdsync:.3f} | {convert/zstdsync:.2f}x | {zipnntime:.3f} | {raw/decode/1e9:.2f} | {raw/unzstd/1e9:.2f} | {raw/unzipnn/1e9:.2f} |")
PY
    rm -f "$work/$name.raw.out"
done
echo
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); zstd $(zstd -V | grep -o 'v[0-9.]*'); runs $runs (median)"
