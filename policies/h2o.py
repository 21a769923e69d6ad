"""H2O: heavy hitters + recent window (Zhang et al., 2023, arXiv 2306.14048).

Keeps, per layer and KV head, the ``recent_window`` newest tokens plus the tokens with the largest
attention accumulated over every query since they entered the cache (each query's softmax row,
averaged over the query heads of the KV group), up to ``budget`` tokens. Runs every ``n_up`` tokens
like every other policy here, not at every step as in the original paper.
"""

from dataclasses import dataclass

import torch

from policies import register_policy
from policies.base import BudgetPolicy, LayerView


@register_policy("h2o")
@dataclass
class H2O(BudgetPolicy):
    """Heavy hitters (accumulated attention received) + recent window, fixed budget per KV head."""

    attention = "sum"

    def score(self, view: LayerView) -> torch.Tensor:
        acc = view.state.get("h2o_acc")
        acc = view.attention if acc is None else acc + view.attention
        view.state["h2o_acc"] = acc
        return acc
