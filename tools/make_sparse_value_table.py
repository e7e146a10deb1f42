#!/usr/bin/env python3
"""Writes a sparse safetensors file with one float32 value table of [1024², 1024] (4.3 GB, nearly all holes):
the input of the convert streaming benchmark (BENCHMARKS.md §3). Only the header and the last byte are written,
so it takes no disk space and no time.   tools/make_sparse_value_table.py OUT.safetensors
"""
import json, struct, sys

rows, width = 1024 * 1024, 1024
size = rows * width * 4
header = json.dumps({"encoder.layer.0.memory.values.weight": {"dtype": "F32", "shape": [rows, width], "data_offsets": [0, size]}},
                    separators=(",", ":")).encode()
header += b" " * ((8 - len(header) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
    f.truncate(8 + len(header) + size)
print(f"{sys.argv[1]}: {8 + len(header) + size} bytes (sparse)")
