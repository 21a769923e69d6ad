"""The full cache: keep every token (the reference every normalised score is measured against)."""

from dataclasses import dataclass

import torch

from policies import register_policy
from policies.base import LayerView, Policy, Selection


@register_policy("full")
@dataclass
class FullCache(Policy):
    """Keep every token; never evicts (the baseline)."""

    evicts = False

    def select(self, view: LayerView) -> Selection:
        return Selection(torch.zeros_like(view.valid, dtype=torch.float32), view.valid.clone())
