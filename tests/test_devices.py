"""The eviction equivalence and the policies on every device this machine has, in fp32 and bf16.

On a CPU machine the device is ``cpu`` only; on a GPU machine ``cuda`` joins (``scripts/gpu_check.sh``
runs this file there). Everything is created on the device under test: a tensor left on the wrong
device raises.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from harness.attention import attach
from harness.cache import EvictionCache
from policies import make_policy
from policies.base import LayerView
from test_eviction_equivalence import N_UP, EveryThird, reference_mask

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.bfloat16]
# fp32 paths agree to rounding; bf16 ones to bf16's (logits of the tiny random model are O(0.1))
TOLERANCE = {torch.float32: dict(atol=1e-4, rtol=1e-3), torch.bfloat16: dict(atol=6e-2, rtol=6e-2)}


def _model(device, dtype):
    return tiny_llama().to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode,per_head,needs,chunk", [("original", 0, "rows", 5), ("exact", 1, "sum", 1),
                                                       ("exact", 1, None, N_UP)])
def test_evicting_run_equals_masked_reference(device, dtype, mode, per_head, needs, chunk):
    """Chunked evicting run == one eager forward with the mask the eviction schedule implies, on
    ``device`` in ``dtype``; and that reference differs from an unevicted run beyond the tolerance."""
    model = _model(device, dtype)
    ids = torch.randint(0, 128, (1, 70), generator=torch.Generator().manual_seed(1)).to(device)
    attach(model)
    cache = EvictionCache(model.config, EveryThird(per_head=per_head, needs=needs), n_up=N_UP, mode=mode)
    with torch.no_grad():
        got = torch.cat([model(input_ids=ids[:, s : s + chunk], past_key_values=cache).logits
                         for s in range(0, 70, chunk)], 1)

    def reference(mask):
        model.set_attn_implementation("eager")
        additive = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(
            ~mask.to(device), torch.finfo(dtype).min)
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=additive,
                         position_ids=torch.arange(70, device=device)[None]).logits

    want = reference(reference_mask(70, 4, 2, per_head, chunk))
    assert got.device.type == device and got.dtype == dtype
    assert cache.layers[0].n_updates == 70 // N_UP and not cache.layers[0].contiguous
    torch.testing.assert_close(got.float(), want.float(), **TOLERANCE[dtype])
    # the error is far below what eviction changes, so the comparison can fail (after the first update)
    unevicted = reference(reference_mask(70, 4, 2, per_head, 10**6))
    error = (got.float() - want.float())[:, N_UP:].abs().mean()
    gap = (unevicted.float() - want.float())[:, N_UP:].abs().mean()
    assert error < gap / 4, (float(error), float(gap))


def _view(device, dtype, seed=0, b=2, h=3, n=48, d=16, q=16):
    g = torch.Generator().manual_seed(seed)
    rows = torch.rand(b, h, q, n, generator=g).tril(n - q)
    rows = rows / rows.sum(-1, keepdim=True)
    return LayerView(
        keys=torch.randn(b, h, n, d, generator=g).to(device, dtype),
        values=torch.randn(b, h, n, d, generator=g).to(device, dtype),
        positions=torch.arange(n).expand(b, h, n).clone().to(device),
        valid=torch.ones(b, h, n, dtype=torch.bool, device=device),
        seen=n, layer_idx=0,
        attention=rows.to(device, torch.float32),
    )


POLICIES = [("h2o", {"budget": 20}), ("l2", {"budget": 20}), ("streaming", {"budget": 20}),
            ("namm_bam", {"n_up": 16}), ("namm_mlp", {"n_up": 16})]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,options", POLICIES, ids=[p[0] for p in POLICIES])
def test_policies_select_on_the_device_like_on_cpu(device, name, options):
    """Each policy's selection on ``device`` (fp32) keeps what it keeps on CPU; in bf16 it runs there
    too, its outputs on the device, with the budget policies' counts unchanged."""
    policy = make_policy(name, **options)
    if policy.attention == "sum":
        convert = lambda v: LayerView(**{**v.__dict__, "attention": v.attention.sum(-2)})  # noqa: E731
    elif policy.attention is None:
        convert = lambda v: LayerView(**{**v.__dict__, "attention": None})  # noqa: E731
    else:
        convert = lambda v: v  # noqa: E731
    cpu = policy.select(convert(_view("cpu", torch.float32)))
    here = make_policy(name, **options).select(convert(_view(device, torch.float32)))
    assert here.keep.device.type == device and here.scores.device.type == device
    assert torch.equal(here.keep.cpu(), cpu.keep)
    torch.testing.assert_close(here.scores.float().cpu(), cpu.scores.float(), atol=1e-4, rtol=1e-4)
    half = make_policy(name, **options).select(convert(_view(device, torch.bfloat16)))
    assert half.keep.device.type == device and half.keep.dtype == torch.bool
    if "budget" in options:
        assert torch.equal(half.keep.sum(-1).cpu(), cpu.keep.sum(-1))


@pytest.mark.parametrize("device", DEVICES)
def test_full_cache_greedy_equals_generate_on_the_device(device):
    """``full`` through the eviction cache answers exactly like transformers' own ``generate``."""
    from harness.generation import greedy_generate

    model = _model(device, torch.float32)
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(5)).to(device)
    want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, 40:].tolist()
    attach(model)
    gen = greedy_generate(model, ids, EvictionCache(model.config, make_policy("full")), 12, 16)
    assert gen.tokens == want
