#!/usr/bin/env python3
"""A few real training steps on a grafted checkpoint's memory values, for `pkm-convert diff`.

    pkm-convert convert GRAFTED.pkmz -o grafted.safetensors     # Python reads safetensors, not pkmz
    python3 tools/train_memory_steps.py grafted.safetensors corpus.txt trained.safetensors [--steps 20] [--batch 16]

Builds the grafted model in PyTorch (HF BertModel + the spec's product-key memories, tools/pkm_reference.py,
computed as XLM's pq_fast: top-k per half, k×k grid, softmax, embedding_bag), freezes everything but the
memory value tables, and runs plain SGD on a masked-token reconstruction loss (predict each token's input
embedding from the final hidden state through the tied word embeddings) over lines of the corpus. SGD changes
only the value rows that received a gradient, i.e. the slots the memory selected: what `diff` counts as
updated slots (Kim & Jung's "memory slots never updated").
"""
import argparse, json, os, sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pkm_reference as ref  # noqa: E402
from bench_forward import FastMemory  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("corpus")
    parser.add_argument("output")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the checkpoint's folder)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = load_file(args.checkpoint)
    from safetensors import safe_open
    with safe_open(args.checkpoint, "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = ref.build_model(config, add_pooling_layer="pooler.dense.weight" in state)
    for index, memory in ref.memories(model).items():
        fast = FastMemory(memory.input_dim, memory.n_keys, memory.heads, memory.knn, memory.k_dim, memory.v_dim,
                          memory.query_proj.query_mlps[1] is not None if len(memory.query_proj.query_mlps) > 1 else False)
        ref.attach_memory(model, index, model.encoder.layer[index].pkm_mode, fast)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [m for m in missing if not m.endswith("position_ids")], missing
    assert not unexpected, unexpected
    model.eval()   # dropout and batchnorm as at inference; only the value tables learn
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.endswith("memory.values.weight")
    values = [p for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(values, lr=args.lr)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or os.path.dirname(os.path.abspath(args.checkpoint)))
    lines = [line.strip() for line in open(args.corpus, encoding="utf-8") if line.strip()]
    embeddings = model.embeddings.word_embeddings.weight
    for step in range(args.steps):
        batch = lines[step * args.batch:(step + 1) * args.batch]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        logits = hidden @ embeddings.T
        mask = encoded["attention_mask"].bool()
        loss = F.cross_entropy(logits[mask], encoded["input_ids"][mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step + 1}: loss {loss.item():.4f}")
    trained = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(trained, args.output, metadata={"format": "pt", "config": json.dumps(config)})
    print("wrote", args.output)


if __name__ == "__main__":
    main()
