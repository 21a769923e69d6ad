"""NAMM token features: spectrogram EMA, carry-over, causal masking, running stats, age embedding.

Expectations are computed independently: an explicit float64 DFT sum per frame
(``sum_k x[k] w[k] exp(-2 pi i f k / 32)`` with the Hann window written out), a per-token Python
loop for the EMA, and hand formulas.
"""

import math

import pytest
import torch

from policies.namm.features import (
    FeatureConfig,
    RunningStats,
    age_embedding,
    frame_ema,
    normalise,
    spectrogram_ema,
    token_features,
)

torch.set_num_threads(1)

N_FFT, HOP, P, F = 32, 16, 16, 17


def hann(N=N_FFT):
    return torch.tensor([0.5 - 0.5 * math.cos(2 * math.pi * k / N) for k in range(N)], dtype=torch.float64)


def naive_frame_mags(x):
    """|windowed DFT| of every frame of a 1-D signal: [T, F] (explicit sums, float64)."""
    x = x.to(torch.float64)
    w = hann()
    k = torch.arange(N_FFT, dtype=torch.float64)
    T = (x.numel() - N_FFT) // HOP + 1
    ang = -2 * math.pi * torch.arange(F, dtype=torch.float64)[:, None] * k[None, :] / N_FFT  # [F, N]
    out = torch.zeros(T, F, dtype=torch.float64)
    for t in range(T):
        seg = x[t * HOP:t * HOP + N_FFT] * w  # x[k] w[k]
        re = (seg * torch.cos(ang)).sum(-1)  # sum_k x[k] w[k] cos(-2 pi f k / N)
        im = (seg * torch.sin(ang)).sum(-1)
        out[t] = torch.sqrt(re * re + im * im)
    return out


def naive_update(rows, carry, prev, gamma, num_new=None, mask=True):
    """Per-token loop: signal = carry ++ column, explicit DFT, explicit weighted frame sum."""
    b, h, Q, n = rows.shape
    T = Q // HOP
    k = min(Q, n) if num_new is None else num_new
    g = gamma ** HOP
    ema = torch.zeros(b, h, n, F, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for j in range(n):
                is_new = j >= n - k
                c = torch.zeros(P, dtype=torch.float64) if (carry is None or is_new) else carry[bi, hi, j].double()
                sig = torch.cat([c, rows[bi, hi, :, j].double()])
                mags = naive_frame_mags(sig)
                first = (Q - k + (j - (n - k))) // HOP if (is_new and mask) else 0
                for t in range(T):
                    if t >= first:
                        ema[bi, hi, j] += g ** (T - 1 - t) * (1 - g) * mags[t]
                if prev is not None and not is_new:
                    ema[bi, hi, j] += gamma ** Q * prev[bi, hi, j].double()
    return ema


def causal_rows(b, h, Q, n, seed=0, dtype=torch.float32):
    """Softmax rows of the last Q queries (query i sits at position n - Q + i) over n keys."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, h, Q, n, generator=gen, dtype=torch.float64) * 2
    q_pos = torch.arange(n - Q, n)[:, None]
    k_pos = torch.arange(n)[None, :]
    logits = logits.masked_fill(k_pos > q_pos, float("-inf"))
    return logits.softmax(-1).nan_to_num(0.0).to(dtype)  # queries before every key (n < Q): 0


def last_frame(rows, carry, num_new=0):
    """gamma = 0 makes the EMA equal to the magnitudes of the last frame only."""
    ema, _ = spectrogram_ema(rows, carry, None, FeatureConfig(gamma=0.0), num_new=num_new)
    return ema


# ---------------------------------------------------------------- spectral content


def test_constant_signal_dc_and_hann_leakage():
    # constant c over a whole frame: |X[0]| = c * sum(w) = 16c; the periodic Hann window leaks
    # into bin 1 (|X[1]| = c * N/4 = 8c); every other bin is exactly 0.
    c = 0.3
    Q, n = 64, 1
    rows = torch.full((1, 1, Q, n), c, dtype=torch.float64)
    carry = torch.full((1, 1, n, P), c, dtype=torch.float64)
    got = last_frame(rows, carry)[0, 0, 0]
    expected = torch.zeros(F, dtype=torch.float64)
    expected[0], expected[1] = 16 * c, 8 * c
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    naive = naive_frame_mags(torch.full((P + Q,), c, dtype=torch.float64))[-1]
    torch.testing.assert_close(got, naive, atol=1e-12, rtol=0)


def test_constant_after_arrival_frames():
    # a new token arriving at query 20 with constant attention c afterwards: the last frame
    # (queries 32..63) lies fully after arrival -> DC and Hann bin 1 only; earlier frames differ.
    c, Q, n = 0.25, 64, 48
    rows = torch.zeros(1, 1, Q, n, dtype=torch.float64)
    j = n - (Q - 20)  # token arriving with query 20 (num_new = Q, default)
    rows[0, 0, 20:, j] = c
    got = spectrogram_ema(rows, None, None, FeatureConfig(gamma=0.0))[0][0, 0, j]
    assert got[0].item() == pytest.approx(16 * c, abs=1e-12)
    assert got[1].item() == pytest.approx(8 * c, abs=1e-12)
    assert got[2:].abs().max().item() < 1e-12
    # whole EMA against the explicit loop
    cfg = FeatureConfig(gamma=0.97)
    ema, _ = spectrogram_ema(rows, None, None, cfg)
    torch.testing.assert_close(ema, naive_update(rows, None, None, 0.97), atol=1e-12, rtol=0)


def test_single_pulse_flat_spectrum():
    a, Q, n = 0.7, 64, 1
    rows = torch.zeros(1, 1, Q, n, dtype=torch.float64)
    rows[0, 0, 37, 0] = a  # last frame covers queries 32..63 -> offset 5 in the window
    got = last_frame(rows, torch.zeros(1, 1, n, P, dtype=torch.float64))[0, 0, 0]
    expected = torch.full((F,), a * (0.5 - 0.5 * math.cos(2 * math.pi * 5 / 32)), dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_sinusoid_peaks_at_its_bin():
    Q, n = 64, 1
    q = torch.arange(P + Q, dtype=torch.float64)
    x = 0.01 * torch.cos(2 * math.pi * 4 * q / 32 + 0.3)  # 4 cycles per 32 samples
    carry = x[:P].view(1, 1, n, P)
    rows = x[P:].view(1, 1, Q, n)
    got = last_frame(rows.float(), carry.float())[0, 0, 0].double()
    assert int(got.argmax()) == 4
    # windowed cosine: |X[4]| = A N/4, |X[3]| = |X[5]| = A N/8, others 0
    assert got[4].item() == pytest.approx(0.01 * 8, abs=1e-7)
    assert got[3].item() == pytest.approx(0.01 * 4, abs=1e-7)
    torch.testing.assert_close(got, naive_frame_mags(x)[-1], atol=1e-5, rtol=0)


def test_random_update_matches_naive_loop_and_torch_stft():
    b, h, Q, n = 2, 2, 64, 80  # 16 old tokens, 64 new
    gamma = 0.95
    cfg = FeatureConfig(gamma=gamma)
    gen = torch.Generator().manual_seed(1)
    rows = causal_rows(b, h, Q, n, seed=1)
    carry = torch.rand(b, h, n, P, generator=gen) * 0.1
    prev = torch.rand(b, h, n, F, generator=gen)
    ema, new_carry = spectrogram_ema(rows, carry, prev, cfg)
    assert ema.shape == (b, h, n, F) and new_carry.shape == (b, h, n, P)
    assert ema.dtype == torch.float32
    expected = naive_update(rows, carry, prev, gamma)
    torch.testing.assert_close(ema.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_carry, rows[:, :, -P:, :].transpose(-1, -2))

    # the fused path equals one flattened torch.stft call + the explicit weights
    sig = torch.cat([carry, rows.transpose(-1, -2)], -1).clone()
    sig[:, :, n - Q:, :P] = 0  # new tokens carry nothing
    mags = torch.stft(sig.reshape(-1, P + Q), n_fft=32, hop_length=16, center=False,
                      window=torch.hann_window(32, periodic=True), onesided=True, normalized=False,
                      return_complex=True).abs().view(b, h, n, F, Q // HOP).transpose(-1, -2)
    torch.testing.assert_close(ema, frame_ema(mags, prev, cfg), atol=2e-7, rtol=1e-5)


def test_float64_update_matches_naive_tightly_old_and_new_tokens():
    b, h, Q, n = 1, 2, 48, 70  # 22 old tokens, 48 new
    gamma = 0.9
    gen = torch.Generator().manual_seed(2)
    rows = causal_rows(b, h, Q, n, seed=2, dtype=torch.float64)
    carry = torch.rand(b, h, n, P, generator=gen, dtype=torch.float64)
    prev = torch.rand(b, h, n, F, generator=gen, dtype=torch.float64)
    ema, _ = spectrogram_ema(rows, carry, prev, FeatureConfig(gamma=gamma))
    assert ema.dtype == torch.float64
    torch.testing.assert_close(ema, naive_update(rows, carry, prev, gamma), atol=1e-12, rtol=1e-12)


# ---------------------------------------------------------------- EMA weights


def test_frame_ema_weights_explicit():
    gamma, T, n = 0.98, 4, 3
    cfg = FeatureConfig(gamma=gamma)
    mags = torch.tensor([[[1.0] * F, [2.0] * F, [4.0] * F, [8.0] * F]], dtype=torch.float64).expand(n, T, F)
    prev = torch.full((n, F), 5.0, dtype=torch.float64)
    got = frame_ema(mags, prev, cfg, num_new=0)
    g = gamma ** 16
    expected = (1 - g) * (g ** 3 * 1 + g ** 2 * 2 + g * 4 + 8) + gamma ** 64 * 5
    torch.testing.assert_close(got, torch.full((n, F), expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_prev_ema_contributes_gamma_pow_q_and_is_ignored_for_new_tokens():
    gamma, Q, n = 0.99, 512, 600
    rows = torch.zeros(1, 1, Q, n)
    prev = torch.ones(1, 1, n, F)
    ema, _ = spectrogram_ema(rows, None, prev, FeatureConfig(gamma=gamma))  # last 512 tokens are new
    torch.testing.assert_close(ema[0, 0, : n - Q], torch.full((n - Q, F), gamma ** Q))
    assert ema[0, 0, n - Q:].abs().max().item() == 0.0
    ema0, _ = spectrogram_ema(rows, None, prev, FeatureConfig(gamma=gamma), num_new=0)
    torch.testing.assert_close(ema0[0, 0], torch.full((n, F), gamma ** Q))


# ---------------------------------------------------------------- carry-over


def test_two_updates_with_carry_equal_one_shot():
    b, h, n_old = 1, 2, 20
    gamma = 0.97
    cfg = FeatureConfig(gamma=gamma)
    n = n_old + 64  # 32 tokens arrive with each update
    full = causal_rows(b, h, 64, n, seed=3, dtype=torch.float64)  # 64 queries over all n keys
    gen = torch.Generator().manual_seed(3)
    carry0 = torch.zeros(b, h, n, P, dtype=torch.float64)
    carry0[:, :, :n_old] = torch.rand(b, h, n_old, P, generator=gen, dtype=torch.float64)
    prev0 = torch.zeros(b, h, n, F, dtype=torch.float64)
    prev0[:, :, :n_old] = torch.rand(b, h, n_old, F, generator=gen, dtype=torch.float64)

    # update 1: 32 queries over the n - 32 keys that exist then
    n1 = n - 32
    assert full[:, :, :32, n1:].abs().max() == 0  # causal: update-2 tokens unseen in update 1
    ema1, carry1 = spectrogram_ema(full[:, :, :32, :n1], carry0[:, :, :n1], prev0[:, :, :n1], cfg)
    # update 2: pad state with zeros for the 32 new tokens
    pad = lambda x: torch.cat([x, x.new_zeros(b, h, 32, x.shape[-1])], dim=2)  # noqa: E731
    ema2, carry2 = spectrogram_ema(full[:, :, 32:], pad(carry1), pad(ema1), cfg)

    one_ema, one_carry = spectrogram_ema(full, carry0, prev0, cfg)
    torch.testing.assert_close(ema2, one_ema, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(carry2, one_carry)
    torch.testing.assert_close(carry1, full[:, :, 16:32, :n1].transpose(-1, -2))

    # frame by frame for an old token: the 2nd update's frames are frames 2, 3 of the 80-sample stft
    j = 5
    sig80 = torch.cat([carry0[0, 0, j], full[0, 0, :, j]])
    frames = naive_frame_mags(sig80)  # 4 frames
    last2 = spectrogram_ema(full[:, :, 32:], pad(carry1), None, FeatureConfig(gamma=0.0), num_new=32)[0]
    torch.testing.assert_close(last2[0, 0, j], frames[3], atol=1e-12, rtol=0)
    two_frames = naive_frame_mags(torch.cat([carry1[0, 0, j], full[0, 0, 32:, j]]))
    torch.testing.assert_close(two_frames, frames[2:], atol=1e-12, rtol=0)


# ---------------------------------------------------------------- causal masking of new tokens


def test_new_token_frames_before_arrival_are_masked():
    b, h, Q, n = 1, 2, 64, 70
    gamma = 0.9
    cfg = FeatureConfig(gamma=gamma)
    gen = torch.Generator().manual_seed(4)
    # non-causal garbage everywhere, including before each token's arrival, and garbage state
    rows = torch.rand(b, h, Q, n, generator=gen, dtype=torch.float64)
    carry = torch.rand(b, h, n, P, generator=gen, dtype=torch.float64)
    prev = torch.rand(b, h, n, F, generator=gen, dtype=torch.float64)
    ema, new_carry = spectrogram_ema(rows, carry, prev, cfg)
    expected = naive_update(rows, carry, prev, gamma, mask=True)
    torch.testing.assert_close(ema, expected, atol=1e-12, rtol=1e-12)
    # the mask really removed something for the latest arrivals
    unmasked = naive_update(rows, carry, prev, gamma, mask=False)
    assert (ema[..., -1, :] - unmasked[..., -1, :]).abs().max() > 1e-3
    # a token arriving at query 0..15 keeps all frames (first kept frame 0)
    torch.testing.assert_close(ema[..., n - Q, :], unmasked[..., n - Q, :])
    # new_carry is this update's last P queries, for old and new tokens alike
    torch.testing.assert_close(new_carry, rows[:, :, -P:, :].transpose(-1, -2))


def test_mask_is_a_no_op_on_causal_rows():
    b, h, Q, n = 1, 1, 64, 64
    gamma = 0.95
    rows = causal_rows(b, h, Q, n, seed=5, dtype=torch.float64)
    ema, _ = spectrogram_ema(rows, None, None, FeatureConfig(gamma=gamma))
    torch.testing.assert_close(ema, naive_update(rows, None, None, gamma, mask=False), atol=1e-12, rtol=0)
    # arrival mid-window: token arriving with query 21 -> frames 0 (masked) and 1 (partial)
    j = 21
    frames = naive_frame_mags(torch.cat([torch.zeros(P, dtype=torch.float64), rows[0, 0, :, j]]))
    assert frames[0].abs().max() == 0 and frames[1].abs().max() > 0
    g = gamma ** 16
    expected = sum(g ** (3 - t) * (1 - g) * frames[t] for t in range(1, 4))
    torch.testing.assert_close(ema[0, 0, j], expected, atol=1e-12, rtol=0)


def test_default_num_new_when_fewer_keys_than_queries():
    # n < Q: every key is new; key i arrives with query Q - n + i
    rows = causal_rows(1, 1, 64, 30, seed=6, dtype=torch.float64)
    ema, _ = spectrogram_ema(rows, None, None, FeatureConfig(gamma=0.9))
    torch.testing.assert_close(ema, naive_update(rows, None, None, 0.9), atol=1e-12, rtol=0)


def test_rejects_q_not_multiple_of_hop():
    with pytest.raises(ValueError):
        spectrogram_ema(torch.zeros(1, 1, 40, 50), None, None)


# ---------------------------------------------------------------- normalisation statistics


def test_running_stats_equal_pooled_mean_var_of_valid_values():
    gen = torch.Generator().manual_seed(7)
    stats = RunningStats()
    kept = []
    for step, n in enumerate([10, 25, 7, 40]):
        ema = torch.randn(2, 3, n, F, generator=gen) * (step + 1) + step
        valid = torch.rand(2, 1, n, generator=gen) > 0.3
        stats.update(ema, valid)
        kept.append(ema.double()[valid.expand(2, 3, n)])
    allv = torch.cat(kept, 0)
    assert stats.count.item() == allv.shape[0]
    torch.testing.assert_close(stats.mean, allv.mean(0), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(stats.var, allv.var(0, unbiased=False), atol=1e-12, rtol=1e-12)
    restored = RunningStats.from_state_dict(stats.state_dict())
    torch.testing.assert_close(restored.var, stats.var)
    # no mask = all valid; an update with nothing valid changes nothing
    s2 = RunningStats().update(allv.view(1, 1, -1, F))
    torch.testing.assert_close(s2.var, stats.var, atol=1e-12, rtol=1e-12)
    s2.update(torch.randn(1, 1, 4, F), torch.zeros(1, 1, 4, dtype=torch.bool))
    torch.testing.assert_close(s2.mean, stats.mean, atol=1e-12, rtol=1e-12)


def test_normalise_zscore_and_eps_clamp():
    x = torch.randn(2, 3, 5, F)
    mean = torch.linspace(-1, 1, F, dtype=torch.float64)
    var = torch.linspace(0.5, 4, F, dtype=torch.float64)
    got = normalise(x, mean, var)
    torch.testing.assert_close(got, (x - mean.float()) / var.float().sqrt())
    z = normalise(torch.ones(1, F), torch.zeros(F), torch.zeros(F))
    torch.testing.assert_close(z, torch.full((1, F), 1e7))


# ---------------------------------------------------------------- age embedding, features


def test_age_embedding_hand_formula():
    ages = [0, 1, 5, 100, 511, 40000]
    got = age_embedding(torch.tensor(ages), FeatureConfig())
    assert got.shape == (len(ages), 8) and got.dtype == torch.float32
    for i, a in enumerate(ages):
        freqs = [1 / 50000.0 ** (j / 4) for j in range(4)]
        expected = [math.sin(a * f) for f in freqs] + [math.cos(a * f) for f in freqs]
        torch.testing.assert_close(got[i], torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_token_features_shape_and_order():
    cfg = FeatureConfig()
    assert (cfg.n_freq, cfg.dim) == (17, 25)
    b, h, n = 2, 3, 11
    ema_n = torch.randn(b, h, n, F)
    pos = torch.arange(n) * 3
    age = pos[-1] - pos
    feats = token_features(ema_n, age, cfg)
    assert feats.shape == (b, h, n, 25)
    torch.testing.assert_close(feats[..., :17], ema_n)
    torch.testing.assert_close(feats[..., 17:], age_embedding(age, cfg).expand(b, h, n, 8))
    per_batch = token_features(ema_n, age.view(1, 1, n).expand(b, 1, n), cfg)
    torch.testing.assert_close(per_batch, feats)
