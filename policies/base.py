"""The policy API: what an eviction policy sees at each update and what it returns.

Every ``n_up`` tokens, for every evicting layer, the cache hands the policy a :class:`LayerView`
and gets back a :class:`Selection`. Policies never touch transformers; they see tensors only:

- ``keys``, ``values``: ``[batch, kv_heads, n_keys, head_dim]`` (keys after RoPE)
- ``positions``: ``[batch, kv_heads, n_keys]`` absolute token index in the sequence (0-based)
- ``valid``: ``[batch, kv_heads, n_keys]`` False for filler slots of the ``exact`` cache mode
- ``attention``: ``None``, ``[batch, kv_heads, n_keys]`` (``attention="sum"``: attention each key
  received from every query since the previous update, averaged over the query heads of its KV
  group), or ``[batch, kv_heads, n_queries, n_keys]`` (``attention="rows"``: the softmax attention
  rows of the queries since the previous update — exactly ``n_up`` when prefill chunks align with
  ``n_up`` as by default, at most the last ``n_up`` otherwise — GQA-averaged, zero where a query
  came before the key)
- ``state``: per-token tensors the policy keeps between updates, ``[batch, kv_heads, n_keys, ...]``;
  the cache zero-fills entries of tokens added since the previous update and gathers them with
  the keys on eviction.
- ``window``: instead of ``attention``, a ``"rows"`` policy may take the rows as they arrive
  (:meth:`Policy.open_window`): then ``window`` is its own stream object and ``attention`` is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch


@dataclass
class LayerView:
    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    seen: int  # tokens seen so far; the newest token has position seen - 1
    layer_idx: int
    attention: torch.Tensor | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    window: object | None = None  # the policy's own stream of this update's rows (Policy.open_window)

    @property
    def n_keys(self) -> int:
        return self.keys.shape[-2]

    @property
    def age(self) -> torch.Tensor:
        """``[batch, kv_heads, n_keys]`` queries seen since each token entered (0 for the newest)."""
        return (self.seen - 1) - self.positions


@dataclass
class Selection:
    """A policy's decision for one layer.

    ``scores``: ``[batch, kv_heads, n_keys]`` float, higher = more worth keeping; used by the
    ``original`` cache mode to rank tokens when all heads keep the same count.
    ``keep``: ``[batch, kv_heads, n_keys]`` bool, the tokens each head wants to keep.
    """

    scores: torch.Tensor
    keep: torch.Tensor


class Policy:
    """Base class. Subclasses set ``name``/``attention`` and implement :meth:`select`.

    ``attention`` declares what the policy needs: ``None`` (no attention: the fast sdpa path
    stays on), ``"sum"`` (per-key attention received) or ``"rows"`` (last ``n_up`` rows).
    ``evicts = False`` marks a policy that never evicts (``full``); the cache then skips updates.
    """

    name: ClassVar[str] = ""
    attention: ClassVar[str | None] = None
    evicts: ClassVar[bool] = True

    def select(self, view: LayerView) -> Selection:
        raise NotImplementedError

    def open_window(self, state: dict[str, torch.Tensor], n_up: int, dtype: torch.dtype | None = None):
        """For ``attention="rows"``: an object that takes the rows as they arrive, or None (buffer them).

        The returned object has ``push(rows [batch, kv_heads, q, n_keys])`` (called once per query
        chunk; ``n_keys`` grows as keys arrive), ``rows`` (query rows pushed) and ``map_batch(fn)``;
        at the update it is handed to :meth:`select` as ``view.window`` with ``view.attention``
        None. ``state`` is the per-token state kept at the previous update; ``dtype`` the model's
        (keys') dtype. The cache streams only when its schedule makes every update see exactly the
        rows since the previous one.
        """
        return None

    def describe(self) -> dict:
        """JSON-able settings recorded in a run's ``config.json``."""
        from dataclasses import asdict, is_dataclass

        return {"name": self.name, **(asdict(self) if is_dataclass(self) else {})}


@dataclass
class BudgetPolicy(Policy):
    """Keep at most ``budget`` tokens per head: the ``recent_window`` newest, then the best scores.

    Subclasses implement :meth:`score` (``[batch, kv_heads, n_keys]``, higher = keep). With
    ``recent_window=None`` the window is ``budget // 2`` (H2O's equal heavy-hitter/recent split).
    """

    budget: int = 1024
    recent_window: int | None = None

    def __post_init__(self):
        if self.budget < 1:
            raise ValueError(f"budget must be a positive number of tokens, got {self.budget}")

    @property
    def window(self) -> int:
        window = self.budget // 2 if self.recent_window is None else self.recent_window
        return min(window, self.budget)

    def score(self, view: LayerView) -> torch.Tensor:
        raise NotImplementedError

    def select(self, view: LayerView) -> Selection:
        scores = self.score(view).float()
        recent = view.age < self.window
        scores = scores.masked_fill(recent, math.inf).masked_fill(~view.valid, -math.inf)
        return Selection(scores, topk_mask(scores, self.budget) & view.valid)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[..., n]`` bool mask of the ``k`` largest entries along the last dim (all if ``n <= k``).

    Ties break toward the lower index, deterministically on every device.
    """
    n = scores.shape[-1]
    if n <= k:
        return torch.ones_like(scores, dtype=torch.bool)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)
