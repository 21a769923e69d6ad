"""The NAMM spectrogram EMA computed as the query rows arrive (the fast path of :func:`spectrogram_ema`).

Used by :class:`policies.namm.policy.NAMMPolicy` through ``Policy.open_window`` when the cache
streams rows; equal to the buffered :func:`policies.namm.features.spectrogram_ema` (tested in
``tests/test_namm_fast_path.py``).
"""

from __future__ import annotations

import time

import torch

from policies.namm.features import FeatureConfig, _dft_matrix

__all__ = ["SpectrogramStream"]


class SpectrogramStream:
    """:func:`spectrogram_ema` computed as the query rows arrive, a chunk at a time.

    One update's signal per key token is ``carry (P) ++ rows (Q)``; frame ``t`` covers signal
    samples ``[t*hop, t*hop + n_fft)``. Instead of buffering the ``Q`` rows and transforming them at
    the update, each chunk of rows is appended to a short query-major buffer and every frame that
    is complete is transformed at once and folded into a running EMA::

        acc <- prev_ema                       (zeros for tokens that arrive in this update)
        acc <- g * acc + (1 - g) * |STFT|[t]   for t = 0 .. T-1,   g = gamma**hop

    which after ``T`` frames is ``sum_t g**(T-1-t)(1-g)|STFT|[t] + g**T prev_ema`` with
    ``g**T = gamma**Q``: exactly :func:`spectrogram_ema` (equal up to float rounding, tested). Only
    ``P + block`` rows per token are ever held (not ``Q``). Keys that arrive during the update are
    zero-padded in the buffer, the carry and the EMA, as the buffered path pads them; with causal
    rows their frames before arrival are exactly zero, so the buffered path's arrival mask is a
    no-op here (:func:`spectrogram_ema` docstring).

    Shapes: ``carry [b, h, n0, P]`` and ``prev_ema [b, h, n0, F]`` (tokens kept at the previous
    update, or None); each ``push(rows [b, h, c, n])`` with ``n >= n0`` non-decreasing;
    :meth:`finish` returns ``(ema [b, h, n, F], new_carry [b, h, n, P])`` like :func:`spectrogram_ema`.
    """

    def __init__(self, carry: torch.Tensor | None, prev_ema: torch.Tensor | None,
                 cfg: FeatureConfig = FeatureConfig(), block: int = 64, dft_dtype: torch.dtype | None = None):
        if cfg.n_fft < cfg.hop or cfg.hop < 1:
            raise ValueError("n_fft must be >= hop >= 1")
        self.cfg, self.block = cfg, max(int(block), cfg.n_fft)
        # the signal (rows, carry) and the DFT matmul: None = float32 (float64 for float64 rows);
        # bf16/fp16 = the rows' own half precision, as a half-precision model produces them
        self.dft_dtype = dft_dtype
        self.g = cfg.gamma ** cfg.hop
        self.carry, self.prev = carry, prev_ema
        self.pending: list[torch.Tensor] = []  # query-major chunks [b, h, c_i, n_i], signal order
        self.pending_rows = 0
        self.acc: torch.Tensor | None = None  # [b, h, F, n] running EMA (frequency-major, float32/64)
        self.rows = 0  # query rows pushed so far
        self.frames = 0
        self.seconds = 0.0  # wall time spent in push/finish

    def map_batch(self, fn) -> None:
        """Apply a batch-axis operation (e.g. ``repeat_interleave``) to every held tensor."""
        self.pending = [fn(t) for t in self.pending]
        self.carry = None if self.carry is None else fn(self.carry)
        self.prev = None if self.prev is None else fn(self.prev)
        self.acc = None if self.acc is None else fn(self.acc)

    def _start(self, rows: torch.Tensor, acc_dtype: torch.dtype) -> None:
        """First chunk: the carry (zero for new tokens) opens the signal; acc starts at prev_ema."""
        *lead, _, n = rows.shape
        P, F = self.cfg.n_carry, self.cfg.n_freq
        carry = rows.new_zeros(*lead, P, n)
        self.acc = rows.new_zeros(*lead, F, n, dtype=acc_dtype)
        if self.carry is not None and P:
            n0 = self.carry.shape[-2]
            carry[..., :n0] = self.carry.to(rows.dtype).transpose(-1, -2)
        if self.prev is not None:
            n0 = self.prev.shape[-2]
            self.acc[..., :n0] = self.prev.to(acc_dtype).transpose(-1, -2)
        self.carry = self.prev = None
        if P:
            self.pending, self.pending_rows = [carry], P

    def push(self, rows: torch.Tensor) -> None:
        """Append ``rows [b, h, c, n]`` (softmax attention of the next ``c`` queries; ``n`` may grow)."""
        start = time.perf_counter()
        acc_dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        rows = rows.to(self.dft_dtype or acc_dtype)
        if self.acc is None:
            self._start(rows, acc_dtype)
        self.pending.append(rows)
        self.pending_rows += rows.shape[-2]
        self.rows += rows.shape[-2]
        if self.pending_rows >= self.block + self.cfg.n_carry:
            self._flush()
        self.seconds += time.perf_counter() - start

    def _flush(self) -> None:
        """Transform every complete frame of the buffer; keep its incomplete tail (>= P rows).

        The buffer ``sig [L, m, n]`` is contiguous, so frame ``t`` (rows ``t*hop .. t*hop+n_fft``) is
        a strided view of it: one matmul reads the overlapping frames in place (no unfolded copy,
        measured 5x faster than copying them first on CPU). The DFT matrix has no rows for the sine
        terms that are identically zero (frequency 0 and, for even ``n_fft``, the Nyquist one).
        """
        cfg = self.cfg
        nfft, hop, F = cfg.n_fft, cfg.hop, cfg.n_freq
        m = self.pending_rows
        if m < nfft:
            return
        n = self.pending[-1].shape[-1]
        lead = self.pending[0].shape[:-2]
        sig = self.pending[0].new_empty(*lead, m, n)  # [.., m, n]: the chunks, keys zero-padded to n
        r = 0
        for t in self.pending:
            c, width = t.shape[-2], t.shape[-1]
            sig[..., r:r + c, :width] = t
            if width < n:
                sig[..., r:r + c, width:] = 0
            r += c
        count = (m - nfft) // hop + 1
        flat = sig.reshape(-1, m, n)
        L = flat.shape[0]
        frames = flat.as_strided((L, count, nfft, n), (m * n, hop * n, n, 1))  # overlapping view
        W, S = _dft_nonzero(cfg, sig.dtype, sig.device)  # [F + S, n_fft]: F cosine rows, S sine rows
        power = torch.matmul(W, frames).to(self.acc.dtype).square_()  # [L, count, F + S, n]
        mag = power[:, :, :F, :]  # a view: cos^2 rows, then += sin^2 where a sine row exists
        mag[:, :, 1:1 + S, :] += power[:, :, F:, :]
        mag.sqrt_()
        w = _frame_weights(self.g, count, mag.dtype, mag.device)  # [count]
        framed = torch.matmul(w, mag.reshape(L, count, F * n)).reshape(*lead, F, n)
        framed[..., :self.acc.shape[-1]].add_(self.acc, alpha=self.g ** count)
        self.acc = framed
        self.frames += count
        tail = sig[..., count * hop:, :]
        self.pending, self.pending_rows = [tail], tail.shape[-2]

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ema [b, h, n, F], new_carry [b, h, n, P])`` after ``Q`` rows (a positive multiple of hop)."""
        cfg = self.cfg
        if self.rows <= 0 or self.rows % cfg.hop:
            raise ValueError(f"Q={self.rows} streamed rows must be a positive multiple of hop={cfg.hop}")
        start = time.perf_counter()
        self._flush()
        if self.frames != self.rows // cfg.hop:
            raise RuntimeError(f"streamed {self.frames} frames for {self.rows} rows (expected {self.rows // cfg.hop})")
        n = self.pending[-1].shape[-1]
        ema = _pad_last(self.acc, n).transpose(-1, -2).contiguous()
        sig = torch.cat([_pad_last(t, n) for t in self.pending], dim=-2)
        new_carry = sig[..., sig.shape[-2] - cfg.n_carry:, :].transpose(-1, -2).to(ema.dtype).contiguous()
        self.seconds += time.perf_counter() - start
        return ema, new_carry


_DFT_NONZERO: dict = {}


def _dft_nonzero(cfg: FeatureConfig, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, int]:
    """``(W [F + S, n_fft], S)``: the windowed real DFT's ``F`` cosine rows, then its ``S`` sine rows
    that are not identically zero (frequencies ``1 .. F-1`` except Nyquist ``n_fft/2``). Same
    coefficients as :func:`policies.namm.features._dft_matrix` without its all-zero rows."""
    key = (cfg.n_fft, dtype, str(device))
    cached = _DFT_NONZERO.get(key)
    if cached is None:
        full = _dft_matrix(cfg, torch.float64, torch.device("cpu"))  # [2F, n_fft]
        F = cfg.n_freq
        sines = [F + f for f in range(1, F) if 2 * f != cfg.n_fft]
        cached = (torch.cat([full[:F], full[sines]]).to(dtype=dtype, device=device), len(sines))
        _DFT_NONZERO[key] = cached
    return cached


def _frame_weights(g: float, count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[count]`` EMA weights of this flush's frames, oldest first: ``g**(count-1-t) * (1-g)``."""
    return (g ** torch.arange(count - 1, -1, -1, dtype=torch.float64) * (1.0 - g)).to(dtype=dtype, device=device)


def _pad_last(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad the last (key) axis of ``t`` to ``n``."""
    extra = n - t.shape[-1]
    return t if extra == 0 else torch.nn.functional.pad(t, (0, extra))
