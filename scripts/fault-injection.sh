#!/usr/bin/env bash
# Fault injection against the built CLI (see RELIABILITY.md; Tests/PKMPipelineTests/FaultInjectionTests.swift
# runs a smaller version of the same checks inside `swift test`).
#
#   scripts/fault-injection.sh [path/to/pkm-convert] [kills per command, default 20]
#
# 1. SIGKILL at random moments of convert (to pkmz, safetensors, hdf5), import and graft on a synthetic
#    memory-free BERT checkpoint (about 21 MB, written by this script as safetensors); after each
#    kill: the destination is absent, or the previous file byte for byte, or a complete checkpoint
#    (only if the kill came after the commit), and the folder holds no other file (no `.pkm-tmp-*`).
# 2. A file-size limit (`ulimit -f` in a subshell with SIGXFSZ ignored) and, when this user may mount
#    one, a full 4 MiB tmpfs: exit status 2, exactly one `pkm-convert: error:` line, no output file,
#    the previous file intact, no temporary file.
set -uo pipefail
cd "$(dirname "$0")/.."
cli="${1:-}"
trials="${2:-20}"
if [ -z "$cli" ]; then
    for candidate in .build/debug/pkm-convert .build-hard/debug/pkm-convert .build/release/pkm-convert; do
        [ -x "$candidate" ] && { cli="$candidate"; break; }
    done
fi
[ -x "$cli" ] || { echo "build the CLI first: swift build --product pkm-convert" >&2; exit 64; }
cli="$(cd "$(dirname "$cli")" && pwd)/$(basename "$cli")"
work="$(mktemp -d "${TMPDIR:-/tmp}/pkm-fault-XXXXXX")"
trap 'umount "$work/full" 2>/dev/null; rm -rf "$work"' EXIT
export SWIFT_BACKTRACE=enable=no
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The synthetic source: a memory-free BERT (vocab 8192, hidden 256, 4 layers, about 21 MB of float32,
# random bits) written as safetensors by this script, with its config.json beside it.
base_folder="$work/base"
mkdir -p "$base_folder"
base="$base_folder/model.safetensors"
config="$base_folder/config.json"
vocab=8192; hidden=256; layers=4; heads=4; inter=1024; positions=512
cat > "$config" <<JSON
{"model_type": "bert", "vocab_size": $vocab, "hidden_size": $hidden, "num_hidden_layers": $layers,
 "num_attention_heads": $heads, "intermediate_size": $inter, "max_position_embeddings": $positions,
 "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_act": "gelu"}
JSON
entries=()
add() { entries+=("$1:$2"); }   # name, comma-separated shape
add embeddings.word_embeddings.weight "$vocab,$hidden"
add embeddings.position_embeddings.weight "$positions,$hidden"
add embeddings.token_type_embeddings.weight "2,$hidden"
add embeddings.LayerNorm.weight "$hidden"
add embeddings.LayerNorm.bias "$hidden"
for layer in $(seq 0 $((layers - 1))); do
    p="encoder.layer.$layer"
    for part in query key value; do add "$p.attention.self.$part.weight" "$hidden,$hidden"; add "$p.attention.self.$part.bias" "$hidden"; done
    add "$p.attention.output.dense.weight" "$hidden,$hidden"; add "$p.attention.output.dense.bias" "$hidden"
    add "$p.attention.output.LayerNorm.weight" "$hidden"; add "$p.attention.output.LayerNorm.bias" "$hidden"
    add "$p.intermediate.dense.weight" "$inter,$hidden"; add "$p.intermediate.dense.bias" "$inter"
    add "$p.output.dense.weight" "$hidden,$inter"; add "$p.output.dense.bias" "$hidden"
    add "$p.output.LayerNorm.weight" "$hidden"; add "$p.output.LayerNorm.bias" "$hidden"
done
json="{"
offset=0
for entry in "${entries[@]}"; do
    name="${entry%%:*}"; shape="${entry#*:}"
    count=1; for dimension in ${shape//,/ }; do count=$((count * dimension)); done
    end=$((offset + count * 4))
    [ "$json" = "{" ] || json+=","
    json+="\"$name\":{\"dtype\":\"F32\",\"shape\":[$shape],\"data_offsets\":[$offset,$end]}"
    offset=$end
done
json+="}"
while [ $(( ${#json} % 8 )) -ne 0 ]; do json+=" "; done
length=${#json}
{
    for shift in 0 8 16 24 32 40 48 56; do printf "\\x$(printf %02x $(( (length >> shift) & 255 )))"; done
    printf '%s' "$json"
    head -c "$offset" /dev/urandom
} > "$base"
echo "synthetic checkpoint: $(stat -c %s "$base") bytes, $((${#entries[@]})) tensors"
"$cli" inspect "$base" >/dev/null || { echo "the synthetic checkpoint does not open" >&2; exit 1; }

now() { date +%s.%N; }
is_complete() {  # the file opens and every tensor reads (pkmz: every checksum)
    "$cli" inspect --verify-data "$1" >/dev/null 2>&1
}
leftovers() {  # entries of $1 other than the names given
    local folder="$1"; shift
    local entry keep
    for entry in $(ls -A "$folder"); do
        keep=0
        for name in "$@"; do [ "$entry" = "$name" ] && keep=1; done
        [ $keep -eq 1 ] || echo "$entry"
    done
}

run_kills() {  # label, output name, command words (SRC and DST are substituted)
    local label="$1" output="$2"; shift 2
    local folder="$work/kill-$output"
    mkdir -p "$folder"
    cp "$base" "$folder/source.safetensors"
    cp "$config" "$folder/config.json"
    local args=()
    for word in "$@"; do
        word="${word//SRC/$folder/source.safetensors}"
        args+=("${word//DST/$folder/$output}")
    done
    local start end seconds
    start=$(now)
    "$cli" "${args[@]}" >/dev/null 2>"$work/stderr" || { fail "$label: undisturbed run failed: $(cat "$work/stderr")"; return; }
    end=$(now)
    seconds=$(echo "$end - $start" | bc)
    is_complete "$folder/$output" || fail "$label: undisturbed output incomplete"
    rm -f "$folder/$output"
    local absent=0 previous_ok=0 complete=0
    for trial in $(seq 1 "$trials"); do
        local previous=""
        if [ $((trial % 2)) -eq 0 ]; then  # a previous file that must survive untouched
            head -c 4096 /dev/urandom > "$folder/$output"
            previous="$(sha256sum < "$folder/$output")"
        fi
        local delay
        delay=$(echo "scale=4; $seconds * 1.1 * $RANDOM / 32767" | bc)
        "$cli" "${args[@]}" >/dev/null 2>&1 &
        local pid=$!
        sleep "$delay"
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        local extra
        extra="$(leftovers "$folder" source.safetensors config.json "$output")"
        [ -z "$extra" ] || fail "$label trial $trial (kill at ${delay}s): left $extra"
        if [ -e "$folder/$output" ]; then
            if [ -n "$previous" ] && [ "$(sha256sum < "$folder/$output")" = "$previous" ]; then
                previous_ok=$((previous_ok + 1))
            elif is_complete "$folder/$output"; then
                complete=$((complete + 1))
            else
                fail "$label trial $trial (kill at ${delay}s): damaged destination"
            fi
            rm -f "$folder/$output"
        else
            [ -z "$previous" ] || fail "$label trial $trial: the previous file disappeared"
            absent=$((absent + 1))
        fi
    done
    echo "SIGKILL $label: $trials kills over ${seconds}s runs -> absent $absent, previous intact $previous_ok, complete new file $complete"
}

run_kills "convert -> pkmz" out.pkmz convert SRC -o DST
run_kills "convert -> safetensors" out.safetensors convert SRC -o DST
run_kills "convert -> hdf5" out.h5 convert SRC -o DST
run_kills "import -> pkmz" imported.pkmz import SRC -o DST
run_kills "graft -> safetensors" grafted.safetensors graft SRC -o DST --layers 1,3 --n-keys 64 --heads 2 --knn 8 --k-dim 32
run_kills "graft -> hdf5" grafted.h5 graft SRC -o DST --layers 0 --n-keys 64 --heads 2 --knn 8 --k-dim 32

check_failed_write() {  # label, folder, output, with-previous (0/1), command prefix...
    local label="$1" folder="$2" output="$3" with_previous="$4"; shift 4
    mkdir -p "$folder"
    rm -f "$folder/$output"
    local previous=""
    if [ "$with_previous" = 1 ]; then
        head -c 1000 /dev/urandom > "$folder/$output"
        previous="$(sha256sum < "$folder/$output")"
    fi
    "$@" "$folder/$output" >/dev/null 2>"$work/stderr"
    local status=$?
    local lines
    lines=$(grep -c . "$work/stderr")
    [ "$status" -eq 2 ] || fail "$label: exit $status (expected 2): $(cat "$work/stderr")"
    [ "$lines" -eq 1 ] && grep -q '^pkm-convert: error: ' "$work/stderr" || fail "$label: stderr is not one error line: $(cat "$work/stderr")"
    if [ -n "$previous" ]; then
        [ "$(sha256sum < "$folder/$output")" = "$previous" ] || fail "$label: the previous file changed"
    else
        [ ! -e "$folder/$output" ] || fail "$label: a partial output was left"
    fi
    echo "$label: exit $status, $(cat "$work/stderr" | cut -c1-160)"
}

for limit in 1 64 4096; do
    for output in out.pkmz out.safetensors out.h5; do
        for with_previous in 0 1; do
            folder="$work/limit-$limit-$output-$with_previous"
            check_failed_write "ulimit -f ${limit} KiB, $output, previous $with_previous" "$folder" "$output" "$with_previous" \
                bash -c "trap '' XFSZ; ulimit -f $limit; exec \"\$0\" convert \"\$1\" -o \"\$2\"" "$cli" "$base"
            extra="$(leftovers "$folder" "$output")"
            [ -z "$extra" ] || fail "ulimit -f $limit, $output: left $extra"
        done
    done
done

mkdir -p "$work/full"
if mount -t tmpfs -o size=4m tmpfs "$work/full" 2>/dev/null; then
    dd if=/dev/zero of="$work/full/filler" bs=1k count=3000 status=none 2>/dev/null
    for output in out.pkmz out.safetensors out.h5; do
        for with_previous in 0 1; do
            check_failed_write "full 4 MiB tmpfs, $output, previous $with_previous" "$work/full" "$output" "$with_previous" \
                "$cli" convert "$base" -o
            extra="$(leftovers "$work/full" filler "$output")"
            [ -z "$extra" ] || fail "full tmpfs, $output: left $extra"
            rm -f "$work/full/$output"
        done
    done
    umount "$work/full"
else
    echo "full disk: SKIPPED (this user cannot mount a tmpfs); the ulimit -f checks above cover the same code paths"
fi

if [ $failures -eq 0 ]; then echo "fault injection: all checks passed"; else echo "fault injection: $failures failures"; fi
[ $failures -eq 0 ]
