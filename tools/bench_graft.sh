#!/usr/bin/env bash
# Graft benchmark (BENCHMARKS.md §3): pkm-convert graft → safetensors and → pkmz against a PyTorch
# script doing the same graft (tools/bench_graft.py) and against dd writing the same number of bytes
# with fsync. Each run under /usr/bin/time -v (wall time, peak RSS) and flock /tmp/swift-build.lock
# (never two builds or benchmarks at once on the shared machine).
#   tools/bench_graft.sh [BASE.safetensors] [WORK_DIR] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-bench-data/bert-base-random/model.safetensors}
WORK=${2:-bench-data/work}
RUNS=${3:-3}
BIN=${PKM_CONVERT:-.build/release/pkm-convert}
OPTIONS="--layers 4,8 --n-keys 512 --heads 4 --knn 32 --k-dim 256"
mkdir -p "$WORK"
LOCK=/tmp/swift-build.lock

measure() {  # label, command...
    local label=$1; shift
    local log; log=$(mktemp)
    flock "$LOCK" /usr/bin/time -v "$@" >"$log.out" 2>"$log"
    local wall rss
    wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
    rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
    printf '%-28s wall %8s  peak RSS %7.0f MB  load %s\n' "$label" "$wall" "$(echo "$rss / 1000" | bc -l)" "$(cut -d' ' -f1-3 /proc/loadavg)"
    rm -f "$log" "$log.out"
}

for run in $(seq "$RUNS"); do
    echo "--- run $run"
    measure "pkm-convert → safetensors" "$BIN" graft "$BASE" -o "$WORK/graft.safetensors" $OPTIONS
    BYTES=$(stat -c %s "$WORK/graft.safetensors")
    measure "pkm-convert → pkmz" "$BIN" graft "$BASE" -o "$WORK/graft.pkmz" $OPTIONS
    rm -f "$WORK/graft.pkmz"
    measure "torch → safetensors" python3 tools/bench_graft.py "$BASE" "$WORK/graft-torch.safetensors"
    rm -f "$WORK/graft-torch.safetensors" "$WORK/graft.safetensors"
    MIB=$(( (BYTES + 1048575) / 1048576 ))
    measure "dd $MIB MiB, conv=fsync" dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=$MIB conv=fsync status=none
    rm -f "$WORK/dd.bin"
done
