#!/usr/bin/env bash
# The main job on a bundled example: a PKM-BERT checkpoint exported from PyTorch (HDF5) is inspected,
# imported to pkmz (canonical names, config, provenance), converted to safetensors, and verified against
# PyTorch's reference outputs — from the original file and from the imported one.
set -euo pipefail
fixture="${1:-fixtures/models/bert_residual}"
out="${2:-.build-demo}"
mkdir -p "$out"
bin="$(swift build --show-bin-path)/pkm-convert"
set -x
"$bin" inspect "$fixture/model.h5"
"$bin" import "$fixture/model.h5" -o "$out/model.pkmz"
"$bin" inspect "$out/model.pkmz"
"$bin" convert "$out/model.pkmz" -o "$out/model.safetensors"
"$bin" verify "$fixture/model.h5" --reference "$fixture/reference.h5"
"$bin" verify "$out/model.pkmz" --reference "$fixture/reference.h5"
"$bin" verify "$out/model.safetensors" --reference "$fixture/reference.h5"
