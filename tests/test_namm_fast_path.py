"""The fast NAMM path: the streamed spectrogram equals the buffered one, the cache that streams
equals the cache that buffers, and the last window that can never reach an update collects no
attention (same outputs, fused kernels).

Expectations come from the buffered reference path (``spectrogram_ema`` over the whole update's
rows, itself tested against an explicit DFT loop in ``test_namm_features.py``).
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from harness.generation import greedy_generate
from policies import make_policy
from policies.namm.features import FeatureConfig, _dft_matrix, spectrogram_ema
from policies.namm.stream import SpectrogramStream, _dft_nonzero
from policies.namm.scorers import SCORERS
from test_namm_features import causal_rows, naive_update

P, NF = 16, 17


def stream(rows, carry, prev, cfg, chunks, n_old, dtype=None, block=64):
    """Push ``rows [b, h, Q, n]`` in ``chunks``; key j >= n_old arrives with query j - n_old, so each
    chunk sees only the keys that exist by its last query (the cache's growing key axis)."""
    s = SpectrogramStream(carry, prev, cfg, block=block, dft_dtype=dtype)
    q0 = 0
    for c in chunks:
        s.push(rows[:, :, q0 : q0 + c, : n_old + q0 + c])
        q0 += c
    assert q0 == rows.shape[-2] and s.rows == q0
    return s.finish()


def padded(t, new):
    return F.pad(t, (0, 0, 0, new))


@pytest.mark.parametrize("chunks", [[128], [16] * 8, [8] * 16, [5, 11, 16, 32, 64], [1] * 128, [100, 28]])
def test_stream_equals_buffered_update_for_any_chunking(chunks):
    b, h, Q, n_old = 2, 3, 128, 40
    n = n_old + Q
    cfg = FeatureConfig(gamma=0.97)
    rows = causal_rows(b, h, Q, n, seed=3)
    gen = torch.Generator().manual_seed(0)
    carry, prev = torch.rand(b, h, n_old, P, generator=gen), torch.rand(b, h, n_old, NF, generator=gen)
    ref_ema, ref_carry = spectrogram_ema(rows, padded(carry, Q), padded(prev, Q), cfg)
    ema, new_carry = stream(rows, carry, prev, cfg, chunks, n_old)
    assert ema.shape == (b, h, n, NF) and ema.dtype == torch.float32
    torch.testing.assert_close(ema, ref_ema, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_carry, ref_carry, rtol=0, atol=0)  # the last P rows, copied


@pytest.mark.parametrize("n_fft, hop", [(32, 16), (24, 8), (15, 5), (16, 16)])
def test_stream_equals_buffered_update_for_other_frame_geometries(n_fft, hop):
    """Odd n_fft has a sine row at its highest frequency, even n_fft none (Nyquist): the stream's
    reduced DFT must keep exactly the nonzero rows for either."""
    b, h, Q, n_old = 1, 2, 12 * hop, 20
    cfg = FeatureConfig(n_fft=n_fft, hop=hop, gamma=0.95)
    carry_len, freqs = n_fft - hop, n_fft // 2 + 1
    rows = causal_rows(b, h, Q, n_old + Q, seed=11, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    carry = torch.rand(b, h, n_old, carry_len, generator=gen, dtype=torch.float64)
    prev = torch.rand(b, h, n_old, freqs, generator=gen, dtype=torch.float64)
    ref_ema, ref_carry = spectrogram_ema(rows, padded(carry, Q), padded(prev, Q), cfg)
    ema, new_carry = stream(rows, carry, prev, cfg, [7, Q - 7], n_old)
    torch.testing.assert_close(ema, ref_ema, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new_carry, ref_carry, rtol=0, atol=0)


def test_reduced_dft_drops_only_the_identically_zero_sine_rows():
    for n_fft, dropped in [(32, 2), (15, 1)]:
        cfg = FeatureConfig(n_fft=n_fft, hop=min(16, n_fft))
        full = _dft_matrix(cfg, torch.float64, torch.device("cpu"))
        reduced, sines = _dft_nonzero(cfg, torch.float64, torch.device("cpu"))
        F_ = cfg.n_freq
        assert reduced.shape == (2 * F_ - dropped, n_fft) and sines == F_ - dropped
        zero_rows = [r for r in range(2 * F_) if bool((full[r].abs() < 1e-12).all())]
        assert len(zero_rows) == dropped and all(r >= F_ for r in zero_rows)
        kept = [r for r in range(2 * F_) if r not in zero_rows]
        torch.testing.assert_close(reduced, full[kept], rtol=0, atol=0)


def test_stream_float64_matches_explicit_loop_tightly():
    b, h, Q, n_old = 1, 2, 64, 24
    n = n_old + Q
    rows = causal_rows(b, h, Q, n, seed=5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    carry = torch.rand(b, h, n_old, P, generator=gen, dtype=torch.float64)
    prev = torch.rand(b, h, n_old, NF, generator=gen, dtype=torch.float64)
    ema, _ = stream(rows, carry, prev, FeatureConfig(gamma=0.9), [7, 9, 16, 32], n_old)
    assert ema.dtype == torch.float64
    expected = naive_update(rows, padded(carry, Q), padded(prev, Q), 0.9)
    torch.testing.assert_close(ema, expected, rtol=1e-10, atol=1e-12)


def test_two_streamed_updates_equal_two_buffered_updates():
    """The carry and EMA a stream returns feed the next update exactly like the buffered path's."""
    b, h, Q = 1, 2, 64
    cfg = FeatureConfig(gamma=0.95)
    rows1 = causal_rows(b, h, Q, Q, seed=7)
    rows2 = causal_rows(b, h, Q, 2 * Q, seed=8)
    e1, c1 = spectrogram_ema(rows1, None, None, cfg)
    e2, c2 = spectrogram_ema(rows2, padded(c1, Q), padded(e1, Q), cfg)
    s1 = stream(rows1, None, None, cfg, [32, 32], 0)
    s2 = stream(rows2, s1[1], s1[0], cfg, [16, 48], Q)
    torch.testing.assert_close(s2[0], e2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s2[1], c2)


def test_bf16_stream_rounds_only_the_dft_inputs():
    """In a bf16 model the rows arrive in bf16: the result stays float32 and within bf16's rounding
    of the float32 reference (relative error ~2^-9 per input), far from a wrong transform."""
    b, h, Q, n_old = 2, 3, 128, 40
    rows = causal_rows(b, h, Q, n_old + Q, seed=9)
    ref, _ = spectrogram_ema(rows.bfloat16().float(), None, None, FeatureConfig())
    ema, carry = stream(rows.bfloat16(), None, None, FeatureConfig(), [16] * 8, n_old, dtype=torch.bfloat16)
    assert ema.dtype == torch.float32 and carry.dtype == torch.float32
    rel = ((ema - ref).norm() / ref.norm()).item()
    assert 0 < rel < 5e-3


def test_stream_rejects_partial_hops():
    s = SpectrogramStream(None, None, FeatureConfig())
    s.push(causal_rows(1, 1, 24, 24))
    with pytest.raises(ValueError, match="multiple of hop"):
        s.finish()


# ---------------------------------------------------------------- through the cache

N_UP = 32


def namm(seed_params, **kw):
    params = torch.stack([torch.randn(SCORERS["bam"]().n_params, generator=torch.Generator().manual_seed(s)) * 0.5
                          for s in seed_params])
    return make_policy("namm_bam", n_up=N_UP, params=params, **kw)


def generate(policy, ids, batch=1, **cache_kw):
    model = tiny_llama()
    attach(model)
    cache = EvictionCache(model.config, policy, n_up=N_UP, **cache_kw)
    gen = greedy_generate(model, ids.expand(batch, -1), cache, 10, N_UP, shared_prefix=batch > 1)
    kept = [(lay.positions.clone(), None if lay.valid is None else lay.valid.clone()) for lay in cache.eviction_layers]
    return gen.batch_tokens, kept, cache


@pytest.mark.parametrize("mode, seeds", [("original", [1, 2, 3]), ("exact", [1, 2, 3]), ("original", [4])])
def test_streaming_cache_equals_buffering_cache(mode, seeds):
    ids = torch.randint(0, 128, (1, 150), generator=torch.Generator().manual_seed(2))
    batch = len(seeds)  # members on copies of the prompt (shared first chunk), or one prompt
    tok_a, kept_a, cache_a = generate(namm(seeds), ids, batch=batch, mode=mode, stream_rows=False)
    tok_b, kept_b, cache_b = generate(namm(seeds), ids, batch=batch, mode=mode, stream_rows=True)
    assert all(lay.stream_rows for lay in cache_b.eviction_layers)
    assert tok_a == tok_b
    for (pa, va), (pb, vb) in zip(kept_a, kept_b):
        assert torch.equal(pa, pb) and ((va is None and vb is None) or torch.equal(va, vb))
    assert any(pa.shape[-1] < 150 + 9 or va is not None for pa, va in kept_a)  # it evicted
    state_a, state_b = cache_a.eviction_layers[-1].state, cache_b.eviction_layers[-1].state
    torch.testing.assert_close(state_b["namm_ema"], state_a["namm_ema"], rtol=1e-4, atol=1e-6)


def test_streaming_refuses_a_schedule_it_cannot_follow():
    """Prefill chunks that straddle an n_up boundary would leave the stream with other rows than
    the buffered path uses: a clear error, not silently different features."""
    model = tiny_llama()
    attach(model)
    cache = EvictionCache(model.config, namm([1]), n_up=N_UP, stream_rows=True)
    ids = torch.randint(0, 128, (1, 80), generator=torch.Generator().manual_seed(3))
    with pytest.raises(RuntimeError, match="divides n_up"):
        greedy_generate(model, ids, cache, 2, 48)


def test_policies_without_a_stream_keep_buffering():
    model = tiny_llama()
    cache = EvictionCache(model.config, make_policy("h2o", budget=16), n_up=N_UP, stream_rows=True)
    assert not any(lay.stream_rows for lay in cache.eviction_layers)
    cache = EvictionCache(model.config, namm([1]), n_up=40, stream_rows=True)  # 40 is not whole hops
    assert not any(lay.stream_rows for lay in cache.eviction_layers)


@pytest.mark.parametrize("policy_name", ["namm_bam", "h2o"])
def test_last_window_without_an_update_collects_nothing_and_changes_nothing(policy_name, monkeypatch):
    """With 150 prompt tokens + 10 new (9 fed back), updates happen at 32..128; tokens 129..159 can
    never reach the update at 160, so with max_tokens=159 they take the fused path, equal outputs."""
    ids = torch.randint(0, 128, (1, 150), generator=torch.Generator().manual_seed(4))
    make = (lambda: namm([5])) if policy_name == "namm_bam" else (lambda: make_policy("h2o", budget=40, recent_window=8))
    import harness.attention as attention

    calls = []
    original = attention._attention_with_probs
    monkeypatch.setattr(attention, "_attention_with_probs",
                        lambda layer, *a, **k: calls.append(layer.seen) or original(layer, *a, **k))
    tok_a, kept_a, _ = generate(make(), ids, stream_rows=True)
    seen_a = sorted(set(calls))
    calls.clear()
    tok_b, kept_b, cache = generate(make(), ids, stream_rows=True, max_tokens=159)
    seen_b = sorted(set(calls))
    assert tok_a == tok_b
    for (pa, va), (pb, vb) in zip(kept_a, kept_b):
        assert torch.equal(pa, pb)
    assert max(seen_a) == 159 and max(seen_b) == 128  # probabilities only up to the last update
    assert cache.eviction_layers[0].n_updates == 4


def test_namm_init_dtype_statistics_close_to_float32(tiny_model_dir, tmp_path, capsys):
    """namm-init --dtype bfloat16 streams bf16 attention into the statistics: same count of values,
    means within bf16 rounding of the float32 statistics; a bad dtype is a one-line error."""
    from harness.cli import main
    from policies.namm.checkpoint import load_checkpoint

    common = ["namm-init", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "2",
              "--max-length", "600", "--n-up", "64"]
    stats = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.safetensors"
        assert main([*common, "--dtype", dtype, "--out", str(out)]) == 0
        stats[dtype] = load_checkpoint(out)
    a, b = stats["float32"], stats["bfloat16"]
    assert a.fitted_on["statistics_values"] == b.fitted_on["statistics_values"] > 0
    torch.testing.assert_close(b.norm_mean, a.norm_mean, rtol=3e-2, atol=1e-3)
    assert not torch.equal(a.norm_mean, b.norm_mean)  # bf16 really ran
    capsys.readouterr()
    assert main([*common, "--dtype", "float8", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "unknown --dtype 'float8'" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_bf16_eager_attention_matches_the_fused_kernel():
    """In a bf16 model the probability-materialising path (QK^T, softmax and PV in bf16, as fused
    kernels round) gives the stock sdpa forward's logits within bf16 rounding; the attention sums
    handed to the policy are float32 and each query's row sums to 1."""
    ids = torch.randint(0, 128, (1, 96), generator=torch.Generator().manual_seed(11))
    model = tiny_llama().to(torch.bfloat16)
    attach(model)
    logits = {}
    for name in ("full", "h2o"):  # h2o with a budget above the prompt: probabilities, no eviction
        cache = EvictionCache(model.config, make_policy(name) if name == "full" else
                              make_policy("h2o", budget=512), n_up=N_UP)
        with torch.no_grad():
            logits[name] = torch.cat([model(input_ids=ids[:, s:s + N_UP], past_key_values=cache).logits
                                      for s in range(0, 96, N_UP)], 1).float()
        if name == "h2o":
            sums = cache.eviction_layers[0].state.get("h2o_acc")
    torch.testing.assert_close(logits["h2o"], logits["full"], rtol=0.05, atol=0.05)
    assert sums is not None and sums.dtype == torch.float32
    torch.testing.assert_close(sums.sum(-1), torch.full_like(sums.sum(-1), 96.0), rtol=1e-2, atol=0)


def test_cpu_query_chunks_hold_the_same_bytes_of_logits_in_bf16():
    from harness.attention import CPU_CHUNK_BYTES, query_chunk

    cpu = torch.device("cpu")
    fp32, bf16 = query_chunk(1, 9, 4500, cpu, 4), query_chunk(1, 9, 4500, cpu, 2)
    assert (fp32, bf16) == (CPU_CHUNK_BYTES // (4 * 9 * 4500), CPU_CHUNK_BYTES // (2 * 9 * 4500)) == (12, 25)
    assert query_chunk(1, 9, 4500, torch.device("meta"), 2) == 512  # other devices: large chunks
