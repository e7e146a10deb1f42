"""Reference memories of the peer implementations, attached to HF BERT/RoBERTa (see /work/shared/spec/peer-layouts.md).

Shared by tools/gen_peer_fixtures.py and tools/export_roundtrip.py. Nothing here is trained.

* lucidrains: the installed ``product_key_memory.PKM`` (0.3.0) itself, attached to a ``BertLayer`` under an
  attribute of our choosing; its selection is captured by a forward hook on its ``values`` EmbeddingBag (the
  value indices and per-sample weights it really used).
* ``XLMMemory``: XLM's ``HashingMemoryProductFast`` eval forward re-written from its published source
  (xlm/model/memory/memory.py, query.py): QueryMLP with optional BatchNorm and ReLU between linears (a
  ModuleList of one Sequential when there are hidden layers), shared ``[N, K/2]`` or per-head keys, L2-normalised
  half queries, torch.topk per half and over the k×k grid, then ``head_permutations``, ``% mem_modulo_size``,
  ``/ mem_temperature``, optional softmax, EmbeddingBag sum. Parameter names are XLM's.
* ``MetaMemory``: Meta's "Memory Layers at Scale" ``HashingMemory`` eval forward (lingua/product_key/memory.py):
  keys ``[2·H·N, K/2]`` viewed ``[H, 2, N, K/2]``, query ``query_proj.query_mlps.0``, softmax in float32,
  values (bfloat16 in their checkpoints; widened here, exactly), ``value_proj(out * silu(swilu_projection(x)))``,
  optional ``sigmoid(gating(x))``; shared values: only the first memory holds ``values``.

Each memory records ``last_indices`` int64 and ``last_weights`` float32 ``[B, T, H, k]``: the value rows read
and their weights, score-descending (what reference.h5 stores, spec §5).
"""
import types

import torch
from torch import nn
from torch.nn import functional as F


def _feed_forward_chunk(self, attention_output):
    """``BertLayer.feed_forward_chunk`` for a memory layer (modes of spec §3); the memory is ``getattr(self, self.memory_attribute)``."""
    a = attention_output
    memory = getattr(self, self.memory_attribute)
    if self.memory_mode == "replace":
        return self.output.LayerNorm(a + memory(a))
    ffn = self.output.dense(self.intermediate(a))
    if self.memory_mode == "residual":
        return self.output.LayerNorm(a + ffn + memory(a))
    if self.memory_mode == "after":
        y = self.output.LayerNorm(a + ffn)
        return y + memory(y)
    raise ValueError(self.memory_mode)


def attach(model, layer_index, mode, memory, attribute):
    """Attaches ``memory`` to encoder layer ``layer_index`` as ``attribute`` in ``mode`` (replace deletes the FFN)."""
    layer = model.encoder.layer[layer_index]
    setattr(layer, attribute, memory)
    layer.memory_attribute = attribute
    layer.memory_mode = mode
    if mode == "replace":
        del layer.intermediate
        del layer.output.dense
    layer.feed_forward_chunk = types.MethodType(_feed_forward_chunk, layer)


def hook_lucidrains(pkm):
    """Records what a lucidrains PKM read: the EmbeddingBag's indices and per-sample weights, as ``[B·T, H, k]``."""
    def hook(module, args, kwargs, output):
        indices = args[0]
        weights = kwargs.get("per_sample_weights", args[1] if len(args) > 1 else None)
        rows = indices.shape[0]
        pkm.last_indices = indices.reshape(rows, pkm.heads, pkm.topk).clone()
        pkm.last_weights = weights.reshape(rows, pkm.heads, pkm.topk).float().clone()
    pkm.values.register_forward_hook(hook, with_kwargs=True)


class XLMMemory(nn.Module):
    """XLM ``HashingMemoryProductFast`` (eval), options as XLM ``params`` names them."""

    def __init__(self, input_dim, n_keys, heads, knn, k_dim, query_layer_sizes=(), query_bias=True,
                 query_batchnorm=False, normalize_query=False, temperature=1.0, score_softmax=True,
                 shuffle_indices=False, modulo_size=-1, use_different_keys=True, owns_values=True, v_dim=None):
        super().__init__()
        self.input_dim, self.n_keys, self.heads, self.knn, self.k_dim = input_dim, n_keys, heads, knn, k_dim
        self.normalize_query, self.temperature, self.score_softmax = normalize_query, temperature, score_softmax
        self.shuffle_indices, self.modulo_size, self.use_different_keys = shuffle_indices, modulo_size, use_different_keys
        v_dim = v_dim or input_dim
        half = k_dim // 2
        self.keys = nn.Parameter(torch.empty(heads, 2, n_keys, half) if use_different_keys else torch.empty(n_keys, half))
        size = modulo_size if modulo_size != -1 else n_keys ** 2
        if owns_values:
            self.values = nn.EmbeddingBag(size, v_dim, mode="sum")
        sizes = [input_dim, *query_layer_sizes, heads * k_dim]
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=query_bias))
            if query_batchnorm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        mlp = nn.Sequential(*layers)
        # XLM's QueryMLP: a bare Sequential for one linear, a ModuleList of one Sequential otherwise.
        self.query_proj = nn.Module()
        self.query_proj.query_mlps = mlp if len(sizes) == 2 else nn.ModuleList([mlp])
        if shuffle_indices:
            self.register_buffer("head_permutations", torch.cat([torch.randperm(n_keys ** 2).unsqueeze(0) for _ in range(heads)], 0))
        self.shared_values = None

    def _query(self, x):
        mlps = self.query_proj.query_mlps
        return (mlps(x) if isinstance(mlps, nn.Sequential) else mlps[0](x))

    def forward(self, x):
        prefix = x.shape[:-1]
        flat = x.reshape(-1, self.input_dim)
        bs, H, k, half = flat.shape[0], self.heads, self.knn, self.k_dim // 2
        query = self._query(flat).view(bs, H, self.k_dim)
        scores_all, indices_all = [], []
        for h in range(H):
            keys1 = self.keys[h, 0] if self.use_different_keys else self.keys
            keys2 = self.keys[h, 1] if self.use_different_keys else self.keys
            q1, q2 = query[:, h, :half], query[:, h, half:]
            if self.normalize_query:
                q1 = q1 / q1.norm(2, 1, keepdim=True).expand_as(q1)
                q2 = q2 / q2.norm(2, 1, keepdim=True).expand_as(q2)
            s1, i1 = F.linear(q1, keys1).topk(k, dim=1, largest=True, sorted=True)
            s2, i2 = F.linear(q2, keys2).topk(k, dim=1, largest=True, sorted=True)
            grid = (s1.view(bs, k, 1) + s2.view(bs, 1, k)).view(bs, -1)
            slots = (i1.view(bs, k, 1) * self.n_keys + i2.view(bs, 1, k)).view(bs, -1)
            scores, best = torch.topk(grid, k=k, dim=1, largest=True, sorted=True)
            scores_all.append(scores)
            indices_all.append(slots.gather(1, best))
        scores = torch.stack(scores_all, 1)      # [bs, H, k]
        indices = torch.stack(indices_all, 1)
        if self.shuffle_indices:
            indices = torch.stack([self.head_permutations[h][indices[:, h]] for h in range(H)], 1)
        if self.modulo_size != -1:
            indices = indices % self.modulo_size
        if self.temperature != 1:
            scores = scores / self.temperature
        if self.score_softmax:
            scores = F.softmax(scores.float(), dim=-1)
        values = self.values if hasattr(self, "values") else self.shared_values
        out = values(indices.reshape(bs, H * k), per_sample_weights=scores.reshape(bs, H * k))
        self.last_indices = indices.clone()
        self.last_weights = scores.float().clone()
        return out.view(*prefix, -1)


class MetaMemory(nn.Module):
    """Meta's Memory Layers at Scale ``HashingMemory`` (eval, PK variant)."""

    def __init__(self, input_dim, n_keys, heads, knn, k_dim, v_dim=-1, swilu_projection=True, gated=False,
                 query_bias=True, owns_values=True):
        super().__init__()
        self.input_dim, self.heads, self.knn, self.k_dim = input_dim, heads, knn, k_dim
        self.v_dim = v_dim if v_dim > 0 else input_dim
        self.swilu = swilu_projection
        self.v_proj = v_dim > 0 or swilu_projection
        self.keys = nn.Parameter(torch.empty(2 * heads * n_keys, k_dim // 2))
        if owns_values:
            self.values = nn.Module()
            self.values.weight = nn.Parameter(torch.empty(n_keys ** 2, self.v_dim, dtype=torch.bfloat16))
        if self.v_proj:
            proj_input = v_dim if v_dim > 0 else input_dim
            self.value_proj = nn.Linear(proj_input, input_dim)
        if self.swilu:
            self.swilu_projection = nn.Linear(input_dim, proj_input)
        self.gating = nn.Linear(input_dim, 1) if gated else None
        self.query_proj = nn.Module()
        self.query_proj.query_mlps = nn.Sequential(nn.Linear(input_dim, heads * k_dim, bias=query_bias))
        self.shared_values = None

    def forward(self, x):
        B, T, C = x.shape
        flat = x.reshape(-1, self.input_dim)
        bs, H, k, half = flat.shape[0], self.heads, self.knn, self.k_dim // 2
        query = self.query_proj.query_mlps(flat).view(bs, H, self.k_dim)
        keys = self.keys.view(H, 2, -1, half)
        n_keys = keys.shape[2]
        s1 = torch.einsum("blh,lkh->blk", query[:, :, :half], keys[:, 0])
        s2 = torch.einsum("blh,lkh->blk", query[:, :, half:], keys[:, 1])
        s1, i1 = s1.topk(k, dim=2, largest=True)
        s2, i2 = s2.topk(k, dim=2, largest=True)
        grid = (s1.view(bs, H, k, 1) + s2.view(bs, H, 1, k)).view(bs, H, -1)
        slots = (i1.view(bs, H, k, 1) * n_keys + i2.view(bs, H, 1, k)).view(bs, H, -1)
        scores, best = torch.topk(grid, k=k, dim=2, largest=True, sorted=True)
        indices = slots.gather(2, best)
        weights = F.softmax(scores.float(), dim=-1)
        table = (self.values.weight if hasattr(self, "values") else self.shared_values.weight).float()
        out = F.embedding_bag(indices.view(bs, H * k), table, per_sample_weights=weights.view(bs, H * k), mode="sum")
        if self.v_proj and not self.swilu:
            out = self.value_proj(out)
        if self.swilu:
            out = self.value_proj(out * F.silu(self.swilu_projection(flat)))
        if self.gating is not None:
            out = torch.sigmoid(self.gating(flat)) * out
        self.last_indices = indices.clone()
        self.last_weights = weights.clone()
        return out.view(B, T, -1)


class _MergeDims(nn.Module):
    """lucidrains 0.1.0's wrapper: BatchNorm1d over the last axis of a [b, t, C] tensor (saved as ``norm.fn.*``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        shape = x.shape
        return self.fn(x.reshape(-1, shape[-1])).reshape(*shape)


class Lucidrains01PKM(nn.Module):
    """lucidrains product-key-memory 0.1.x (not installable beside 0.3.0), re-written from its 0.1.0/0.1.11 source:
    ``dim_head`` is the full K; ``to_queries`` [H·K, d] in (half, head, dim) order; BatchNorm1d over the whole
    query (``norm.fn``; 0.1.4+ wrap it in MaskedBatchNorm1D, equal with a mask or 2-D input); keys [H, N, 2, K/2]."""

    def __init__(self, dim, heads, num_keys, topk, dim_head):
        super().__init__()
        self.topk, self.heads, self.num_keys = topk, heads, num_keys
        dim_query = dim_head * heads
        self.to_queries = nn.Linear(dim, dim_query, bias=False)
        self.norm = _MergeDims(nn.BatchNorm1d(dim_query))
        self.keys = nn.Parameter(torch.zeros(heads, num_keys, 2, dim_head // 2))
        self.values = nn.EmbeddingBag(num_keys ** 2, dim, mode="sum")

    def forward(self, x):
        b, t, h = *x.shape[:2], self.heads
        queries = self.norm(self.to_queries(x))
        queries = queries.reshape(b, t, 2, h, -1).permute(2, 0, 1, 3, 4)          # 'b t (p h d) -> p b t h d'
        dots = torch.einsum("pbthd,hnpd->bthpn", queries, self.keys)
        scores, indices = dots.topk(k=self.topk, dim=-1)
        (scores_x, scores_y), (indices_x, indices_y) = map(lambda v: v.chunk(2, dim=3), (scores, indices))
        all_scores = (scores_x[..., :, None] + scores_y[..., None, :]).reshape(b, t, h, -1)
        all_indices = (indices_x[..., :, None] * self.num_keys + indices_y[..., None, :]).reshape(b, t, h, -1)
        final_topk, final_indices = all_scores.topk(self.topk, dim=-1)
        value_indices = all_indices.gather(-1, final_indices)
        attn = final_topk.softmax(dim=-1)
        self.last_indices = value_indices.reshape(b * t, h, self.topk).clone()
        self.last_weights = attn.reshape(b * t, h, self.topk).clone()
        out = self.values(value_indices.reshape(b * t, -1), per_sample_weights=attn.reshape(b * t, -1))
        return out.reshape(b, t, -1)
