#!/usr/bin/env bash
# The binary users run is the binary that is fuzzed. Builds the release configuration — the same
# optimisation settings as `make install` / `swift build -c release` (no unsafe flags: parsers keep
# their bounds and overflow checks) — and runs against it:
#   - the seeded mutation fuzzers of every reader (safetensors, sharded index, pkmz, HDF5 through the
#     release CLI in subprocesses, PyTorch pickles, the config decoder),
#   - every committed regression input (Tests/PKMFormatsTests/Regressions/Inputs) and the crafted
#     bad pickles, and the reader-limit checks.
#
#   scripts/fuzz-release.sh [inputs per format]      (default 300; RELIABILITY.md records longer runs)
#
# `-enable-testing` only exposes internal symbols to the test target; it does not change the code
# the optimiser produces for the readers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PKM_FUZZ_ITERATIONS="${1:-300}"
suites='FuzzTests|ReaderLimitsTests|RegressionTests|PickleTests|PickleMachineTests|PickleFuzzTests|ConfigFuzzTests|HDF5ProbeTests'
echo "fuzz-release: release build, ${PKM_FUZZ_ITERATIONS} inputs per format"
swift build -c release -Xswiftc -enable-testing --build-tests
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
swift test -c release -Xswiftc -enable-testing --skip-build --filter "$suites" > "$log" 2>&1
status=$?
set -e
grep -E "^(FUZZ|REGRESSION|HDF5 PROBE)|Test run with|✘" "$log" || true
if [ $status -ne 0 ]; then echo "fuzz-release: FAILED (exit $status)"; tail -50 "$log"; exit 1; fi
echo "fuzz-release: passed"
