"""EvictionLayer driven directly with random keys/values (no model), against a naive simulation.

The test keeps, per (batch, head), the set of positions the cache should hold, simulating each
policy with plain Python loops, and checks after every step that the layer agrees: which
positions it holds, that key/value rows travel with their positions, when the policy runs, the
budgets, the attention masks and the statistics.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.cache import EvictionLayer
from policies import make_policy
from policies.base import LayerView, Policy, Selection

torch.set_num_threads(1)

B, H, D = 2, 3, 8
N_UP = 8


# ---- a custom, unregistered policy: a different known subset per head -------------------------------


def pattern_wants(pos: int, b: int, h: int, seen: int, greedy: bool = False) -> bool:
    """Head ``h`` of batch row ``b`` wants the tokens off a mod-4 pattern that shifts with the parity
    of ``seen``, plus the newest token. The shift makes the policy ask, at the next update, for
    filler slots it dropped at this one: the cache must refuse (they are no longer valid).
    With ``greedy``, head 0 of batch row 0 wants every token (so the max count is everything)."""
    if greedy and b == 0 and h == 0:
        return True
    return (pos + h + b + seen % 2) % 4 != 0 or pos == seen - 1


def pattern_score(pos: int, b: int, h: int) -> int:
    """Distinct per head (pos < 4096), exactly representable in float32."""
    return ((pos * 37 + 11 * h + 5 * b) % 101) * 4096 + pos


class PatternPolicy(Policy):
    name = "test_pattern"  # not registered
    attention = None

    def __init__(self, greedy: bool = False):
        self.greedy = greedy
        self.views: list[LayerView] = []

    def select(self, view: LayerView) -> Selection:
        pos = view.positions.tolist()
        # deliberately NOT "& valid": the cache must never keep a filler slot
        keep = [[[pattern_wants(p, b, h, view.seen, self.greedy) for p in row] for h, row in enumerate(rows)]
                for b, rows in enumerate(pos)]
        scores = [[[float(pattern_score(p, b, h)) for p in row] for h, row in enumerate(rows)]
                  for b, rows in enumerate(pos)]
        self.views.append(view)
        return Selection(torch.tensor(scores), torch.tensor(keep))


# ---- naive reference simulation ---------------------------------------------------------------------


class Reference:
    """Per (batch, head): kept positions (valid ones), H2O's accumulated attention per position."""

    def __init__(self, kind: str, policy, mode: str):
        self.kind, self.policy, self.mode = kind, policy, mode
        self.kept = [[set() for _ in range(H)] for _ in range(B)]
        self.acc = [[{} for _ in range(H)] for _ in range(B)]
        self.seen = 0
        self.updates = 0
        self.kept_at_update = 0  # physical length right after the last update (0 before the first)
        self.seen_at_update = 0

    def add(self, q: int):
        for b in range(B):
            for h in range(H):
                for p in range(self.seen, self.seen + q):
                    self.kept[b][h].add(p)
                    self.acc[b][h][p] = 0.0
        self.seen += q

    def observe(self, probs: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        probs, positions, valid = probs.tolist(), positions.tolist(), valid.tolist()
        for b in range(B):
            for h in range(H):
                for c, p in enumerate(positions[b][h]):
                    if valid[b][h][c]:
                        self.acc[b][h][p] += sum(row[c] for row in probs[b][h])

    def update(self, slot_order: list[list[list[int]]], all_keys: torch.Tensor):
        """Run the policy. ``slot_order[b][h]`` lists the positions in the layer's slot order, used
        only to break score ties toward the lower slot, as the policies specify; ``all_keys`` holds
        the key generated for every position."""
        keys = all_keys.tolist()
        self.updates += 1
        seen = self.seen
        wanted = [[None] * H for _ in range(B)]
        for b in range(B):
            for h in range(H):
                cand = sorted(self.kept[b][h])
                slot = {p: slot_order[b][h].index(p) for p in cand}
                if self.kind == "pattern":
                    wanted[b][h] = {p for p in cand if pattern_wants(p, b, h, seen, self.policy.greedy)}
                elif self.kind == "streaming":
                    budget, n_sink = self.policy.budget, self.policy.n_sink
                    if len(cand) <= budget:
                        wanted[b][h] = set(cand)
                    else:
                        n_new = budget - n_sink
                        newest = set(cand[len(cand) - n_new:]) if n_new > 0 else set()
                        wanted[b][h] = {p for p in cand if p < n_sink} | newest
                else:  # h2o / l2: recent window + best scores, ties to the lower slot
                    budget, window = self.policy.budget, self.policy.window
                    if self.kind == "h2o":
                        score = {p: self.acc[b][h][p] for p in cand}
                    else:
                        score = {p: -sum(x * x for x in keys[b][h][p]) for p in cand}
                    chosen = [p for p in cand if (seen - 1) - p < window]
                    rest = sorted((p for p in cand if p not in chosen), key=lambda p: (-score[p], slot[p]))
                    chosen += rest[: max(0, budget - len(chosen))]
                    wanted[b][h] = set(chosen)
        # every head of batch element b keeps k_b = the max count over b's heads; the physical
        # length is the max over elements (shorter elements get filler slots)
        k_of = [max(len(wanted[b][h]) for h in range(H)) for b in range(B)]
        k = max(k_of)
        for b in range(B):
            for h in range(H):
                if self.mode == "exact" or self.kind != "pattern":
                    # budget policies: every head wants the same count, so both modes agree
                    new = wanted[b][h]
                else:  # original: each head keeps its own set, topped up to k_b by its best other scores
                    others = sorted(self.kept[b][h] - wanted[b][h], key=lambda p: -pattern_score(p, b, h))
                    new = wanted[b][h] | set(others[: k_of[b] - len(wanted[b][h])])
                self.kept[b][h] = new
                self.acc[b][h] = {p: self.acc[b][h][p] for p in new}
        self.kept_at_update = k
        self.seen_at_update = seen
        return wanted


# ---- checks -----------------------------------------------------------------------------------------


def layer_sets(layer: EvictionLayer) -> list[list[set[int]]]:
    pos, valid = layer.positions.tolist(), layer_valid(layer).tolist()
    return [[{p for p, v in zip(pos[b][h], valid[b][h]) if v} for h in range(H)] for b in range(B)]


def layer_valid(layer: EvictionLayer) -> torch.Tensor:
    return layer.valid if layer.valid is not None else torch.ones_like(layer.positions, dtype=torch.bool)


def check_rows_follow_positions(layer: EvictionLayer, all_k: torch.Tensor, all_v: torch.Tensor):
    """Every slot (filler included) holds the key/value row generated for its position."""
    n = layer.positions.shape[-1]
    assert layer.keys.shape == (B, H, n, D) and layer.values.shape == (B, H, n, D)
    pos, keys, values = layer.positions.tolist(), layer.keys.tolist(), layer.values.tolist()
    for b in range(B):
        for h in range(H):
            for i, p in enumerate(pos[b][h]):
                assert keys[b][h][i] == all_k[b][h][p], (b, h, i, p)
                assert values[b][h][i] == all_v[b][h][p], (b, h, i, p)


def check_stats(layer: EvictionLayer):
    st = layer.stats()
    n = layer.positions.shape[-1]
    pos, valid = layer.positions.tolist(), layer_valid(layer).tolist()
    per_head = []
    ages, count = 0.0, 0
    for h in range(H):
        c = 0
        for b in range(B):
            for i in range(n):
                if valid[b][h][i]:
                    c += 1
                    ages += (layer.seen - 1) - pos[b][h][i]
                    count += 1
        per_head.append(c / B)
    assert st["physical"] == n
    assert st["per_head"] == pytest.approx(per_head, abs=1e-3)
    assert st["logical"] == pytest.approx(sum(per_head) / H, abs=1e-3)
    assert st["mean_age"] == pytest.approx(ages / count, abs=1e-3)
    assert st["updates"] == layer.n_updates
    assert st["layer"] == 0


def check_attend_mask(layer: EvictionLayer, q: int, g: torch.Generator):
    n, seen = layer.positions.shape[-1], layer.seen
    pos, valid = layer.positions.tolist(), layer_valid(layer).tolist()
    # causal: query i (absolute position seen - q + i) sees kept keys at or before it
    mask = layer.attend_mask(None, q)
    assert mask.shape == (B, H, q, n) and mask.dtype == torch.bool
    want = [[[[pos[b][h][c] <= seen - q + i and valid[b][h][c] for c in range(n)] for i in range(q)]
             for h in range(H)] for b in range(B)]
    assert mask.tolist() == want
    # transformers' 4D mask over absolute positions (bool, or additive float): gather kept columns
    full = torch.rand(B, 1, q, seen, generator=g) < 0.6
    additive = torch.zeros(B, 1, q, seen).masked_fill(~full, -math.inf)
    allowed = full.tolist()
    want = [[[[allowed[b][0][i][pos[b][h][c]] and valid[b][h][c] for c in range(n)] for i in range(q)]
             for h in range(H)] for b in range(B)]
    for given in (full, additive):
        mask = layer.attend_mask(given, q)
        assert mask.shape == (B, H, q, n) and mask.dtype == torch.bool
        assert mask.tolist() == want


# ---- the driver -------------------------------------------------------------------------------------


def build_policy(kind: str):
    if kind == "pattern":
        return PatternPolicy()
    if kind == "pattern_greedy":
        return PatternPolicy(greedy=True)
    if kind == "h2o":
        return make_policy("h2o", budget=14, recent_window=4)
    if kind == "h2o_default":
        return make_policy("h2o", budget=11)
    if kind == "l2":
        return make_policy("l2", budget=12)
    if kind == "streaming":
        return make_policy("streaming", budget=13, n_sink=3)
    raise AssertionError(kind)


CASES = [(kind, mode, seed) for kind in ("h2o", "h2o_default", "l2", "streaming", "pattern", "pattern_greedy")
         for mode in ("original", "exact") for seed in (0, 1)]


@pytest.mark.parametrize("kind,mode,seed", CASES)
def test_layer_against_reference(kind, mode, seed):
    g = torch.Generator().manual_seed(1000 * seed + len(kind) + (7 if mode == "exact" else 0))
    policy = build_policy(kind)
    ref_kind = "h2o" if kind.startswith("h2o") else "pattern" if kind.startswith("pattern") else kind
    ref = Reference(ref_kind, policy, mode)
    layer = EvictionLayer(policy, layer_idx=0, n_up=N_UP, mode=mode)
    budget = getattr(policy, "budget", None)
    n_steps = 30
    total = 12 * n_steps
    # small integer keys: squared norms are exact (L2's ranking has no float near-ties); position-
    # distinct rows so that a row moving without its position is caught
    all_k = torch.randint(-5, 6, (B, H, total, D), generator=g).float()
    all_v = torch.randn(B, H, total, D, generator=g)
    all_v[..., 0] = torch.arange(total).float()
    all_k_l, all_v_l = all_k.tolist(), all_v.tolist()
    saw_filler = saw_uneven = False

    for step in range(n_steps):
        q = int(torch.randint(1, 13, (1,), generator=g))
        s = layer.seen
        k_new, v_new = all_k[:, :, s : s + q].clone(), all_v[:, :, s : s + q].clone()
        keys, values = layer.update(k_new, v_new)
        ref.add(q)
        assert layer.seen == ref.seen == s + q
        assert keys is layer.keys and values is layer.values
        # before any policy update: every new token is in, nothing else changed
        assert layer.positions.shape == (B, H, ref.kept_at_update + (ref.seen - ref.seen_at_update))
        assert layer_sets(layer) == ref.kept
        assert torch.equal(layer.positions[..., -q:], torch.arange(s, s + q).expand(B, H, q))
        check_rows_follow_positions(layer, all_k_l, all_v_l)
        check_attend_mask(layer, q, g)
        check_stats(layer)

        if layer.needs_attention == "sum":
            n_cur = layer.keys.shape[-2]
            probs = torch.randint(0, 8, (B, H, q, n_cur), generator=g).float() / 4  # exact sums
            ref.observe(probs, layer.positions, layer_valid(layer))
            layer.observe(probs[:, :, None])  # one query head per KV group

        slot_order = [[[int(p) for p in layer.positions[b, h]] for h in range(H)] for b in range(B)]
        n_before = layer.positions.shape[-1]
        layer.maybe_evict()
        crossed = ref.seen // N_UP != s // N_UP
        if crossed:
            wanted = ref.update(slot_order, all_k)
        assert layer.n_updates == ref.updates
        if crossed:
            assert layer.updated_at == ref.seen

        sets = layer_sets(layer)
        assert sets == ref.kept, (step, crossed)
        check_rows_follow_positions(layer, all_k_l, all_v_l)
        check_stats(layer)
        check_attend_mask(layer, q, g)
        assert layer.positions.shape[-1] == ref.kept_at_update + (ref.seen - ref.seen_at_update)

        if crossed:
            counts = [[len(sets[b][h]) for h in range(H)] for b in range(B)]
            if budget is not None:  # budget policies: exactly min(budget, tokens held) per head
                for b in range(B):
                    for h in range(H):
                        assert counts[b][h] == min(budget, n_before)
                st = layer.stats()
                assert st["logical"] <= budget and max(st["per_head"]) <= budget
                assert layer.positions.shape[-1] <= budget
                assert layer.valid is None  # equal counts: no filler in either mode
            elif mode == "exact":
                kmax = max(len(wanted[b][h]) for b in range(B) for h in range(H))
                assert layer.positions.shape[-1] == kmax
                valid = layer_valid(layer)
                for b in range(B):
                    for h in range(H):
                        assert sets[b][h] == wanted[b][h]
                        n_filler = kmax - len(wanted[b][h])
                        assert int((~valid[b, h]).sum()) == n_filler
                        # filler slots hold positions the head did not keep
                        filler = {int(p) for p, v in zip(layer.positions[b, h], valid[b, h]) if not v}
                        assert not (filler & wanted[b][h])
                        saw_filler |= n_filler > 0
            else:  # original, uneven wants: all heads of an element keep that element's max count
                k_of = [max(len(wanted[b][h]) for h in range(H)) for b in range(B)]
                assert all(c == k_of[b] for b, row in enumerate(counts) for c in row)
                assert layer.positions.shape[-1] == max(k_of)
                valid = layer_valid(layer)
                assert [int((~valid[b]).sum()) for b in range(B)] == [H * (max(k_of) - k_of[b]) for b in range(B)]
                saw_uneven |= len({len(wanted[b][h]) for b in range(B) for h in range(H)}) > 1

    assert layer.n_updates == ref.updates > 10
    if ref_kind == "pattern" and mode == "original":
        assert saw_uneven
    if ref_kind == "pattern" and mode == "exact":
        assert saw_filler
        # the policy was shown the filler slots as invalid
        assert any(not bool(v.valid.all()) for v in policy.views)
    if kind == "pattern_greedy":  # one head wants everything: nothing is ever physically dropped
        assert layer.positions.shape[-1] == layer.seen
    if ref_kind == "pattern":
        # the policy saw consistent views: positions are absolute, the newest is seen - 1
        for v in policy.views:
            assert int(v.positions.max()) == v.seen - 1


def test_h2o_state_accumulates_across_updates():
    """The layer's stored h2o_acc equals the naive sum of every attention a kept token received."""
    g = torch.Generator().manual_seed(5)
    policy = make_policy("h2o", budget=10, recent_window=3)
    layer = EvictionLayer(policy, layer_idx=0, n_up=N_UP, mode="original")
    acc: list[list[dict[int, float]]] = [[{} for _ in range(H)] for _ in range(B)]
    for _ in range(20):
        q = int(torch.randint(1, 13, (1,), generator=g))
        layer.update(torch.randn(B, H, q, D, generator=g), torch.randn(B, H, q, D, generator=g))
        probs = torch.randint(0, 8, (B, H, q, layer.keys.shape[-2]), generator=g).float() / 8
        for b in range(B):
            for h in range(H):
                for c in range(layer.positions.shape[-1]):
                    p = int(layer.positions[b, h, c])
                    acc[b][h][p] = acc[b][h].get(p, 0.0) + float(probs[b, h, :, c].sum())
        layer.observe(probs[:, :, None])  # one query head per KV group
        before = layer.n_updates
        layer.maybe_evict()
        if layer.n_updates > before:
            st = layer.state["h2o_acc"]
            assert st.shape == layer.positions.shape
            for b in range(B):
                for h in range(H):
                    for c in range(layer.positions.shape[-1]):
                        assert float(st[b, h, c]) == acc[b][h][int(layer.positions[b, h, c])]
    assert layer.n_updates > 5


@pytest.mark.parametrize("mode", ["original", "exact"])
def test_full_policy_never_evicts(mode):
    g = torch.Generator().manual_seed(3)
    layer = EvictionLayer(make_policy("full"), layer_idx=0, n_up=N_UP, mode=mode)
    assert layer.needs_attention is None
    seen = 0
    for _ in range(15):
        q = int(torch.randint(1, 13, (1,), generator=g))
        k = torch.randn(B, H, q, D, generator=g)
        layer.update(k, k.clone())
        layer.maybe_evict()
        seen += q
        assert layer.seen == seen and layer.n_updates == 0
        assert torch.equal(layer.positions, torch.arange(seen).expand(B, H, seen))
        assert layer.valid is None
        assert layer.stats()["logical"] == seen


def test_constructor_validates():
    with pytest.raises(ValueError):
        EvictionLayer(make_policy("h2o"), 0, n_up=8, mode="nope")
    with pytest.raises(ValueError):
        EvictionLayer(make_policy("h2o"), 0, n_up=0)


def test_stats_before_any_token():
    st = EvictionLayer(make_policy("l2"), 0, n_up=8).stats()
    assert st["physical"] == 0 and st["per_head"] == [] and st["updates"] == 0


@pytest.mark.parametrize("shape", [(2, 3, 11), (2, 3, 11, 8), (1, 2, 11, 4, 5)])
def test_gather_tokens_moves_whole_rows_per_batch_and_head(shape):
    """The flat ``index_select`` path equals an explicit per-(batch, head) selection."""
    from harness.cache import _gather_tokens

    gen = torch.Generator().manual_seed(0)
    t = torch.randn(*shape, generator=gen)
    b, h, n = shape[:3]
    idx = torch.stack([torch.stack([torch.randperm(n, generator=gen)[:6].sort().values for _ in range(h)])
                       for _ in range(b)])  # [b, h, 6], a different subset per head
    out = _gather_tokens(t, idx)
    assert out.shape == (b, h, 6, *shape[3:])
    for i in range(b):
        for j in range(h):
            assert torch.equal(out[i, j], t[i, j, idx[i, j]])
