"""NAMM scoring networks as pure functions of ONE flat parameter vector (the CMA-ES search space).

Input per call:

- ``x``: ``[b, h, n, d]`` token features (``d = 25``: 17 normalised spectrogram frequencies + 8
  oldness features); the token axis is sorted by position ascending (index 0 = oldest token).
- ``valid``: ``[b, h, n]`` bool; ``False`` marks a filler slot. A filler slot never influences
  another token's score (its features are zeroed and it is masked as an attention key); its own
  score is finite but meaningless.
- ``params``: ``[n_params]`` (shared by every batch element) or ``[b, n_params]`` (the batched form:
  batch element ``i`` uses row ``i`` — several CMA-ES population members evaluated at once on copies
  of one prompt). A ``[1, n_params]`` row broadcasts like ``[n_params]``.

Output: scores ``[b, h, n]`` in ``x``'s dtype (half precision is computed in float32). All-zero
parameters give exactly zero scores.

The flat vector is the concatenation, in :meth:`layout` order, of each tensor flattened row-major;
linear weights are stored ``[out, in]`` like ``torch.nn.Linear`` (``y = x @ W.T + b``).

Architectures (see the authors' ``memory_policy/deep_scoring.py`` ``GeneralizedScoring``/``MLPScoring``,
``stateless_parallel_modules/attention.py`` and ``mlp.py``, run config ``cfgs/run/namm_bam_i1.yaml``):

``BAMScorer`` ("bam", 4,172 parameters at d=25, hidden 32)
    One single-head self-attention layer without RoPE, with biases and the *backward*
    (counter-causal) mask: token ``i`` attends to tokens ``j >= i`` (itself and newer), filler slots
    masked as keys; softmax scale ``1/sqrt(hidden)``. The attention output is projected to ``2d``
    and split into ``(r, m)`` (first half residual, second half multiplicative);
    ``x <- x * (1 + m) + r``; score ``= x @ w_final.T + b_final``.

``MLPScorer`` ("mlp", 1,326 parameters at d=25, hidden 25, 2 hidden layers, bias)
    ``h = x + relu(W0 x + b0)`` (the authors' ``residual_first``), then for each further hidden layer
    ``h = h + relu(Wk h + bk)`` (``residual``), score ``= w_out h + b_out``. Token-wise: a token's
    score depends on its own features only.

Differences from the authors' code (evo-memory):

- Flat-vector order is our own (separate q/k/v blocks, weights ``[out, in]`` then bias); the authors
  use one fused 25->96 QKV linear (chunked q, k, v) whose flattening lives in a file not published.
  Functionally identical; a vector from their code would need re-ordering.
- The authors' ``StatelessGeneralizedMLP`` with more than one hidden layer recomputes
  ``h_out = relu(h)`` after each intermediate linear, discarding that layer's output (its weights
  are dead). We implement the evidently intended ``h = h + relu(W h + b)``.
- Table 9's "2 hidden layers" is read literally (two 25->25 ReLU layers + output = 3 linears; the
  authors' ``hidden_depth`` counts linears, so that is their ``hidden_depth=3``). ``mlp.yaml`` sets
  ``scoring_mlp_bias: false`` while the published run config (``base_bam.yaml``) overrides it to
  ``true``; no MLP run config is published, so we use biases. Both are constructor options
  (``hidden_layers``, ``bias``); ``SCORERS["mlp"]()`` (the checkpoint's n_params) uses the defaults.
- Filler slots (our ``exact`` cache mode) are masked as keys; the authors pass their padding
  ``attn_mask`` the same way. A filler query is allowed its own slot so no row is empty.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

FEATURE_DIM = 25


# Bias added (through one extra query/key channel) to the logits of filler keys: large enough that
# exp() underflows to exactly 0 next to any real key, small enough to stay finite in float32.
_FILLER_LOGIT = -1e9


def _backward_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Single-head attention where query ``i`` sees keys ``j >= i`` that are valid (and always itself).

    Implemented as causal attention on the token-reversed sequence (``is_causal=True`` lets the fused
    CPU/GPU kernels skip the masked half instead of materialising an ``[n, n]`` mask). Filler keys
    are excluded by one extra channel: 1 in every query, 0 in a valid key and ``_FILLER_LOGIT`` in a
    filler key, so a filler key's weight is exactly 0 for any query that sees a valid key (every
    valid query sees itself). A filler query whose newer tokens are all fillers gets a finite,
    meaningless output. ``v`` gets a zero channel so q/k/v share one head dim (fast kernel path).
    """
    hidden = v.shape[-1]
    scale = q.shape[-1] ** -0.5
    if valid is not None and not bool(valid.all()):
        one = q.new_ones(*q.shape[:-1], 1)
        bias = torch.where(valid, 0.0, _FILLER_LOGIT).to(k.dtype).unsqueeze(-1)
        q = torch.cat([q, one], dim=-1)
        k = torch.cat([k, bias.expand(*k.shape[:-1], 1)], dim=-1)
        v = torch.cat([v, torch.zeros_like(one)], dim=-1)
    out = F.scaled_dot_product_attention(
        q.flip(-2), k.flip(-2), v.flip(-2), is_causal=True, scale=scale)
    return out.flip(-2)[..., :hidden]


class _FlatScorer:
    """Common machinery: layout bookkeeping, (un)flattening, parameter/feature checks."""

    name: ClassVar[str] = ""

    def __init__(self, feature_dim: int = FEATURE_DIM):
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.feature_dim = int(feature_dim)

    # --- layout ---------------------------------------------------------------------------------
    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every tensor, in the order they appear in the flat vector."""
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.layout())

    def zeros(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The all-zero parameter vector (every score exactly 0, i.e. nothing is evicted)."""
        return torch.zeros(self.n_params, dtype=dtype)

    def unflatten(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``[..., n_params]`` into named views ``[..., *shape]`` (no copy)."""
        if params.shape[-1:] != (self.n_params,):
            raise ValueError(
                f"{self.name}: params has shape {tuple(params.shape)}, expected [..., {self.n_params}]")
        lead = params.shape[:-1]
        out: dict[str, torch.Tensor] = {}
        offset = 0
        for name, shape in self.layout():
            size = math.prod(shape)
            out[name] = params[..., offset:offset + size].reshape(*lead, *shape)
            offset += size
        return out

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`unflatten`: named tensors ``[..., *shape]`` -> ``[..., n_params]``."""
        names = [name for name, _ in self.layout()]
        if set(tensors) != set(names):
            raise ValueError(f"{self.name}: expected tensors {names}, got {sorted(tensors)}")
        parts = []
        lead = None
        for name, shape in self.layout():
            t = tensors[name]
            if tuple(t.shape[t.dim() - len(shape):]) != shape:
                raise ValueError(f"{self.name}: {name} has shape {tuple(t.shape)}, expected [..., {shape}]")
            t_lead = tuple(t.shape[:t.dim() - len(shape)])
            if lead is None:
                lead = t_lead
            elif t_lead != lead:
                raise ValueError(f"{self.name}: inconsistent leading dims {lead} vs {t_lead} ({name})")
            parts.append(t.reshape(*t_lead, -1))
        return torch.cat(parts, dim=-1)

    # --- scoring --------------------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor, valid: torch.Tensor | None, params: torch.Tensor):
        """Check shapes; zero filler features; unflatten params to ``[B', *shape]`` (B' = 1 or b).

        Half-precision features are computed in float32; callers cast the result back.
        """
        if x.dim() != 4 or x.shape[-1] != self.feature_dim:
            raise ValueError(f"{self.name}: x must be [b, h, n, {self.feature_dim}], got {tuple(x.shape)}")
        b, h, n, _ = x.shape
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # tiny network: compute in float32 (the filler-key bias needs its range)
        if valid is not None:
            if tuple(valid.shape) != (b, h, n):
                raise ValueError(f"{self.name}: valid must be [{b}, {h}, {n}], got {tuple(valid.shape)}")
            valid = valid.to(device=x.device, dtype=torch.bool)
            # Filler slots may hold anything (even NaN); zeroing them keeps them out of every sum.
            x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        if params.dim() == 1:
            params = params.unsqueeze(0)
        elif params.dim() != 2 or params.shape[0] not in (1, b):
            raise ValueError(
                f"{self.name}: params must be [{self.n_params}] or [{b}, {self.n_params}] "
                f"(one row per batch element), got {tuple(params.shape)}")
        params = params.to(device=x.device, dtype=x.dtype)
        return x, valid, self.unflatten(params)

    @staticmethod
    def _linear(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``inp [b, h, n, i]``, ``weight [B', o, i]``, ``bias [B', o]`` -> ``[b, h, n, o]`` (B' = 1 or b)."""
        return torch.matmul(inp, weight.transpose(-1, -2).unsqueeze(1)) + bias[:, None, None, :]

    def score(self, x: torch.Tensor, valid: torch.Tensor | None, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    __call__ = score


class BAMScorer(_FlatScorer):
    """Backward-attention memory (BAM): one single-head counter-causal attention layer + linear head.

    Flat layout (d = feature_dim, k = hidden):
    ``q_weight [k,d], q_bias [k], k_weight [k,d], k_bias [k], v_weight [k,d], v_bias [k],
    out_weight [2d,k], out_bias [2d], final_weight [1,d], final_bias [1]``;
    rows ``0..d-1`` of ``out_*`` produce the residual term ``r``, rows ``d..2d-1`` the multiplicative
    term ``m``.
    """

    name = "bam"

    def __init__(self, feature_dim: int = FEATURE_DIM, hidden: int = 32):
        super().__init__(feature_dim)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.hidden = int(hidden)

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        d, k = self.feature_dim, self.hidden
        return [
            ("q_weight", (k, d)), ("q_bias", (k,)),
            ("k_weight", (k, d)), ("k_bias", (k,)),
            ("v_weight", (k, d)), ("v_bias", (k,)),
            ("out_weight", (2 * d, k)), ("out_bias", (2 * d,)),
            ("final_weight", (1, d)), ("final_bias", (1,)),
        ]

    def score(self, x: torch.Tensor, valid: torch.Tensor | None, params: torch.Tensor) -> torch.Tensor:
        out_dtype = x.dtype
        x, valid, p = self._prepare(x, valid, params)
        k = self.hidden
        # Fused Q/K/V projection: [B', 3k, d] -> [b, h, n, 3k].
        w_qkv = torch.cat([p["q_weight"], p["k_weight"], p["v_weight"]], dim=-2)
        b_qkv = torch.cat([p["q_bias"], p["k_bias"], p["v_bias"]], dim=-1)
        q, key, v = self._linear(x, w_qkv, b_qkv).split(k, dim=-1)
        attn = _backward_attention(q, key, v, valid)
        rm = self._linear(attn, p["out_weight"], p["out_bias"])
        r, m = rm.split(self.feature_dim, dim=-1)
        x = x * (1 + m) + r
        return self._linear(x, p["final_weight"], p["final_bias"]).squeeze(-1).to(out_dtype)

    __call__ = score


class MLPScorer(_FlatScorer):
    """Token-wise residual MLP (paper Table 9: hidden 25, 2 hidden layers, ReLU, residual).

    Flat layout (d = feature_dim, hidden = d, L = hidden_layers):
    ``w0 [d,d], b0 [d], ..., w{L-1} [d,d], b{L-1} [d], out_weight [1,d], out_bias [1]``
    (biases only when ``bias=True``). 1,326 parameters at the defaults.
    """

    name = "mlp"

    def __init__(self, feature_dim: int = FEATURE_DIM, hidden_layers: int = 2, bias: bool = True):
        super().__init__(feature_dim)
        if hidden_layers < 0:
            raise ValueError(f"hidden_layers must be >= 0, got {hidden_layers}")
        # Residual connections on every hidden layer require hidden width == feature_dim (as in the
        # authors' code, which asserts input_features == hidden_features for residual_first).
        self.hidden = self.feature_dim
        self.hidden_layers = int(hidden_layers)
        self.bias = bool(bias)

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        d = self.feature_dim
        out: list[tuple[str, tuple[int, ...]]] = []
        for i in range(self.hidden_layers):
            out.append((f"w{i}", (d, d)))
            if self.bias:
                out.append((f"b{i}", (d,)))
        out.append(("out_weight", (1, d)))
        if self.bias:
            out.append(("out_bias", (1,)))
        return out

    def score(self, x: torch.Tensor, valid: torch.Tensor | None, params: torch.Tensor) -> torch.Tensor:
        h, _, p = self._prepare(x, valid, params)

        def bias_of(name: str, w: torch.Tensor) -> torch.Tensor:
            return p[name] if self.bias else w.new_zeros(w.shape[:-1])

        for i in range(self.hidden_layers):
            w = p[f"w{i}"]
            h = h + torch.relu(self._linear(h, w, bias_of(f"b{i}", w)))
        w = p["out_weight"]
        return self._linear(h, w, bias_of("out_bias", w)).squeeze(-1).to(x.dtype)

    __call__ = score


SCORERS: dict[str, type[_FlatScorer]] = {"bam": BAMScorer, "mlp": MLPScorer}
