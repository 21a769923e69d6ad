"""NAMM scorers: parameter counts, zero-init, naive loop references, the backward mask, fillers,
batched (per-population-member) parameters. Reference values are computed here from the documented
flat layout, independently of the scorer code."""

import math

import pytest
import torch

from policies.namm.scorers import SCORERS, BAMScorer, MLPScorer

torch.set_num_threads(1)

D = 25
K = 32


def _slices(layout):
    """Offsets of each named tensor in the flat vector, from a (name, shape) list written out here."""
    out, off = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = (off, shape)
        off += size
    return out, off


# The documented layouts, written out independently of the implementation.
BAM_LAYOUT = [
    ("q_weight", (K, D)), ("q_bias", (K,)), ("k_weight", (K, D)), ("k_bias", (K,)),
    ("v_weight", (K, D)), ("v_bias", (K,)), ("out_weight", (2 * D, K)), ("out_bias", (2 * D,)),
    ("final_weight", (1, D)), ("final_bias", (1,)),
]
MLP_LAYOUT = [
    ("w0", (D, D)), ("b0", (D,)), ("w1", (D, D)), ("b1", (D,)), ("out_weight", (1, D)), ("out_bias", (1,)),
]


def _get(flat, layout, name):
    sl, _ = _slices(layout)
    off, shape = sl[name]
    return flat[off:off + math.prod(shape)].reshape(shape)


def naive_bam(x, valid, flat):
    """Per-token loops with an explicit softmax over j >= i (valid j, and always j == i)."""
    g = lambda n: _get(flat, BAM_LAYOUT, n)  # noqa: E731
    b, h, n, _ = x.shape
    out = torch.full((b, h, n), float("nan"), dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            xs = [x[bi, hi, t].double() if valid[bi, hi, t] else torch.zeros(D, dtype=torch.float64)
                  for t in range(n)]
            for i in range(n):
                if not valid[bi, hi, i]:
                    continue  # a filler's own score is irrelevant
                q = g("q_weight") @ xs[i] + g("q_bias")
                logits, vals = [], []
                for j in range(i, n):
                    if not valid[bi, hi, j]:
                        continue
                    k = g("k_weight") @ xs[j] + g("k_bias")
                    logits.append(float(q @ k) / math.sqrt(K))
                    vals.append(g("v_weight") @ xs[j] + g("v_bias"))
                mx = max(logits)
                w = [math.exp(l - mx) for l in logits]
                z = sum(w)
                a = sum(wj / z * vj for wj, vj in zip(w, vals))
                rm = g("out_weight") @ a + g("out_bias")
                r, m = rm[:D], rm[D:]
                xn = xs[i] * (1 + m) + r
                out[bi, hi, i] = float(g("final_weight")[0] @ xn + g("final_bias")[0])
    return out


def naive_mlp(x, flat):
    g = lambda n: _get(flat, MLP_LAYOUT, n)  # noqa: E731
    b, h, n, _ = x.shape
    out = torch.empty((b, h, n), dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                v = x[bi, hi, i].double()
                v = v + torch.clamp(g("w0") @ v + g("b0"), min=0)
                v = v + torch.clamp(g("w1") @ v + g("b1"), min=0)
                out[bi, hi, i] = float(g("out_weight")[0] @ v + g("out_bias")[0])
    return out


def _rand(*shape, seed=0, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


# --- sizes and layout ------------------------------------------------------------------------------

def test_param_counts_and_layout():
    bam, mlp = BAMScorer(), MLPScorer()
    assert bam.n_params == 4172 == 3 * (D * K + K) + (K * 2 * D + 2 * D) + (D + 1)
    assert [(n, tuple(s)) for n, s in bam.layout()] == BAM_LAYOUT
    assert mlp.n_params == 1326 == 2 * (D * D + D) + (D + 1)
    assert [(n, tuple(s)) for n, s in mlp.layout()] == MLP_LAYOUT
    assert SCORERS == {"bam": BAMScorer, "mlp": MLPScorer}
    for cls in (BAMScorer, MLPScorer):
        s = cls()
        flat = _rand(3, s.n_params, seed=1)
        parts = s.unflatten(flat)
        assert list(parts) == [n for n, _ in s.layout()]
        assert torch.equal(s.flatten(parts), flat)
        off = 0
        for name, shape in s.layout():  # row-major slices, in layout order
            size = math.prod(shape)
            assert torch.equal(parts[name].reshape(3, -1), flat[:, off:off + size])
            off += size


@pytest.mark.parametrize("name", ["bam", "mlp"])
def test_zero_params_zero_scores(name):
    s = SCORERS[name]()
    x = _rand(2, 3, 40, D, seed=2, dtype=torch.float32, scale=3.0)
    valid = _rand(2, 3, 40, seed=3) > -0.5
    for params in (s.zeros(), torch.zeros(2, s.n_params)):
        for v in (valid, None):
            out = s.score(x, v, params)
            assert out.shape == (2, 3, 40)
            assert bool((out == 0).all())


def test_bad_param_shape_raises():
    s = BAMScorer()
    x = torch.zeros(2, 1, 4, D)
    with pytest.raises(ValueError):
        s.score(x, None, torch.zeros(s.n_params + 1))
    with pytest.raises(ValueError):
        s.score(x, None, torch.zeros(3, s.n_params))  # 3 rows for batch 2


# --- BAM -------------------------------------------------------------------------------------------

def test_bam_matches_naive_reference():
    s = BAMScorer()
    x = _rand(2, 2, 9, D, seed=4)
    valid = torch.ones(2, 2, 9, dtype=torch.bool)
    valid[0, 0, [1, 4, 8]] = False  # includes the newest slot
    valid[1, 1, [0, 2, 3]] = False
    x[~valid] = 1e6  # filler contents must not matter
    flat = _rand(s.n_params, seed=5, scale=0.3)
    got = s.score(x, valid, flat)
    ref = naive_bam(x, valid, flat)
    assert torch.allclose(got[valid], ref[valid], rtol=1e-10, atol=1e-10)
    assert bool(torch.isfinite(got).all())
    # float32 path agrees too
    got32 = s.score(x.float(), valid, flat.float())
    assert torch.allclose(got32[valid].double(), ref[valid], rtol=1e-4, atol=1e-4)
    # all-valid with valid=None
    x2 = _rand(1, 3, 7, D, seed=6)
    v2 = torch.ones(1, 3, 7, dtype=torch.bool)
    assert torch.allclose(s.score(x2, None, flat), naive_bam(x2, v2, flat), rtol=1e-10, atol=1e-10)


def _dependency_matrix(scorer, x, valid, flat, b=0, h=0):
    """dep[i, j] = score of token i (in batch b, head h) changes when token j's features change."""
    n = x.shape[2]
    base = scorer.score(x, valid, flat)
    dep = torch.zeros(n, n, dtype=torch.bool)
    for j in range(n):
        xp = x.clone()
        xp[b, h, j] += _rand(D, seed=100 + j)
        diff = scorer.score(xp, valid, flat) - base
        # nothing outside (b, h) may move, not even by rounding
        mask = torch.ones_like(diff, dtype=torch.bool)
        mask[b, h] = False
        assert bool((diff[mask] == 0).all())
        changed = diff[b, h].abs() > 1e-12
        unchanged_exactly = diff[b, h] == 0
        assert bool((changed | unchanged_exactly).all()), "a dependency too small to classify"
        dep[:, j] = changed
    return dep


def test_bam_backward_mask_dependency_pattern():
    s = BAMScorer()
    n = 8
    x = _rand(2, 2, n, D, seed=7)
    flat = _rand(s.n_params, seed=8, scale=0.5)
    dep = _dependency_matrix(s, x, None, flat, b=1, h=1)
    expected = torch.ones(n, n, dtype=torch.bool).triu()  # [i, j]: j >= i
    assert torch.equal(dep, expected), f"dependency pattern\n{dep.int()}"
    # batched params: same pattern, still no cross-talk between batch elements
    flat_b = _rand(2, s.n_params, seed=9, scale=0.5)
    assert torch.equal(_dependency_matrix(s, x, None, flat_b, b=0, h=1), expected)


def test_bam_invalid_tokens_do_not_affect_valid_scores():
    s = BAMScorer()
    n = 12
    x = _rand(2, 3, n, D, seed=10)
    valid = _rand(2, 3, n, seed=11) > -0.3
    valid[..., -1] = True
    valid[0, 2, 5:] = False  # newest tokens fillers; the oldest still valid
    valid[0, 2, 0] = True
    flat = _rand(s.n_params, seed=12, scale=0.5)
    base = s.score(x, valid, flat)
    for fill in (1e8, float("nan"), float("inf")):
        x2 = x.clone()
        x2[~valid] = fill
        out = s.score(x2, valid, flat)
        assert torch.equal(out[valid], base[valid])
        assert bool(torch.isfinite(out).all())
    # a filler slot behaves as if absent: equals scoring the compacted sequence of each (b, h)
    for bi in range(2):
        for hi in range(3):
            keep = valid[bi, hi]
            compact = x[bi, hi][keep][None, None]
            ref = s.score(compact, None, flat)[0, 0]
            assert torch.allclose(base[bi, hi][keep], ref, rtol=1e-10, atol=1e-10)


def test_bam_invalid_tokens_dependency_pattern():
    """With fillers, token i depends exactly on valid j >= i (and on itself)."""
    s = BAMScorer()
    n = 9
    x = _rand(1, 1, n, D, seed=13)
    valid = torch.tensor([[[True, False, True, True, False, True, False, True, True]]])
    flat = _rand(s.n_params, seed=14, scale=0.5)
    dep = _dependency_matrix(s, x, valid, flat)
    expected = torch.ones(n, n, dtype=torch.bool).triu() & valid[0, 0][None, :]
    v = valid[0, 0]
    assert torch.equal(dep[v], expected[v])


@pytest.mark.parametrize("name", ["bam", "mlp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_params_equal_loop(name, dtype):
    s = SCORERS[name]()
    b = 4
    x = _rand(b, 3, 33, D, seed=15, dtype=dtype)
    valid = _rand(b, 3, 33, seed=16) > -0.5
    flat = _rand(b, s.n_params, seed=17, dtype=dtype, scale=0.3)
    out = s.score(x, valid, flat)
    loop = torch.cat([s.score(x[i:i + 1], valid[i:i + 1], flat[i]) for i in range(b)])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(out[valid], loop[valid], rtol=tol, atol=tol)
    # shared [n_params] == [b, n_params] with identical rows == [1, n_params]
    shared = s.score(x, valid, flat[1])
    rep = s.score(x, valid, flat[1].expand(b, -1))
    one = s.score(x, valid, flat[1:2])
    assert torch.allclose(shared[valid], rep[valid], rtol=tol, atol=tol)
    assert torch.equal(shared, one)


def test_half_precision_inputs():
    s = BAMScorer()
    x = _rand(1, 2, 16, D, seed=18, dtype=torch.float32)
    valid = torch.ones(1, 2, 16, dtype=torch.bool)
    valid[0, 0, 10:] = False
    flat = _rand(s.n_params, seed=19, dtype=torch.float32, scale=0.3)
    out = s.score(x.bfloat16(), valid, flat)
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out.float()).all())
    ref = s.score(x.bfloat16().float(), valid, flat)
    assert torch.allclose(out.float()[valid], ref[valid], rtol=1e-2, atol=1e-2)


# --- MLP -------------------------------------------------------------------------------------------

def test_mlp_matches_naive_reference():
    s = MLPScorer()
    x = _rand(2, 2, 7, D, seed=20)
    flat = _rand(s.n_params, seed=21, scale=0.4)
    assert torch.allclose(s.score(x, None, flat), naive_mlp(x, flat), rtol=1e-10, atol=1e-10)
    valid = torch.ones(2, 2, 7, dtype=torch.bool)
    valid[1, 0, 3] = False
    got = s.score(x, valid, flat)
    assert torch.allclose(got[valid], naive_mlp(x, flat)[valid], rtol=1e-10, atol=1e-10)


def test_mlp_is_tokenwise():
    s = MLPScorer()
    n = 6
    x = _rand(1, 2, n, D, seed=22)
    flat = _rand(s.n_params, seed=23, scale=0.5)
    dep = _dependency_matrix(s, x, None, flat, b=0, h=1)
    assert torch.equal(dep, torch.eye(n, dtype=torch.bool))
