"""Neural Attention Memory Models as eviction policies: ``namm_bam`` and ``namm_mlp``.

At every update (``n_up`` tokens) and for every layer and KV head: attention rows of the queries
since the previous update → per-token spectrogram EMA (:mod:`policies.namm.features`) → frozen
z-normalisation + oldness embedding (25 features) → a scorer shared by all layers and heads
(:mod:`policies.namm.scorers`) → evict tokens scoring below ``threshold`` (the newest token is
always kept). With all-zero parameters every score is 0 and nothing is evicted.

Parameters come from a checkpoint (:mod:`policies.namm.checkpoint`); without one the policy uses
the shipped default checkpoint (policies/namm/checkpoints/) when there is one, else zero parameters (keeps everything, with a
warning). ``params`` can be replaced by a ``[n_params]`` vector or a ``[batch, n_params]`` batch
(batch element i scored with vector i) — the form CMA-ES fitting uses.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from policies.base import LayerView, Policy, Selection
from policies.namm.checkpoint import load_checkpoint
from policies.namm.features import FeatureConfig, RunningStats, normalise, spectrogram_ema, token_features
from policies.namm.stream import SpectrogramStream
from policies.namm.scorers import SCORERS

SHIPPED = Path(__file__).parent / "checkpoints"


@dataclass
class NAMMPolicy(Policy):
    """Base class; subclasses set ``architecture``."""

    architecture: ClassVar[str] = ""
    attention = "rows"

    checkpoint: str | None = None
    threshold: float = 0.0
    gamma: float | None = None  # EMA discount per token; default: the checkpoint's (paper: 0.99)
    collect_stats: bool = False  # observe only: keep everything, accumulate feature statistics
    params: torch.Tensor | None = field(default=None, repr=False)
    norm_mean: torch.Tensor | None = field(default=None, repr=False)
    norm_var: torch.Tensor | None = field(default=None, repr=False)
    n_up: int = 512
    n_sink: int = 0  # the first n_sink positions are always kept (0: the paper's NAMM; beyond the paper)

    def __post_init__(self):
        if self.n_sink < 0:
            raise ValueError(f"{self.name}: n_sink must be >= 0, got {self.n_sink}")
        self.scorer = SCORERS[self.architecture]()
        hyper = {}
        self.fitted_on: dict = {}  # from the checkpoint: what it was fitted on (reports' "Test tasks")
        self.checkpoint_sha256: str | None = None  # of the loaded checkpoint's tensors (resume checks)
        path = self.checkpoint or self._shipped()
        if path is not None and self.params is None:
            ckpt = load_checkpoint(path, expect_architecture=self.architecture)
            self.params, self.norm_mean, self.norm_var = ckpt.params, ckpt.norm_mean, ckpt.norm_var
            hyper, self.fitted_on = ckpt.hyperparameters, dict(ckpt.fitted_on)
            self.checkpoint_sha256 = ckpt.sha256
        elif self.params is None:
            warnings.warn(
                f"{self.name}: no checkpoint given and none shipped; using zero parameters, which keep "
                "every token (pass --policy-checkpoint PATH)",
                stacklevel=1,
            )
            self.params = torch.zeros(self.scorer.n_params)
        gamma = self.gamma if self.gamma is not None else hyper.get("gamma", 0.99)
        self.features = FeatureConfig(gamma=gamma, n_up=self.n_up)
        if self.norm_mean is None:
            self.norm_mean = torch.zeros(self.features.n_freq)
            self.norm_var = torch.ones(self.features.n_freq)
        self.stats = RunningStats(self.features.n_freq) if self.collect_stats else None
        self.seconds = {"features": 0.0, "scorer": 0.0}  # wall time, summed over layers and updates
        self._streamed_s = 0.0  # this update's streaming time (spent before select; feature time)
        self._moved: dict = {}  # (device, dtype) -> (the tensors moved, their copies there); see _on

    def _on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(params, norm_mean, norm_var)`` on ``like``'s device in its dtype: moved once per device
        (layers spread over GPUs by a device map each get their own copy) and again only when
        :meth:`set_params` (or assignment) replaced them."""
        source = (self.params, self.norm_mean, self.norm_var)
        key = (like.device, like.dtype)
        moved = self._moved.get(key)
        if moved is None or any(a is not b for a, b in zip(moved[0], source)):
            moved = (source, tuple(t.to(device=like.device, dtype=like.dtype) for t in source))
            self._moved[key] = moved
        return moved[1]

    def _shipped(self) -> str | None:
        path = SHIPPED / f"{self.name}.safetensors"
        return str(path) if path.exists() else None

    def open_window(self, state: dict, n_up: int, dtype: torch.dtype | None = None) -> SpectrogramStream | None:
        """Stream this update's rows into the spectrogram EMA as they arrive (``n_up`` whole hops).

        In a bf16/fp16 model the DFT's inputs are rounded to the model's dtype (as the fused
        attention kernels round the probabilities before multiplying the values); magnitudes, EMA,
        normalisation and scores stay float32. In a float32 model everything is float32.
        """
        if n_up % self.features.hop:
            return None
        half = dtype in (torch.bfloat16, torch.float16)
        return SpectrogramStream(state.get("namm_carry"), state.get("namm_ema"), self.features,
                                 dft_dtype=dtype if half else None)

    def select(self, view: LayerView) -> Selection:
        start = time.perf_counter()
        x = self.token_inputs(view)
        if x is None:  # collect_stats: observe only, keep everything
            keep = view.valid.clone()
            return Selection(torch.zeros_like(keep, dtype=torch.float32), keep)
        params = self._on(x)[0]
        middle = time.perf_counter()
        scores = self.scorer.score(x, view.valid, params.to(x.dtype))
        self.seconds["features"] += middle - start + self._streamed_s
        self.seconds["scorer"] += time.perf_counter() - middle
        scores = scores.masked_fill(view.positions == view.seen - 1, math.inf)  # the newest token stays
        if self.n_sink:  # StreamingLLM's attention sinks stay (an option beyond the paper)
            scores = scores.masked_fill(view.positions < self.n_sink, math.inf)
        return Selection(scores, (scores >= self.threshold) & view.valid)

    def token_inputs(self, view: LayerView) -> torch.Tensor | None:
        """The scorer's input at this update, ``[batch, kv_heads, n_keys, 25]``: the spectrogram EMA
        (folded from the streamed window or from ``view.attention``; stored in ``view.state``),
        z-normalised, plus the oldness embedding. ``None`` when ``collect_stats`` (the EMA then only
        feeds the running statistics)."""
        self._streamed_s = 0.0
        if view.window is not None:  # streamed: the rows were folded in as they arrived
            ema, view.state["namm_carry"] = view.window.finish()
            self._streamed_s = view.window.seconds  # the streaming time counts as feature time
        else:
            rows = view.attention  # [b, h, Q, n]
            hop = self.features.hop
            rows = rows[..., rows.shape[-2] % hop :, :]  # whole hops only (drop the oldest rows if needed)
            num_new = int((view.positions[0, 0] >= view.seen - rows.shape[-2]).sum())  # arrived during these rows
            carry, prev = view.state.get("namm_carry"), view.state.get("namm_ema")  # None at the first update
            ema, view.state["namm_carry"] = spectrogram_ema(rows, carry, prev, self.features, num_new=num_new)
        view.state["namm_ema"] = ema
        if self.stats is not None:
            self.stats.update(ema, view.valid)
            return None
        _, mean, var = self._on(ema)
        return token_features(normalise(ema, mean, var), view.age, self.features)

    def get_params(self) -> torch.Tensor:
        return self.params.clone()

    def set_params(self, params: torch.Tensor) -> None:
        """``[n_params]`` or ``[batch, n_params]`` (one vector per batch element)."""
        if params.shape[-1] != self.scorer.n_params:
            raise ValueError(f"{self.name} has {self.scorer.n_params} parameters, got a vector of {params.shape[-1]}")
        self.params = params

    def describe(self) -> dict:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "checkpoint": self.checkpoint or self._shipped(),
            "checkpoint_sha256": self.checkpoint_sha256,
            "threshold": self.threshold,
            "gamma": self.features.gamma,
            "n_sink": self.n_sink,
            "n_params": self.scorer.n_params,
            "fitted_on": self.fitted_on,
        }
