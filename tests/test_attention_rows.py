"""The GQA-averaged attention rows the eviction cache hands a ``"rows"`` policy equal a real GQA
model's eager ``output_attentions``, averaged over the query heads of each KV group."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.attention import attach
from harness.cache import EvictionCache
from policies.base import LayerView, Policy, Selection

N_UP = 16


class RecordRows(Policy):
    """Keeps every token; stores each layer's ``view.attention`` at every update."""

    name = "test_record_rows"  # not registered
    attention = "rows"

    def __init__(self):
        self.rows: list[tuple[int, int, torch.Tensor]] = []  # (layer, seen, [b, kv_heads, q, n])

    def select(self, view: LayerView) -> Selection:
        self.rows.append((view.layer_idx, view.seen, view.attention.detach().clone()))
        keep = view.valid.clone()
        return Selection(torch.zeros_like(keep, dtype=torch.float32), keep)


def gqa_llama(heads: int, kv_heads: int, seed: int = 0):
    """A random 2-layer Llama (as conftest's ``tiny_llama``) with ``heads`` query / ``kv_heads`` KV heads."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=16 * heads, intermediate_size=128, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=512, rope_theta=10000.0,
    )
    return LlamaForCausalLM(config).eval()


def eager_kv_group_mean(model, ids) -> list[torch.Tensor]:
    """Per layer ``[b, kv_heads, n, n]``: eager softmax attention averaged over each KV group's query heads
    (query head i belongs to KV head i // group)."""
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    kv, heads = model.config.num_key_value_heads, model.config.num_attention_heads
    group = heads // kv
    means = []
    for att in out.attentions:  # [b, heads, n, n]
        b, _, q, n = att.shape
        expected = torch.stack([att[:, [i for i in range(heads) if i // group == k]].mean(1) for k in range(kv)], 1)
        # the same thing as a reshape, spelled out above: heads are KV-major
        torch.testing.assert_close(expected, att.reshape(b, kv, group, q, n).mean(2))
        means.append(expected)
    return means


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 2), (9, 3)])
def test_rows_handed_to_policy_equal_eager_attention_averaged_per_kv_group(heads, kv_heads):
    n_tokens = 3 * N_UP
    ids = torch.randint(0, 128, (1, n_tokens), generator=torch.Generator().manual_seed(heads))
    reference = eager_kv_group_mean(gqa_llama(heads, kv_heads), ids)

    model = gqa_llama(heads, kv_heads)
    attach(model)
    policy = RecordRows()
    cache = EvictionCache(model.config, policy, n_up=N_UP, stream_rows=False)
    with torch.no_grad():
        for start in range(0, n_tokens, N_UP):
            model(input_ids=ids[:, start : start + N_UP], past_key_values=cache)

    n_layers = model.config.num_hidden_layers
    assert [(layer, seen) for layer, seen, _ in policy.rows] == [
        (layer, seen) for seen in range(N_UP, n_tokens + 1, N_UP) for layer in range(n_layers)
    ]
    first = {layer: rows for layer, seen, rows in policy.rows if seen == N_UP}
    for layer in range(n_layers):  # the first update: the prompt's first n_up queries against themselves
        assert first[layer].shape == (1, kv_heads, N_UP, N_UP)
        torch.testing.assert_close(first[layer], reference[layer][:, :, :N_UP, :N_UP], atol=1e-6, rtol=1e-5)
    for layer, seen, rows in policy.rows:  # every update: the n_up queries since the last, all keys kept
        torch.testing.assert_close(rows, reference[layer][:, :, seen - N_UP : seen, :seen], atol=1e-6, rtol=1e-5)
        assert bool((rows.sum(-1) - 1).abs().max() < 1e-5)  # softmax rows
