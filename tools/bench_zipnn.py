#!/usr/bin/env python3
"""ZipNN side of tools/bench_formats.sh: compresses the raw tensor bytes of a safetensors file with
ZipNN (float32 mode, as its README recommends for float32 weights), writes and fsyncs the output,
then decompresses and checks the round trip is bit-exact.

  python3 tools/bench_zipnn.py compress   RAW OUT [threads]   # timed by the caller (hyperfine)
  python3 tools/bench_zipnn.py decompress ZNN OUT [threads]
  python3 tools/bench_zipnn.py check      RAW ZNN              # prints size ratio and bit-exactness
"""
import os, sys
from zipnn import ZipNN

def codec(threads):
    return ZipNN(input_format="byte", bytearray_dtype="float32", threads=threads)

def write_synced(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

mode = sys.argv[1]
if mode == "compress":
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    with open(sys.argv[2], "rb") as handle:
        raw = handle.read()
    write_synced(sys.argv[3], codec(threads).compress(raw))
elif mode == "decompress":
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    with open(sys.argv[2], "rb") as handle:
        packed = handle.read()
    out = codec(threads).decompress(packed)
    with open(sys.argv[3], "wb") as handle:
        handle.write(out)
elif mode == "check":
    with open(sys.argv[2], "rb") as handle:
        raw = handle.read()
    with open(sys.argv[3], "rb") as handle:
        packed = handle.read()
    back = bytes(codec(2).decompress(packed))
    print(f"ratio {len(packed)/len(raw):.4f} exact {back == raw}")
else:
    sys.exit(f"unknown mode {mode}")
