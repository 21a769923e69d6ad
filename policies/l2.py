"""L2: keep the tokens whose keys have the LOWEST L2 norm (Devoto et al., 2024, arXiv 2406.11430).

A low key norm correlates with high attention received, so no attention is needed. Per layer and
KV head: the ``recent_window`` newest tokens plus the lowest-norm keys, up to ``budget`` tokens.
"""

from dataclasses import dataclass

import torch

from policies import register_policy
from policies.base import BudgetPolicy, LayerView


@register_policy("l2")
@dataclass
class L2Norm(BudgetPolicy):
    """Lowest key-norm tokens + recent window, fixed budget per KV head (no attention needed)."""

    def score(self, view: LayerView) -> torch.Tensor:
        return -view.keys.float().norm(dim=-1)
