#!/usr/bin/env bash
# The main job on a bundled example: a PKM-BERT checkpoint exported from PyTorch (HDF5) is inspected,
# imported to pkmz (canonical names, config, provenance), converted to safetensors, and verified against
# PyTorch's reference outputs — from the original file and from the imported one.
set -euo pipefail
fixture="${1:-fixtures/models/bert_residual}"
out="${2:-.build-demo}"
mkdir -p "$out"
bin_dir="$(swift build --show-bin-path)"
bin="$bin_dir/pkm-convert"
set -x
"$bin" inspect "$fixture/model.h5"
"$bin" import "$fixture/model.h5" -o "$out/model.pkmz"
"$bin" inspect "$out/model.pkmz"
"$bin" convert "$out/model.pkmz" -o "$out/model.safetensors"
"$bin" verify "$fixture/model.h5" --reference "$fixture/reference.h5"
"$bin" verify "$out/model.pkmz" --reference "$fixture/reference.h5"
"$bin" verify "$out/model.safetensors" --reference "$fixture/reference.h5"
{ set +x; } 2>/dev/null
# set -e stops at the first failure above, so reaching this line means every verify passed.
echo "demo: inspected, imported to pkmz, converted to safetensors and verified $fixture against PyTorch's outputs (h5, pkmz, safetensors): PASS; binary: $bin — put it on PATH with  export PATH=\"$bin_dir:\$PATH\"  or run  make install"
