"""The attention function that lets an :class:`harness.cache.EvictionCache` work in any HF decoder.

Registered with transformers' ``AttentionInterface`` as ``"kv_evict"`` (no modeling-code fork):

- a layer that is not an eviction layer, or has evicted nothing yet and whose policy needs no
  attention, runs transformers' own sdpa unchanged (so ``full`` is exactly the stock model);
- otherwise each layer's mask is built from the positions that layer still holds (transformers
  shares one mask, sized over absolute positions, across all layers);
- a policy that needs attention gets the softmax attention of the new queries, averaged over each
  KV group, computed a chunk of queries at a time (never an L x L matrix); the output is the
  same attention applied to the values, so nothing is computed twice;
- after the layer's attention the cache layer may run its policy (every ``n_up`` tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from harness.cache import EvictionLayer, take_pending_layer

NAME = "kv_evict"
QUERY_CHUNK = 512  # most queries per chunk when attention probabilities are materialised
# On CPU, big temporaries cost more in page faults than they save in per-op overhead: measured on
# SmolLM2 (h2o, 8K prompt, 2 cores) prefill took 39 s with 512-query chunks and 27 s with 16.
# So on CPU a chunk's logits are kept to about CPU_CHUNK_BYTES; on GPUs chunks stay large.
CPU_CHUNK_BYTES = 2 << 20


def query_chunk(batch: int, heads: int, n_keys: int, device: torch.device, element_bytes: int = 4) -> int:
    """Queries per chunk for the ``[batch, heads, chunk, n_keys]`` logits of ``element_bytes`` each
    (bf16 logits allow twice the queries of fp32 in the same bytes: measured 11% faster at 8K)."""
    if device.type != "cpu":
        return QUERY_CHUNK
    return max(8, min(QUERY_CHUNK, CPU_CHUNK_BYTES // (element_bytes * batch * heads * max(n_keys, 1))))


def logits_matmul_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of ``Q K^T``, of the softmax's output and of ``P V`` when probabilities are materialised.

    A float32 model computes everything in float32. A bf16/fp16 model computes them in its own
    precision, as the fused attention kernels do (half-precision matmuls are several times faster
    than float32 on CPUs with bf16 units and on GPUs): the softmax accumulates in float32 inside
    the kernel and rounds the probabilities once; the reductions policies take over them
    (per-key sums, spectrogram EMA) accumulate in float32."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def eviction_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """``query`` ``[b, heads, q, d]``, ``key``/``value`` ``[b, kv_heads, n, d]`` → ``([b, q, heads, d], None)``."""
    layer = take_pending_layer()
    if not isinstance(layer, EvictionLayer) or getattr(module, "layer_idx", layer.layer_idx) != layer.layer_idx:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attention sinks (s_aux) are not supported by the eviction cache")
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if layer.needs_attention is None and layer.contiguous:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    else:
        mask = layer.attend_mask(attention_mask, query.shape[2])
        if layer.needs_attention is None:
            out = _masked_sdpa(query, key, value, mask, scaling)
        else:
            out = _attention_with_probs(layer, query, key, value, mask, scaling, kwargs.get("softcap"))
    layer.maybe_evict()
    return out, None


def _expand_heads(mask: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[b, kv_heads, q, n]`` → ``[b, heads, q, n]`` (query head i uses KV head i // group)."""
    b, h, q, n = mask.shape
    return mask[:, :, None].expand(b, h, n_heads // h, q, n).reshape(b, n_heads, q, n)


def _masked_sdpa(query, key, value, mask, scaling):
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=_expand_heads(mask, query.shape[1]), scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous()


def _attention_with_probs(layer: EvictionLayer, query, key, value, mask, scaling, softcap=None):
    """Eager attention in query chunks; hands the probabilities (``[b, kv_heads, group, q, n]``) to
    ``layer.observe``. Matmuls on ``[b, kv_heads, group * q, ...]`` views avoid copying K/V per head."""
    b, n_heads, q_len, d = query.shape
    kv_heads, n = key.shape[1], key.shape[2]
    group = n_heads // kv_heads
    matmul_dtype = logits_matmul_dtype(query.dtype)
    prob_dtype = matmul_dtype if softcap is None else torch.float32
    key_t = key.to(matmul_dtype).transpose(-1, -2)  # [b, h, d, n]
    outs = []
    chunk = query_chunk(b, n_heads, n, query.device, torch.finfo(matmul_dtype).bits // 8)
    blocked = ~mask  # [b, h, q, n]
    # Usually only keys newer than the chunk's first query are blocked (causal order, nothing padded):
    # then the mask is applied to those trailing columns only.
    tail = max(n - q_len, 0)
    tail = tail if tail and not bool(blocked[..., :tail].any()) else 0
    for start in range(0, q_len, chunk):
        qc = query[:, :, start : start + chunk]
        c = qc.shape[2]
        grouped = (qc.to(matmul_dtype) * scaling).reshape(b, kv_heads, group * c, d)
        logits = torch.matmul(grouped, key_t).view(b, kv_heads, group, c, n)
        if softcap is not None:
            logits = torch.tanh(logits.float() / softcap) * softcap
        logits[..., tail:].masked_fill_(blocked[:, :, None, start : start + c, tail:], float("-inf"))
        probs = torch.softmax(logits, -1, dtype=prob_dtype)
        out = torch.matmul(probs.view(b, kv_heads, group * c, n).to(value.dtype), value)
        outs.append(out.view(b, n_heads, c, d))
        layer.observe(probs)
    out = torch.cat(outs, 2) if len(outs) > 1 else outs[0]
    return out.transpose(1, 2).contiguous()


def register() -> None:
    """Make ``"kv_evict"`` a valid ``attn_implementation`` (idempotent)."""
    AttentionInterface.register(NAME, eviction_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # bool masks over absolute positions


def attach(model) -> None:
    """Switch ``model`` to the eviction-aware attention. Without an EvictionCache it is plain sdpa."""
    register()
    model.set_attn_implementation(NAME)
