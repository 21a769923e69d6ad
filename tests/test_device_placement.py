"""Each layer's tensors stay on that layer's device (what ``--device-map`` needs), checked on a CPU machine.

The detector: the cache layer's keys, values and attention live on the ``meta`` device while every
policy's own tensors (NAMM parameters and normalisation statistics) were made on the CPU, and a
dispatch mode refuses any op whose tensor arguments sit on different devices (as CUDA does: 0-dim
CPU tensors are allowed as scalars; copies between devices are what ``.to`` is for). A tensor
created on the wrong device (a ``torch.zeros(n)`` without ``device=``) therefore raises here, as it
would on a layer placed on ``cuda:1``.

Meta tensors hold no values, so ``.item()`` / ``bool()`` / ``int()`` of one (the kept count in the
cache's gather, "is every slot valid?") cannot run on meta: the mode answers them with fixed values
(``False``, ``1``, ``0.5``), which drive the eviction's general path (fillers, masks). Not run on
meta: the NAMM statistics of ``namm-init`` (``collect_stats``), which move to the CPU by design.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from conftest import tiny_llama
from harness.attention import attach, eviction_attention
from harness.cache import EvictionCache, EvictionLayer
from policies import make_policy

aten = torch.ops.aten
CROSS_DEVICE_OPS = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default,
                    aten._copy_from_and_resize.default, aten.lift_fresh.default}
B, KV_HEADS, GROUP, D, N_UP = 2, 2, 3, 16, 16  # NAMM: n_up a multiple of its hop (16)


class SameDevice(TorchDispatchMode):
    """Refuse ops mixing devices; answer ``.item()`` of meta tensors (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.scalars = 0

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and args[0].device.type == "meta":
            self.scalars += 1
            dtype = args[0].dtype
            return False if dtype == torch.bool else (0.5 if dtype.is_floating_point else 1)
        if func not in CROSS_DEVICE_OPS:
            devices = {t.device for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
                       and not (t.dim() == 0 and t.device.type == "cpu")}
            if len(devices) > 1:
                raise AssertionError(f"{func} mixes tensors on {sorted(map(str, devices))}")
        self.ops += 1
        return func(*args, **kwargs)


def test_the_detector_catches_a_cpu_tensor_next_to_a_meta_one():
    meta = torch.ones(3, 4, device="meta")
    with SameDevice():
        assert (meta * torch.tensor(2.0)).device.type == "meta"  # a 0-dim CPU scalar is fine (as on CUDA)
        assert torch.ones(3).to("meta").device.type == "meta"  # moving is what .to is for
        with pytest.raises(AssertionError, match="mixes tensors"):
            meta @ torch.ones(4, 2)  # meta's own kernel would not notice this one


POLICIES = [("h2o", {"budget": 4}), ("l2", {"budget": 4}), ("streaming", {"budget": 4, "n_sink": 1}),
            ("namm_bam", {}), ("namm_mlp", {})]


def _module():
    return types.SimpleNamespace(layer_idx=0, is_causal=True, training=False, num_key_value_groups=GROUP)


@pytest.mark.parametrize("mode", ["original", "exact"])
@pytest.mark.parametrize("stream_rows", [True, False], ids=["streamed", "buffered"])
@pytest.mark.parametrize("name,options", POLICIES, ids=[p for p, _ in POLICIES])
def test_cache_attention_and_policy_keep_the_layers_device(name, options, stream_rows, mode):
    """Three policy updates (n_up=16, chunks of 8 and 16 queries) through the attention function and the
    cache layer, everything on meta, the policy's own tensors on the CPU: no op mixes devices."""
    policy = make_policy(name, n_up=N_UP, **options)
    if name.startswith("namm"):
        assert policy.params.device.type == "cpu" and policy.norm_mean.device.type == "cpu"
    stream = stream_rows and policy.open_window({}, N_UP) is not None
    layer = EvictionLayer(policy, 0, n_up=N_UP, mode=mode, stream_rows=stream)
    detector = SameDevice()
    with detector:
        for q_len in (8, 8, 16, 16):
            keys = torch.randn(B, KV_HEADS, q_len, D, device="meta")
            keys_all, values_all = layer.update(keys, torch.randn_like(keys))
            query = torch.randn(B, KV_HEADS * GROUP, q_len, D, device="meta")
            out, _ = eviction_attention(_module(), query, keys_all, values_all, None, scaling=1 / math.sqrt(D))
            assert out.device.type == "meta" and out.shape == (B, q_len, KV_HEADS * GROUP, D)
    assert layer.n_updates == 3, layer.n_updates
    assert layer.keys.device.type == "meta" and layer.positions.device.type == "meta"
    assert all(t.device.type == "meta" for t in layer.state.values())
    if name.startswith("namm"):  # the scorer's weights were moved to the view's device once, and kept
        assert {key[0].type for key in policy._moved} == {"meta"}
    assert detector.ops > 50


def test_namm_weights_move_once_per_device_and_again_when_replaced():
    policy = make_policy("namm_bam")
    like = torch.zeros(1, device="meta")
    first = policy._on(like)
    assert all(t.device.type == "meta" for t in first)
    assert policy._on(like)[0] is first[0]  # cached
    assert policy._on(torch.zeros(1))[0].device.type == "cpu"  # another device: its own copy
    policy.set_params(torch.ones_like(policy.params))
    moved = policy._on(like)[0]
    assert moved is not first[0] and moved.device.type == "meta"


@pytest.mark.parametrize("name", ["h2o", "namm_bam"])
def test_a_whole_model_on_meta_keeps_its_device(name):
    """The tiny Llama on meta, prefilled in 4 chunks through the eviction cache (transformers' masks and
    RoPE included): every layer updates 4 times and no op mixes devices."""
    model = tiny_llama().to("meta")
    attach(model)
    cache = EvictionCache(model.config, make_policy(name, budget=8, n_up=N_UP), n_up=N_UP, stream_rows=True)
    ids = torch.zeros(1, 4 * N_UP, dtype=torch.long, device="meta")
    with SameDevice(), torch.no_grad():
        for start in range(0, ids.shape[1], N_UP):
            out = model(input_ids=ids[:, start:start + N_UP], past_key_values=cache, use_cache=True)
    assert out.logits.device.type == "meta"
    assert [layer.n_updates for layer in cache.eviction_layers] == [4, 4]
