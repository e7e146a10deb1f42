#!/usr/bin/env bash
# Coverage-guided fuzzing of the safetensors, pkmz and PyTorch pickle readers and of the config decoder with libFuzzer
# (swiftc -sanitize=fuzzer,address). See RELIABILITY.md for the figures of the recorded run.
#
#   scripts/fuzz-libfuzzer.sh [seconds per target] [target ...]
#
# Targets: safetensors, pkmz, pkmz-header, pickle, pickle-vm, config, zip, json (default: all eight), 60 s each by default.
# The HDF5 reader is not fuzzed here: libhdf5 itself is not instrumented and can crash on damaged
# metadata, which would stop libFuzzer at the first such input; it is fuzzed in subprocesses by
# FuzzTests.swift instead (PKM_FUZZ_ITERATIONS=10000 swift test --filter "FuzzTests.*hdf5").
#
# How it builds (the package manifest has no fuzzing target, so nothing here touches Package.swift):
#   1. `swift build --sanitize fuzzer --sanitize address --target …` in its own scratch path
#      (.build-fuzz), which instruments PKMTensor, PKMFormats (with ZIPFoundation) and PKMModel for
#      coverage and ASan (PKMFormats links no libhdf5 since the module split);
#   2. swiftc links Tests/Fuzz/FuzzTarget.swift (which defines LLVMFuzzerTestOneInput) against
#      those object files, libFuzzer's main and the system libraries.
# Seeds come from the committed fixtures (pkmz seeds are converted from them with the package's own
# writer through the built CLI); crashes, leaks and timeouts go to .build-fuzz/artifacts/.
# Replay one input with:  PKM_FUZZ_TARGET=pkmz PKM_FUZZ_VERBOSE=1 .build-fuzz/pkm-fuzz <file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors pkmz pkmz-header pickle pickle-vm config zip json)
scratch=.build-fuzz
work="$scratch/fuzz"
mkdir -p "$work" "$scratch/artifacts"

echo "== building instrumented libraries in $scratch"
for module in ZIPFoundation CPKMKernels PKMTensor PKMFormats PKMModel; do   # each one: --target builds only its own objects
    swift build --scratch-path "$scratch" --sanitize fuzzer --sanitize address --target "$module" >/dev/null
done
debug="$scratch/debug"
echo "== linking $scratch/pkm-fuzz"
swiftc -sanitize=fuzzer,address -parse-as-library -g -Onone -suppress-warnings -enable-testing \
    -I "$debug/Modules" \
    -Xcc -fmodule-map-file=Sources/CZstd/module.modulemap -Xcc -fmodule-map-file=Sources/COpenSSL/module.modulemap \
    -Xcc -fmodule-map-file=Sources/CBLAS/module.modulemap -Xcc -fmodule-map-file=Sources/CSystemShims/module.modulemap \
    -Xcc -fmodule-map-file="$scratch/checkouts/ZIPFoundation/Sources/CZLib/module.modulemap" \
    -Xcc -fmodule-map-file="$debug/CPKMKernels.build/module.modulemap" -Xcc -I -Xcc Sources/CPKMKernels/include \
    $(pkg-config --cflags-only-I openblas | sed 's/-I/-Xcc -I/g') \
    Tests/Fuzz/FuzzTarget.swift "$debug"/ZIPFoundation.build/*.swift.o "$debug"/PKMTensor.build/*.swift.o \
    "$debug"/PKMFormats.build/*.swift.o "$debug"/PKMModel.build/*.swift.o "$debug"/CPKMKernels.build/*.o \
    $(pkg-config --libs libzstd libcrypto openblas zlib) \
    -o "$scratch/pkm-fuzz" 2> >(grep -v "Cannot export local symbol" >&2)

echo "== seed corpora from fixtures/"
cli="${PKM_CONVERT:-}"   # any debug or release build of the CLI will do
for candidate in .build/debug/pkm-convert .build-hard/debug/pkm-convert "$scratch/cli/debug/pkm-convert"; do
    [ -n "$cli" ] || { [ -x "$candidate" ] && cli="$candidate"; }
done
if [ -z "$cli" ]; then
    swift build --scratch-path "$scratch/cli" --product pkm-convert >/dev/null
    cli="$scratch/cli/debug/pkm-convert"
fi
for target in safetensors pkmz pkmz-header pickle pickle-vm config zip json; do mkdir -p "$work/seeds-$target" "$work/corpus-$target"; done
n=0
for f in fixtures/safetensors/*.safetensors fixtures/safetensors/sharded/*.safetensors fixtures/models/*/model.safetensors; do
    n=$((n + 1)); cp "$f" "$work/seeds-safetensors/$n-$(basename "$f")"
done
for f in fixtures/safetensors/*.safetensors fixtures/hdf5/flat.h5 fixtures/hdf5/float16.h5 fixtures/hdf5/bfloat16.h5 \
         fixtures/hdf5/strings.h5 fixtures/hdf5/nested.h5; do
    name="$(basename "${f%.*}")"
    "$cli" convert "$f" -o "$work/seeds-pkmz/$name.pkmz" >/dev/null
    "$cli" convert "$f" -o "$work/seeds-pkmz/$name-plain.pkmz" --no-byte-grouping --level 1 >/dev/null
done
for f in "$work"/seeds-pkmz/*.pkmz; do   # the header JSON of each pkmz seed (trailer: u64 offset, u64 length)
    size=$(stat -c %s "$f")
    offset=$(od -An -t u8 -j $((size - 32)) -N 8 "$f" | tr -d ' ')
    length=$(od -An -t u8 -j $((size - 24)) -N 8 "$f" | tr -d ' ')
    tail -c +$((offset + 1)) "$f" | head -c "$length" > "$work/seeds-pkmz-header/$(basename "$f" .pkmz).json"
done
for d in fixtures/models/*/; do cp "$d/config.json" "$work/seeds-config/$(basename "$d").json"; done
for f in fixtures/pickle/*.pt fixtures/pickle/*.pth fixtures/pickle/*.ckpt fixtures/models/*/*.bin; do
    n=$((n + 1)); cp "$f" "$work/seeds-pickle/$n-$(basename "$f")"
    # The data.pkl of each zip seed (unzip -p prints one entry), for the pickle machine alone.
    { unzip -Z1 "$f" 2>/dev/null || true; } | { grep '/data.pkl$' || true; } | while read -r entry; do unzip -p "$f" "$entry" > "$work/seeds-pickle-vm/$n.pkl"; done
    cp "$f" "$work/seeds-zip/$n-$(basename "$f")"
done
for f in Tests/PKMFormatsTests/Regressions/Inputs/*.pt; do cp "$f" "$work/seeds-zip/"; done
for f in fixtures/models/*/config.json fixtures/models/*/tokenizer.json; do [ -f "$f" ] && cp "$f" "$work/seeds-json/$(echo "$f" | tr / _)"; done

status=0
for target in "${targets[@]}"; do
    echo "== $target: $seconds s"
    log="$work/$target.log"
    set +e
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt" PKM_FUZZ_TARGET="$target" PKM_FUZZ_SCRATCH=/dev/shm "$scratch/pkm-fuzz" "$work/corpus-$target" "$work/seeds-$target" \
        -max_total_time="$seconds" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target-" > "$log" 2>&1
    result=$?
    set -e
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|ERROR" "$log" || true
    if [ $result -ne 0 ]; then echo "!! $target: libFuzzer exited $result; see $log and $scratch/artifacts/"; status=1; fi
done
exit $status
