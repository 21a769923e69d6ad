"""NAMM's per-token state (STFT carry and spectrogram EMA) carried across evictions inside the cache,
against a hand computation: ``spectrogram_ema`` per update, with the previous update's carry/EMA
gathered to the tokens kept (by position) and zeros for the tokens that arrived since. Buffered
(``stream_rows=False``) and streamed (``stream_rows=True``) rows must give the same state."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from policies import make_policy
from policies.namm.features import spectrogram_ema
from policies.namm.scorers import SCORERS

N_UP = 32
N_TOKENS = 4 * N_UP


def regather(t: torch.Tensor, prev_pos: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``t`` (``[b, h, n_prev, X]``, per token at ``prev_pos``) moved to the tokens at ``pos``
    (``[b, h, n]``); zeros for positions not in ``prev_pos`` (new tokens)."""
    match = (pos[..., :, None] == prev_pos[..., None, :]).to(t.dtype)  # [b, h, n, n_prev]
    assert bool((match.sum(-1) <= 1).all())
    return torch.einsum("bhnp,bhpx->bhnx", match, t)


def run(stream_rows: bool):
    params = torch.randn(SCORERS["bam"]().n_params, generator=torch.Generator().manual_seed(3)) * 0.5
    policy = make_policy("namm_bam", n_up=N_UP, params=params)
    records: dict[int, list[dict]] = {}
    select = policy.select

    def recording_select(view):
        records.setdefault(view.layer_idx, []).append({
            "seen": view.seen,
            "positions": view.positions.clone(),
            "rows": None if view.attention is None else view.attention.detach().clone(),
            "state_in": {k: v.clone() for k, v in view.state.items()},
        })
        selection = select(view)
        records[view.layer_idx][-1]["kept"] = int(selection.keep.sum(-1).max())
        return selection

    policy.select = recording_select
    model = tiny_llama()
    attach(model)
    cache = EvictionCache(model.config, policy, n_up=N_UP, stream_rows=stream_rows)
    ids = torch.randint(0, 128, (1, N_TOKENS), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for start in range(0, N_TOKENS, N_UP):
            model(input_ids=ids[:, start : start + N_UP], past_key_values=cache)
    return policy, cache, records


@pytest.fixture(scope="module")
def buffered():
    return run(stream_rows=False)


@pytest.fixture(scope="module")
def streamed():
    return run(stream_rows=True)


def test_carry_and_ema_across_evictions_match_a_hand_computation(buffered):
    policy, cache, records = buffered
    cfg = policy.features
    for layer in cache.eviction_layers:
        recs = records[layer.layer_idx]
        assert [r["seen"] for r in recs] == list(range(N_UP, N_TOKENS + 1, N_UP))
        # the policy does evict, so the gathering is exercised
        assert any(r["kept"] < r["positions"].shape[-1] for r in recs[:-1])
        assert not recs[0]["state_in"]  # a new sequence: no state yet
        ema = carry = prev_pos = None
        for i, r in enumerate(recs):
            pos, rows, seen = r["positions"], r["rows"], r["seen"]
            assert rows.shape[-2] == N_UP and rows.shape[-1] == pos.shape[-1]
            if ema is not None:  # the previous update's state, at the tokens kept since, zeros for new ones
                ema, carry = regather(ema, prev_pos, pos), regather(carry, prev_pos, pos)
                new = pos >= seen - N_UP
                assert bool((ema[new] == 0).all()) and bool((carry[new] == 0).all())
                assert int(new[0, 0].sum()) == N_UP
                torch.testing.assert_close(r["state_in"]["namm_ema"], ema, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(r["state_in"]["namm_carry"], carry, atol=1e-5, rtol=1e-5)
            num_new = int((pos[0, 0] >= seen - N_UP).sum())
            ema, carry = spectrogram_ema(rows, carry, ema, cfg, num_new=num_new)
            prev_pos = pos
        # after the last update the cache holds the state of the tokens it kept
        torch.testing.assert_close(layer.state["namm_ema"], regather(ema, prev_pos, layer.positions),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.state["namm_carry"], regather(carry, prev_pos, layer.positions),
                                   atol=1e-5, rtol=1e-5)


def test_streamed_rows_give_the_same_state_as_buffered_rows(buffered, streamed):
    _, cache_b, records_b = buffered
    _, cache_s, records_s = streamed
    for layer_b, layer_s in zip(cache_b.eviction_layers, cache_s.eviction_layers, strict=True):
        assert all(r["rows"] is None for r in records_s[layer_s.layer_idx])  # really streamed
        for rb, rs in zip(records_b[layer_b.layer_idx], records_s[layer_s.layer_idx], strict=True):
            assert torch.equal(rb["positions"], rs["positions"])
            assert rb["state_in"].keys() == rs["state_in"].keys()
            for key in rb["state_in"]:
                torch.testing.assert_close(rs["state_in"][key], rb["state_in"][key], atol=1e-5, rtol=1e-5)
        assert torch.equal(layer_b.positions, layer_s.positions)
        for key in ("namm_ema", "namm_carry"):
            torch.testing.assert_close(layer_s.state[key], layer_b.state[key], atol=1e-5, rtol=1e-5)
