"""No L x L allocation: with chunked prefill the largest tensor any op makes grows linearly with the
context length (``[chunk, L]``-shaped logits, masks and attention rows), for every kind of policy."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from harness.generation import greedy_generate
from policies import make_policy

CHUNK = 256


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor(policy, length: int) -> int:
    model = tiny_llama()
    attach(model)
    ids = torch.randint(0, 128, (1, length), generator=torch.Generator().manual_seed(0))
    cache = EvictionCache(model.config, policy, n_up=CHUNK, stream_rows=True, max_tokens=length + 2)
    with LargestTensor() as probe:
        greedy_generate(model, ids, cache, 2, CHUNK)
    return probe.largest


@pytest.mark.parametrize("name,options", [("full", {}), ("h2o", {"budget": 64}), ("l2", {"budget": 64}),
                                          ("namm_bam", {"n_up": CHUNK})])
def test_largest_tensor_grows_linearly_with_length(name, options):
    small, large = (largest_tensor(make_policy(name, **options), n) for n in (512, 2048))
    assert large < 2048 * 2048  # not even one head's L x L
    assert large <= 4.5 * small, (small, large)  # 4x the length: ~4x the largest tensor, not 16x
