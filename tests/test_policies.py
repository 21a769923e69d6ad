"""Policy-level tests: each built-in policy's Selection against a naive, loop-based reference.

Every expectation is computed here, per (batch, head), with plain Python loops over the slots;
the policies under test are only ever called, never used to build an expectation.
"""

from __future__ import annotations

import math

import pytest
import torch

import policies
from policies import POLICIES, make_policy
from policies.base import BudgetPolicy, LayerView, Policy, Selection, topk_mask

torch.set_num_threads(1)

B, H, N, D = 2, 3, 40, 8


# ---- helpers ---------------------------------------------------------------------------------------


def make_view(seed: int, *, n: int = N, seen: int | None = None, invalid_frac: float = 0.0, int_keys: bool = False,
              attention: bool = False, prev_acc: bool = False) -> LayerView:
    """A LayerView whose slots hold distinct, ascending, gappy positions (as after some evictions).

    With ``int_keys`` the keys hold small integers so that squared norms are exact (no float ties
    that a float64 reference could break differently); attention values are dyadic (exact sums).
    """
    g = torch.Generator().manual_seed(seed)
    seen = seen if seen is not None else n + 25
    positions = torch.empty(B, H, n, dtype=torch.long)
    for b in range(B):
        for h in range(H):
            # always keep the newest token (as the cache does), the rest a random subset
            older = torch.randperm(seen - 1, generator=g)[: n - 1].sort().values
            positions[b, h] = torch.cat([older, torch.tensor([seen - 1])])
    if int_keys:
        keys = torch.randint(-6, 7, (B, H, n, D), generator=g).float()
    else:
        keys = torch.randn(B, H, n, D, generator=g)
    values = torch.randn(B, H, n, D, generator=g)
    valid = torch.rand(B, H, n, generator=g) >= invalid_frac
    state = {}
    if prev_acc:
        state["h2o_acc"] = torch.randint(0, 16, (B, H, n), generator=g).float() / 4
    attn = torch.randint(0, 16, (B, H, n), generator=g).float() / 8 if attention else None
    return LayerView(keys=keys, values=values, positions=positions, valid=valid, seen=seen, layer_idx=0,
                     attention=attn, state=state)


def kept_sets(keep: torch.Tensor) -> list[list[set[int]]]:
    """Slot indices kept per (batch, head)."""
    return [[{i for i in range(keep.shape[-1]) if bool(keep[b, h, i])} for h in range(keep.shape[1])]
            for b in range(keep.shape[0])]


def naive_budget_keep(positions: list[int], valid: list[bool], scores: list[float], seen: int, budget: int,
                      window: int) -> set[int]:
    """Reference for BudgetPolicy on one head: slot indices kept.

    The valid tokens younger than ``window`` (age = seen - 1 - position), then the valid tokens with
    the highest score (ties: lower slot index), until ``budget`` tokens.
    """
    slots = [i for i in range(len(positions)) if valid[i]]
    recent = [i for i in slots if (seen - 1) - positions[i] < window]
    assert len(recent) <= budget
    rest = [i for i in slots if i not in recent]
    # selection sort by (score desc, index asc): deliberately naive
    chosen = list(recent)
    while len(chosen) < budget and rest:
        best = rest[0]
        for i in rest[1:]:
            if scores[i] > scores[best]:  # strict: equal scores keep the lower index
                best = i
        chosen.append(best)
        rest.remove(best)
    return set(chosen)


def head_lists(view: LayerView, b: int, h: int):
    return ([int(x) for x in view.positions[b, h]], [bool(x) for x in view.valid[b, h]])


# ---- H2O ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget,recent_window", [(16, None), (11, None), (16, 3), (12, 0), (10, 10), (60, None)])
@pytest.mark.parametrize("prev_acc", [True, False])
@pytest.mark.parametrize("invalid_frac", [0.0, 0.3])
def test_h2o_matches_naive_reference(budget, recent_window, prev_acc, invalid_frac):
    view = make_view(1000 + budget, attention=True, prev_acc=prev_acc, invalid_frac=invalid_frac)
    prev = view.state["h2o_acc"].clone() if prev_acc else None
    new = view.attention.clone()
    policy = make_policy("h2o", budget=budget, recent_window=recent_window)
    window = budget // 2 if recent_window is None else recent_window

    sel = policy.select(view)

    assert isinstance(sel, Selection)
    assert sel.keep.dtype == torch.bool and sel.keep.shape == (B, H, N)
    assert sel.scores.shape == (B, H, N)
    got = kept_sets(sel.keep)
    for b in range(B):
        for h in range(H):
            pos, valid = head_lists(view, b, h)
            acc = [(float(prev[b, h, i]) if prev is not None else 0.0) + float(new[b, h, i]) for i in range(N)]
            expected = naive_budget_keep(pos, valid, acc, view.seen, budget, window)
            assert got[b][h] == expected, (b, h)
            assert len(got[b][h]) == min(budget, sum(valid))
    # the accumulated attention is stored back for the next update
    acc_state = view.state["h2o_acc"]
    for b in range(B):
        for h in range(H):
            for i in range(N):
                want = (float(prev[b, h, i]) if prev is not None else 0.0) + float(new[b, h, i])
                assert float(acc_state[b, h, i]) == want


def test_h2o_window_is_kept_even_with_zero_attention():
    """The recent window wins over any heavy hitter, and heavy hitters fill the rest."""
    view = make_view(7, attention=True, prev_acc=False)
    view.positions = torch.arange(view.seen - N, view.seen).expand(B, H, N).clone()  # newest slots = youngest
    view.attention = torch.zeros(B, H, N)
    # make the 3 oldest slots heavy hitters
    view.attention[..., :3] = 5.0
    policy = make_policy("h2o", budget=8, recent_window=5)
    keep = policy.select(view).keep
    for b in range(B):
        for h in range(H):
            pos = [int(p) for p in view.positions[b, h]]
            newest5 = set(sorted(range(N), key=lambda i: pos[i])[-5:])
            assert kept_sets(keep)[b][h] == newest5 | {0, 1, 2}


# ---- L2 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget,recent_window", [(16, None), (9, None), (20, 2), (7, 0), (13, 13)])
def test_l2_matches_naive_reference(budget, recent_window):
    view = make_view(2000 + budget, int_keys=True)
    policy = make_policy("l2", budget=budget, recent_window=recent_window)
    window = budget // 2 if recent_window is None else recent_window
    keep = policy.select(view).keep
    got = kept_sets(keep)
    for b in range(B):
        for h in range(H):
            pos, valid = head_lists(view, b, h)
            # score = minus the L2 norm; compare squared norms (exact for integer keys)
            neg_sq = [-sum(float(x) ** 2 for x in view.keys[b, h, i]) for i in range(N)]
            expected = naive_budget_keep(pos, valid, neg_sq, view.seen, budget, window)
            assert got[b][h] == expected, (b, h)
            assert len(got[b][h]) == budget


def test_l2_prefers_low_norm_keys():
    view = make_view(5, int_keys=True)
    view.positions = torch.arange(view.seen - N, view.seen).expand(B, H, N).clone()
    view.keys = torch.ones(B, H, N, D) * 10
    view.keys[:, :, 4] = 0.01  # tiny norms on two old slots
    view.keys[:, :, 9] = 0.02
    keep = make_policy("l2", budget=6, recent_window=4).select(view).keep
    for b in range(B):
        for h in range(H):
            pos = [int(p) for p in view.positions[b, h]]
            newest4 = set(sorted(range(N), key=lambda i: pos[i])[-4:])
            assert kept_sets(keep)[b][h] == newest4 | {4, 9}


# ---- Streaming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget,n_sink", [(10, 4), (12, 0), (8, 8), (15, 1), (50, 4)])
def test_streaming_keeps_sinks_and_newest(budget, n_sink):
    g = torch.Generator().manual_seed(budget * 31 + n_sink)
    views = []
    # contiguous positions 0..N-1 as in a fresh cache, and the layout of a streaming cache after
    # evictions: the sinks, then a contiguous run of the newest tokens
    for seen in (N, 100):
        pos = torch.cat([torch.arange(n_sink), torch.arange(seen - (N - n_sink), seen)]) if seen > N else torch.arange(N)
        views.append(LayerView(torch.randn(B, H, N, D, generator=g), torch.randn(B, H, N, D, generator=g),
                               pos.expand(B, H, N).clone(), torch.ones(B, H, N, dtype=torch.bool), seen, 0))
    policy = make_policy("streaming", budget=budget, n_sink=n_sink)
    for view in views:
        got = kept_sets(policy.select(view).keep)
        for b in range(B):
            for h in range(H):
                p = [int(x) for x in view.positions[b, h]]
                n = len(p)
                if n <= budget:
                    expected = set(range(n))
                else:
                    by_pos = sorted(range(n), key=lambda i: p[i])
                    newest = set(by_pos[n - (budget - n_sink):]) if budget > n_sink else set()
                    sinks = {i for i in range(n) if p[i] < n_sink}
                    expected = sinks | newest
                assert got[b][h] == expected, (b, h)
                assert len(got[b][h]) == min(budget, n)


def test_streaming_rejects_bad_n_sink():
    with pytest.raises(ValueError):
        make_policy("streaming", budget=4, n_sink=5)
    with pytest.raises(ValueError):
        make_policy("streaming", budget=4, n_sink=-1)


# ---- full, registry, make_policy ---------------------------------------------------------------------


def test_full_keeps_every_valid_token_and_never_evicts():
    view = make_view(11, invalid_frac=0.25)
    policy = make_policy("full")
    assert policy.evicts is False
    sel = policy.select(view)
    assert torch.equal(sel.keep, view.valid)
    view = make_view(12)
    assert bool(policy.select(view).keep.all())


def test_registry_contents():
    for name in ("full", "h2o", "l2", "streaming"):
        assert name in POLICIES
        assert POLICIES[name].name == name
        assert issubclass(POLICIES[name], Policy)
        assert isinstance(make_policy(name), POLICIES[name])
    assert POLICIES["h2o"].attention == "sum"
    assert POLICIES["l2"].attention is None
    assert POLICIES["streaming"].attention is None


def test_register_twice_raises():
    with pytest.raises(ValueError):
        policies.register_policy("h2o")(type("Dup", (Policy,), {}))


def test_make_policy_ignores_none_and_unknown_options():
    p = make_policy("h2o", budget=None, recent_window=None, n_sink=3, bogus="x")
    default = POLICIES["h2o"]()
    assert p.budget == default.budget and p.recent_window is None
    assert not hasattr(p, "bogus") and not hasattr(p, "n_sink")
    p = make_policy("streaming", budget=64, n_sink=None, recent_window=None, unknown=1)
    assert (p.budget, p.n_sink) == (64, POLICIES["streaming"]().n_sink)
    p = make_policy("l2", budget=5, recent_window=2)
    assert (p.budget, p.recent_window, p.window) == (5, 2, 2)
    assert make_policy("full", budget=3, whatever=None).select(make_view(1)).keep.all()


def test_make_policy_unknown_name_raises_keyerror():
    with pytest.raises(KeyError):
        make_policy("nope")


@pytest.mark.parametrize("name", ["h2o", "l2", "streaming"])
@pytest.mark.parametrize("budget", [0, -3])
def test_budget_must_be_positive(name, budget):
    with pytest.raises(ValueError):
        make_policy(name, budget=budget, n_sink=0)
    with pytest.raises(ValueError):
        POLICIES[name](budget=budget)


def test_budget_policy_base_budget_zero():
    with pytest.raises(ValueError):
        BudgetPolicy(budget=0)


def test_window_defaults_and_clamps():
    assert make_policy("h2o", budget=9).window == 4
    assert make_policy("h2o", budget=9, recent_window=100).window == 9
    assert make_policy("streaming", budget=9, n_sink=2).window == 7


# ---- invalid slots -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(["full", "h2o", "l2", "streaming"]))
@pytest.mark.parametrize("budget", [5, 20, 100])
def test_invalid_slots_are_never_kept(name, budget):
    for seed in range(3):
        view = make_view(4000 + seed, attention=True, prev_acc=True, invalid_frac=0.4)
        # invalidate the newest slot too: recent-window tokens must not resurrect filler slots
        view.valid[:, :, -1] = False
        policy = make_policy(name, budget=budget, n_sink=2)
        keep = policy.select(view).keep
        assert not bool((keep & ~view.valid).any())
        if name != "full":
            counts = keep.sum(-1)
            n_valid = view.valid.sum(-1)
            assert torch.equal(counts, torch.minimum(n_valid, torch.tensor(budget)))


# ---- topk_mask ---------------------------------------------------------------------------------------


def test_topk_mask_matches_naive_with_ties():
    g = torch.Generator().manual_seed(99)
    scores = torch.randint(0, 5, (B, H, N), generator=g).float()
    scores[0, 0, 3] = math.inf
    for k in (1, 7, 39, 40, 45):
        mask = topk_mask(scores, k)
        for b in range(B):
            for h in range(H):
                s = [float(x) for x in scores[b, h]]
                order = sorted(range(N), key=lambda i: (-s[i], i))
                assert kept_sets(mask)[b][h] == set(order[: min(k, N)]), (k, b, h)
