"""StreamingLLM: attention sinks + recent window (Xiao et al., 2023, arXiv 2309.17453).

Keeps the first ``n_sink`` tokens of the sequence and the newest ``budget - n_sink``.
"""

from dataclasses import dataclass

import torch

from policies import register_policy
from policies.base import BudgetPolicy, LayerView


@register_policy("streaming")
@dataclass
class Streaming(BudgetPolicy):
    """The first n_sink tokens (attention sinks) + the newest budget - n_sink tokens."""

    n_sink: int = 4

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.n_sink <= self.budget:
            raise ValueError(f"n_sink must be between 0 and the budget ({self.budget}), got {self.n_sink}")

    @property
    def window(self) -> int:
        return self.budget - self.n_sink

    def score(self, view: LayerView) -> torch.Tensor:
        return (view.positions < self.n_sink).float()
