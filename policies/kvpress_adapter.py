"""kvpress adapter: a NVIDIA kvpress *scorer* press as a policy, ``--policy kvpress:<Press>[:ratio][:key=value...]``.

A kvpress ``ScorerPress`` ranks cached tokens with ``press.score(module, hidden_states, keys, values,
attentions, kwargs)`` → ``[batch, kv_heads, n_keys]`` (higher = keep) and keeps the top
``1 - compression_ratio`` once, right after prefill. Here the same ``score`` ranks a layer's HELD
tokens at every ``n_up`` update, and each KV head keeps its best-scored ``budget`` tokens
(``--cache-size``), or, without a budget, ``int(seen * (1 - ratio))`` of the tokens SEEN so far (kvpress's
rounding; counting tokens seen keeps repeated updates from compounding). Example:
``kvpress:KnormPress:0.5``, ``kvpress:StreamingLLMPress:0.5:n_sink=40``.

What the press receives: ``keys``/``values`` ``[batch, kv_heads, n_keys, head_dim]`` (post-RoPE, slots
in position order, the newest token last); ``attentions`` ``None`` or, for the presses marked
``rows`` below, the softmax rows of the queries since the previous update, averaged over each KV group,
``[batch, kv_heads, n_queries, n_keys]`` (kvpress passes ``[batch, heads, q, n_keys]``; TOVA and
ObservedAttention average over heads, so they score the same); ``module=None``,
``hidden_states=None``, ``kwargs={}``. The press's ``compression_ratio`` is set before each call so
that press-internal slot arithmetic (StreamingLLM) keeps exactly the target count.

Works (kvpress 0.5.5): KnormPress, StreamingLLMPress, RandomPress, KeyDiffPress, LagKVPress, CURPress
(keys/values only) and TOVAPress, ObservedAttentionPress (attention rows). Scorer presses that need the
attention module, hidden states or RoPE tables (SnapKV, ExpectedAttention, LeverageScore, ...) and
non-scorer presses (AdaKV, DecodingPress, ThinK, ...) are refused with a one-line ``ValueError``.

Intended differences from kvpress: ties break toward the older slot (kvpress's ``topk`` leaves them
unspecified); ``recent_window`` (default 0, as kvpress) can protect the newest tokens like ``l2``'s;
compression repeats every ``n_up`` tokens (a prompt prefilled in one chunk with ``n_up`` ≥ its length
is kvpress's single compression); ObservedAttention divides by the number of queries of a square causal
prefill, exact only for that single compression. ``import kvpress`` happens only when the policy is
built (it imports transformers). kvpress 0.5.5 pins ``transformers<5.3`` (``pip install -e '.[kvpress]'``);
only its own forward hooks break on later versions: this adapter, which calls ``score`` alone, also
passed its tests on transformers 5.23 with kvpress installed ``--no-deps``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

from policies import register_policy
from policies.base import LayerView, Policy, Selection, topk_mask

# press class name → what it reads besides keys/values: None, or "rows" (attention of the new queries)
SUPPORTED = {
    "KnormPress": None, "StreamingLLMPress": None, "RandomPress": None, "KeyDiffPress": None,
    "LagKVPress": None, "CURPress": None, "TOVAPress": "rows", "ObservedAttentionPress": "rows",
}
DEFAULT_BUDGET = 1024


@register_policy("kvpress")
@dataclass
class KVPress(Policy):
    """kvpress:<Press>[:ratio] — a kvpress scorer press (KnormPress, TOVAPress, ...) per head, every n_up."""

    press: str = "KnormPress"
    ratio: float | None = None  # keep int(seen * (1 - ratio)) tokens when no budget is given
    budget: int | None = None  # tokens per KV head (--cache-size); wins over ratio
    recent_window: int = 0  # newest tokens always kept (kvpress: none)
    press_args: dict = field(default_factory=dict)  # extra press fields, e.g. {"n_sink": 40}

    @staticmethod
    def parse_spec(spec: str) -> dict:
        """``"KnormPress:0.5:n_sink=4"`` → ``{"press": ..., "ratio": 0.5, "press_args": {"n_sink": 4}}``."""
        name, *rest = spec.split(":")
        options: dict = {"press": name, "press_args": {}}
        for part in rest:
            key, eq, value = part.partition("=")
            if not eq:
                try:
                    options["ratio"] = float(part)
                except ValueError:
                    raise ValueError(f"kvpress:{spec}: {part!r} is neither a ratio nor key=value") from None
                continue
            try:
                options["press_args"][key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                options["press_args"][key] = value
        return options

    def __post_init__(self):
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be a positive number of tokens, got {self.budget}")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise ValueError(f"kvpress ratio must be in [0, 1), got {self.ratio}")
        self._press = _build_press(self.press, self.press_args)
        self.attention = SUPPORTED[self.press]  # instance value: what the cache collects for us

    def target(self, seen: int) -> int:
        """Tokens each KV head keeps after an update at ``seen`` tokens."""
        if self.budget is not None:
            return self.budget
        if self.ratio is not None:
            return max(1, int(seen * (1 - self.ratio)))
        return DEFAULT_BUDGET

    def select(self, view: LayerView) -> Selection:
        n, target = view.n_keys, self.target(view.seen)
        if n <= target or (self.attention and view.attention is None):
            return Selection(view.valid.float(), view.valid.clone())
        self._press.compression_ratio = (n - target - 0.5) / n  # press-internal int(n * (1 - r)) == target
        attentions = view.attention if self.attention else None
        scores = self._press.score(None, None, view.keys, view.values, attentions, {}).float()
        scores = scores.masked_fill(view.age < min(self.recent_window, target), math.inf)
        scores = scores.masked_fill(~view.valid, -math.inf)
        return Selection(scores, topk_mask(scores, target) & view.valid)


def _build_press(name: str, press_args: dict):
    """The press object; any problem is a one-line ``ValueError`` naming what to do."""
    try:
        import kvpress
    except ImportError as err:
        raise ValueError("kvpress is not installed: pip install -e '.[kvpress]' (kvpress 0.5.5 needs "
                         f"transformers<5.3), or run `tox -e kvpress` ({err})") from None
    supported = ", ".join(SUPPORTED)
    cls = getattr(kvpress, name, None)
    is_press, is_scorer = (issubclass(cls, kvpress.BasePress), issubclass(cls, kvpress.ScorerPress)) \
        if isinstance(cls, type) else (False, False)
    if not is_press:
        raise ValueError(f"unknown kvpress press {name!r}; supported here: {supported}")
    if not is_scorer:
        raise ValueError(f"kvpress press {name!r} is not a scorer press (no per-token score); supported here: {supported}")
    if name not in SUPPORTED:
        raise ValueError(f"kvpress press {name!r} needs the attention module or hidden states, which the eviction "
                         f"cache does not pass; supported here: {supported}")
    try:
        return cls(compression_ratio=0.0, **press_args)
    except (TypeError, AssertionError, ValueError) as err:
        raise ValueError(f"kvpress press {name} rejected {press_args}: {err}") from None


__all__ = ["SUPPORTED", "KVPress"]
