#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and ThreadSanitizer, each in its own scratch path
# (.build-asan, .build-tsan) so neither disturbs the ordinary debug build. See RELIABILITY.md.
#
#   scripts/sanitizers.sh [address|thread ...] [-- extra swift test arguments, e.g. --filter PKMFormatsTests]
#
# Notes
# - LeakSanitizer is off in the suite (detect_leaks=0): under Swift it reports objects that are plainly
#   reachable (static `let` tables, Data held in enums) because Swift packs tag bits into pointers, so
#   its exit report is noise (RELIABILITY.md). Leaks are hunted with libFuzzer's per-input leak check
#   instead (scripts/fuzz-libfuzzer.sh), which found and pinned the one real leak.
# - The fuzz tests spawn the debug CLI (not sanitized) for HDF5; their in-process safetensors and
#   pkmz fuzzing runs under the sanitizer. PKM_FUZZ_ITERATIONS is left at its default.
# - TSan covers the concurrent code: pkmz parallel compression/decoding (DispatchQueue.concurrentPerform
#   over shared buffers), the HDF5 library lock, parallel tests touching the readers.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        *) sanitizers+=("$1"); shift ;;
    esac
done
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(address thread)
suppressions="$PWD/scripts/sanitizers.supp"
status=0
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        address) scratch=.build-asan
                 export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:strict_string_checks=1:check_initialization_order=1" ;;
        thread)  scratch=.build-tsan
                 export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$suppressions" ;;
        *) echo "unknown sanitizer '$sanitizer' (address or thread)" >&2; exit 64 ;;
    esac
    echo "== swift test --sanitize=$sanitizer --scratch-path $scratch ${extra[*]:-}"
    start=$(date +%s)
    mkdir -p "$scratch"
    set +e
    swift test --sanitize="$sanitizer" --scratch-path "$scratch" "${extra[@]}" 2>&1 | tee "$scratch/test.log" \
        | grep -E "^(✘|Test run)|^. Test run|ERROR: (Address|Thread|Leak)Sanitizer|SUMMARY:|WARNING: ThreadSanitizer"
    result=${PIPESTATUS[0]}
    set -e
    echo "== $sanitizer: exit $result after $(( $(date +%s) - start )) s (full log: $scratch/test.log)"
    [ "$result" -eq 0 ] || status=1
done
exit $status
