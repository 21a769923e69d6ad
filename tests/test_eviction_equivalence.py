"""The proof that evicted tokens are really gone and positions are right.

A policy evicts a known set (per head in ``exact`` mode). The chunked, evicting run must give the
same logits as ONE plain forward pass of the whole sequence in which every query may attend only
to the tokens the cache still held when that query was processed (same absolute positions) —
a reference computed here independently with an explicit 4D mask and eager attention.
"""

from dataclasses import dataclass

import pytest
import torch

from conftest import tiny_gemma3, tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from policies.base import LayerView, Policy, Selection

N_UP = 16


@dataclass
class EveryThird(Policy):
    """Test policy: evict positions with (pos + head * per_head) % 3 == 1, never the newest."""

    per_head: int = 0
    needs: str | None = None
    name = "every-third"

    @property
    def attention(self):  # exercise the attention-collecting path as well
        return self.needs

    def select(self, view: LayerView) -> Selection:
        heads = torch.arange(view.keys.shape[1], device=view.positions.device)[None, :, None]
        keep = ((view.positions + heads * self.per_head) % 3 != 1) | (view.positions == view.seen - 1)
        if self.needs == "rows":
            # rows of the queries since the previous update (at most n_up), one softmax row each
            rows = view.attention.shape[-2]
            assert view.attention.shape == (*view.positions.shape[:2], rows, view.n_keys) and 0 < rows <= N_UP
            sums = view.attention.float().sum(-1)  # softmax rows (in the model's precision)
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5 if view.attention.dtype == torch.float32 else 2e-2)
        return Selection(keep.float(), keep)


def reference_mask(length: int, n_heads: int, kv_heads: int, per_head: int, chunk: int) -> torch.Tensor:
    """[1, n_heads, L, L] bool: may query t attend key p, replaying the eviction schedule naively."""
    allowed = torch.zeros(kv_heads, length, length, dtype=torch.bool)
    for h in range(kv_heads):
        kept: set[int] = set()
        seen = 0
        for start in range(0, length, chunk):
            new = list(range(start, min(start + chunk, length)))
            kept.update(new)
            for t in new:
                for p in kept:
                    allowed[h, t, p] = p <= t
            last_seen, seen = seen, seen + len(new)
            if seen // N_UP > last_seen // N_UP:  # the policy runs
                kept = {p for p in kept if (p + h * per_head) % 3 != 1 or p == seen - 1}
    group = n_heads // kv_heads
    return allowed.repeat_interleave(group, dim=0)[None]


def run_evicting(model, ids, policy, mode, chunk):
    attach(model)
    cache = EvictionCache(model.config, policy, n_up=N_UP, mode=mode)
    logits = []
    with torch.no_grad():
        for start in range(0, ids.shape[1], chunk):
            logits.append(model(input_ids=ids[:, start : start + chunk], past_key_values=cache).logits)
    return torch.cat(logits, 1), cache


def run_reference(model, ids, mask):
    model.set_attn_implementation("eager")
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=additive, position_ids=torch.arange(ids.shape[1])[None]).logits


@pytest.mark.parametrize(
    "mode,per_head,needs,chunk",
    [
        ("original", 0, None, N_UP),  # same set on every head
        ("original", 0, "rows", 5),  # chunks not aligned with n_up; attention rows collected
        ("exact", 1, None, N_UP),  # a different set per head, masked per head
        ("exact", 1, "sum", 1),  # token by token, like decoding
    ],
)
def test_llama_logits_match_masked_reference(mode, per_head, needs, chunk):
    model = tiny_llama()
    ids = torch.randint(0, 128, (1, 70), generator=torch.Generator().manual_seed(1))
    got, cache = run_evicting(model, ids, EveryThird(per_head=per_head, needs=needs), mode, chunk)
    mask = reference_mask(70, 4, 2, per_head, chunk)
    want = run_reference(model, ids, mask)
    assert cache.layers[0].n_updates == 70 // N_UP
    assert not cache.layers[0].contiguous  # tokens were really evicted
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # and the reference really differs from an unevicted run, so the test can fail
    full = run_reference(model, ids, reference_mask(70, 4, 2, per_head, 10**6))
    assert (full[0, -1] - want[0, -1]).abs().max() > 1e-3


def test_positions_continue_after_eviction():
    """Kept keys keep their absolute positions; new tokens get position = tokens seen."""
    model = tiny_llama()
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(2))
    _, cache = run_evicting(model, ids, EveryThird(), "original", N_UP)
    layer = cache.layers[0]
    assert cache.get_seq_length() == 40
    kept = layer.positions[0, 0].tolist()
    # updates at 16 and 32 evicted p % 3 == 1, except the newest token at that time (31 survives)
    assert kept == [p for p in range(40) if p % 3 != 1 or p >= 31]


def test_gemma3_sliding_layers_untouched_and_global_layer_evicts():
    """Only full-attention layers evict; sliding-window layers keep transformers' own window."""
    window = 8
    model = tiny_gemma3(window=window)
    ids = torch.randint(0, 128, (1, 50), generator=torch.Generator().manual_seed(3))
    got, cache = run_evicting(model, ids, EveryThird(), "original", N_UP)
    stats = cache.stats()
    assert [s.get("evicts", True) for s in stats] == [False, False, True]
    assert stats[2]["updates"] == 3
    assert all(s["physical"] <= window for s in stats[:2])
    # reference: sliding layers see the last `window` tokens, the global layer the kept set
    length = ids.shape[1]
    t = torch.arange(length)
    sliding = ((t[None, :] <= t[:, None]) & (t[:, None] - t[None, :] < window))[None, None].expand(1, 2, -1, -1)
    full = reference_mask(length, 2, 1, 0, N_UP)
    model.set_attn_implementation("eager")
    to_add = lambda m: torch.zeros(m.shape).masked_fill(~m, torch.finfo(torch.float32).min)  # noqa: E731
    with torch.no_grad():
        want = model(
            input_ids=ids,
            attention_mask={"full_attention": to_add(full), "sliding_attention": to_add(sliding)},
            position_ids=t[None],
        ).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_small_query_chunks_give_the_same_logits(monkeypatch):
    """Attention probabilities are computed a few queries at a time on CPU (8 here): same result."""
    import harness.attention as attention

    model = tiny_llama()
    ids = torch.randint(0, 128, (1, 70), generator=torch.Generator().manual_seed(4))
    policy = EveryThird(per_head=1, needs="rows")
    want, _ = run_evicting(model, ids, policy, "exact", N_UP)
    monkeypatch.setattr(attention, "CPU_CHUNK_BYTES", 1)
    assert attention.query_chunk(1, 4, 70, torch.device("cpu")) == 8
    got, _ = run_evicting(model, ids, policy, "exact", N_UP)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
