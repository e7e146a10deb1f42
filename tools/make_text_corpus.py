#!/usr/bin/env python3
"""A real-text corpus for `usage --text-file` and the text benchmarks: bench-data/corpus.txt (gitignored).

English prose from the documentation that ships with Python (docstrings of the standard library
modules, then of the installed packages: torch, transformers, numpy, …), split into sentences of 40–400
characters, one per line, de-duplicated, in a fixed order. No download.

    python3 tools/make_text_corpus.py [--megabytes 5]
"""
import argparse, ast, os, re, sys, sysconfig

parser = argparse.ArgumentParser()
parser.add_argument("--megabytes", type=float, default=5.0)
parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench-data", "corpus.txt"))
args = parser.parse_args()

def docstrings(path):
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except Exception:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node)
            if text:
                found.append(text)
    return found

sources = []
stdlib = sysconfig.get_paths()["stdlib"]
purelib = sysconfig.get_paths()["purelib"]
walk = [(r, f) for r, _, f in sorted(os.walk(stdlib)) if "site-packages" not in r]
walk += [(r, f) for r, _, f in sorted(os.walk(purelib))]
for root, files in walk:
    if "test" in root.split(os.sep) or "tests" in root.split(os.sep):
        continue
    for name in sorted(files):
        if name.endswith(".py"):
            sources += docstrings(os.path.join(root, name))
seen, lines, size = set(), [], 0
limit = int(args.megabytes * 1e6)
for text in sources:
    flat = re.sub(r"\s+", " ", text)
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
        sentence = sentence.strip()
        if 40 <= len(sentence) <= 400 and sentence not in seen and not sentence.startswith(">>>"):
            seen.add(sentence)
            lines.append(sentence)
            size += len(sentence.encode()) + 1
    if size >= limit:
        break
os.makedirs(os.path.dirname(args.out), exist_ok=True)
with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print(f"{args.out}: {len(lines)} lines, {size / 1e6:.2f} MB")
