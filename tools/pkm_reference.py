"""PyTorch reference implementation of a PKM-BERT model (spec: schemas/pkm-checkpoints.md).

Shared by tools/gen_model_fixtures.py and tools/real_bert_parity.py. Nothing here is trained:
the module exists to produce reference outputs the Swift model must reproduce.

* ``ProductKeyMemory``: an XLM-style product-key memory (Lample et al. 2019, ``pq_fast``) whose
  parameters have exactly the spec §1 names: ``keys`` [H, 2, N, K/2], ``values.weight`` [N*N, V],
  ``query_proj.query_mlps.0.{weight,bias}`` and, with query batchnorm,
  ``query_proj.query_mlps.1.{weight,bias,running_mean,running_var,num_batches_tracked}``.
  Its forward follows spec §3 in eval mode and records, per call, the selected slot indices and
  softmax weights per head in score-descending order (ties broken by lower slot index).
* ``attach_memory``: attaches a memory to a HuggingFace ``BertModel``/``RobertaModel`` layer as
  ``encoder.layer.{i}.memory`` and replaces the layer's feed-forward step by the spec's modes
  ``replace`` / ``residual`` / ``after`` (``replace`` deletes the layer's ``intermediate`` and
  ``output.dense`` so those tensors are absent from the state dict).
* ``build_model`` / ``run_model`` / ``config_json``: build a model from a spec §2 config dict and
  run it returning the spec §5 outputs.

transformers 5.24 notes (checked in its source): ``BertLayer.forward`` calls
``apply_chunking_to_forward(self.feed_forward_chunk, ...)`` with ``chunk_size_feed_forward = 0``,
i.e. simply ``self.feed_forward_chunk(attention_output)``; ``BertOutput`` computes
``LayerNorm(dropout(dense(h)) + input)``; hidden states are captured by hooks on ``BertLayer``
outputs (so the ``after`` mode's ``y + M(y)`` must happen inside the layer, which it does here).
The eager attention mask is ``torch.where(mask, 0, finfo(float32).min)`` added to the scores.
"""
import json
import types

import torch
from torch import nn

MODES = ("replace", "residual", "after")


def topk_lowest_index(scores, indices, k):
    """Top-k along the last axis, descending, ties broken by the lower *index* value.

    scores, indices: [..., n] (indices int64, the identity each score belongs to).
    Returns (top_scores, top_indices) [..., k], score-descending. Implemented as a stable
    sort on the index (ascending) followed by a stable descending sort on the score, which is a
    sort on the key (-score, index); torch.topk itself gives no order among equal scores.
    """
    order = torch.sort(indices, dim=-1, stable=True).indices
    scores = torch.gather(scores, -1, order)
    indices = torch.gather(indices, -1, order)
    by_score = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.gather(scores, -1, by_score), torch.gather(indices, -1, by_score)


class QueryProjection(nn.Module):
    """The query network: ``query_mlps`` = Sequential(Linear(d, H*K, bias), [BatchNorm1d(H*K, eps)])."""

    def __init__(self, input_dim, heads, k_dim, bias=True, batchnorm=True, bn_eps=1e-5):
        super().__init__()
        layers = [nn.Linear(input_dim, heads * k_dim, bias=bias)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(heads * k_dim, eps=bn_eps))
        self.query_mlps = nn.Sequential(*layers)

    def forward(self, x):
        return self.query_mlps(x)


class ProductKeyMemory(nn.Module):
    """Product-key memory layer, spec §3 "Memory M(x)".

    Input [..., d]; output [..., V]. After each call, ``last_indices`` int64 and ``last_weights``
    float32 hold [..., H, k]: per head the selected slots (score-descending, ties by lower slot
    index) and their softmax weights. ``last_stats`` records the smallest score gaps around and
    inside the selections (for tie/near-tie reporting).
    """

    def __init__(self, input_dim, n_keys, heads, knn, k_dim, v_dim, query_batchnorm=True,
                 query_bias=True, bn_eps=1e-5):
        super().__init__()
        assert k_dim % 2 == 0, "k_dim must be even"
        assert knn <= n_keys, "knn must not exceed n_keys"
        self.input_dim, self.n_keys, self.heads, self.knn = input_dim, n_keys, heads, knn
        self.k_dim, self.v_dim = k_dim, v_dim
        self.keys = nn.Parameter(torch.empty(heads, 2, n_keys, k_dim // 2))
        self.values = nn.Embedding(n_keys * n_keys, v_dim)
        self.query_proj = QueryProjection(input_dim, heads, k_dim, bias=query_bias,
                                          batchnorm=query_batchnorm, bn_eps=bn_eps)
        self.last_indices = None
        self.last_weights = None
        self.last_stats = None

    def forward(self, x):
        assert not self.training, "the reference memory is eval-only"
        prefix = x.shape[:-1]
        flat = x.reshape(-1, self.input_dim)                               # [n, d]
        n, H, N, K, k = flat.shape[0], self.heads, self.n_keys, self.k_dim, self.knn
        query = self.query_proj(flat).view(n, H, K)                        # step 1 (+ eval batchnorm)
        q1, q2 = query[..., : K // 2], query[..., K // 2:]                 # step 2
        s1 = torch.einsum("nhc,hmc->nhm", q1, self.keys[:, 0])             # step 3: [n, H, N]
        s2 = torch.einsum("nhc,hmc->nhm", q2, self.keys[:, 1])
        sub = torch.arange(N, dtype=torch.int64).expand(n, H, N)
        top1, i1 = topk_lowest_index(s1, sub, k)                           # step 4: [n, H, k]
        top2, i2 = topk_lowest_index(s2, sub, k)
        grid = (top1[..., :, None] + top2[..., None, :]).reshape(n, H, k * k)   # step 5
        slots = (i1[..., :, None] * N + i2[..., None, :]).reshape(n, H, k * k)
        scores, indices = topk_lowest_index(grid, slots, k)                # step 6: [n, H, k]
        weights = torch.softmax(scores.float(), dim=-1)                    # step 7
        rows = self.values.weight[indices]                                 # [n, H, k, V]
        out = (weights[..., None] * rows).sum(dim=(1, 2))                  # step 8
        self.last_indices = indices.reshape(*prefix, H, k).clone()
        self.last_weights = weights.reshape(*prefix, H, k).clone()
        self.last_stats = self._gap_stats(s1, s2, grid, scores, k)
        return out.reshape(*prefix, self.v_dim)

    @staticmethod
    def _gap_stats(s1, s2, grid, selected, k):
        """Tie/near-tie statistics of one call (tiny memories only: the N² product scores are formed).

        half_boundary_gap: smallest gap between the k-th and (k+1)-th sub-key score of a half
        (where a flip changes the candidate set); product_gap: smallest gap between consecutive
        scores among the k+1 best of all N² product keys (where a flip changes the selected slots or
        their order); exact_ties_*: rows with an exactly tied pair there.
        """
        stats = {}
        if s1.shape[-1] > k:
            halves = torch.cat([torch.sort(s, dim=-1, descending=True).values[..., k - 1:k + 1] for s in (s1, s2)])
            boundary = halves[..., 0] - halves[..., 1]
            stats["half_boundary_gap"] = float(boundary.min())
            stats["exact_ties_half"] = int((boundary == 0).sum())
        n_keys = s1.shape[-1]
        if n_keys * n_keys <= 65536:
            product = (s1[..., :, None] + s2[..., None, :]).flatten(-2)
            top = torch.sort(product, dim=-1, descending=True).values[..., : k + 1]
            gaps = top[..., :-1] - top[..., 1:]
            stats["product_gap"] = float(gaps.min())
            stats["exact_ties_product"] = int((gaps == 0).any(dim=-1).sum())
            # the selection must be the exact top-k over all N² product keys (spec §3 step 6)
            assert torch.equal(torch.sort(product, dim=-1, descending=True).values[..., :k], selected)
        return stats


def _memory_feed_forward_chunk(self, attention_output):
    """Replacement of ``BertLayer.feed_forward_chunk`` for memory layers (eval mode: dropout is identity)."""
    a = attention_output
    mode = self.pkm_mode
    if mode == "replace":
        return self.output.LayerNorm(a + self.memory(a))
    ffn = self.output.dense(self.intermediate(a))
    if mode == "residual":
        return self.output.LayerNorm(a + ffn + self.memory(a))
    if mode == "after":
        y = self.output.LayerNorm(a + ffn)
        return y + self.memory(y)
    raise ValueError(f"unknown memory mode {mode!r}")


def attach_memory(model, layer_index, mode, memory):
    """Attach ``memory`` to ``model.encoder.layer[layer_index]`` as ``.memory`` with a spec §3 mode."""
    if mode not in MODES:
        raise ValueError(f"unknown memory mode {mode!r}")
    layer = model.encoder.layer[layer_index]
    layer.memory = memory
    layer.pkm_mode = mode
    if mode == "replace":
        del layer.intermediate
        del layer.output.dense
    layer.feed_forward_chunk = types.MethodType(_memory_feed_forward_chunk, layer)
    return layer


HF_FIELDS = ("model_type", "architectures", "vocab_size", "hidden_size", "num_hidden_layers",
             "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
             "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
             "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")


def build_model(config, add_pooling_layer=True):
    """A float32 eval-mode BertModel/RobertaModel with the memories of ``config["pkm"]`` attached.

    config: a spec §2 dict (HF fields + optional "pkm"). Parameters are left as constructed
    (the caller randomises or loads them).
    """
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    fields = {key: value for key, value in config.items() if key in HF_FIELDS and key not in ("model_type",)}
    if config["model_type"] == "bert":
        hf_config, cls = BertConfig(**fields), BertModel
    elif config["model_type"] == "roberta":
        hf_config, cls = RobertaConfig(**fields), RobertaModel
    else:
        raise ValueError(f"model_type {config['model_type']!r}")
    hf_config._attn_implementation = "eager"
    model = cls(hf_config, add_pooling_layer=add_pooling_layer)
    if model.config._attn_implementation != "eager":
        raise RuntimeError(f"expected eager attention, got {model.config._attn_implementation!r}")
    pkm = config.get("pkm")
    if pkm:
        for layer_index, mode in zip(pkm["layers"], pkm["modes"]):
            memory = ProductKeyMemory(config["hidden_size"], pkm["n_keys"], pkm["heads"], pkm["knn"],
                                      pkm["k_dim"], pkm["v_dim"], pkm.get("query_batchnorm", True),
                                      pkm.get("query_bias", True), pkm.get("bn_eps", 1e-5))
            attach_memory(model, layer_index, mode, memory)
    model.float()
    model.eval()
    return model


def memories(model):
    """{layer index: ProductKeyMemory} of the model's attached memories."""
    return {i: layer.memory for i, layer in enumerate(model.encoder.layer) if hasattr(layer, "memory")}


@torch.no_grad()
def run_model(model, input_ids, attention_mask, token_type_ids=None):
    """Runs the model; returns a dict of spec §5 output arrays (numpy) plus memory traces and gap stats."""
    for memory in memories(model).values():
        memory.last_indices = memory.last_weights = memory.last_stats = None
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    out = model(**kwargs)
    result = {"last_hidden_state": out.last_hidden_state.float().numpy()}
    if out.pooler_output is not None:
        result["pooler_output"] = out.pooler_output.float().numpy()
    result["hidden_states"] = [h.float().numpy() for h in out.hidden_states]
    result["memory"] = {i: {"indices": m.last_indices.numpy(), "scores": m.last_weights.float().numpy(),
                            "stats": m.last_stats} for i, m in memories(model).items()}
    return result


def config_json(config):
    """The config as the JSON string stored in files (sorted keys, compact but readable)."""
    return json.dumps(config, sort_keys=True, indent=1)
