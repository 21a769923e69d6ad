"""kvpress presses as policies (``policies/kvpress_adapter.py``), side by side with kvpress itself.

Tests that need kvpress skip with the reason when it is absent: kvpress 0.5.5 needs
``transformers<5.3``, so they run in their own environment (``tox -e kvpress`` or ``.ci/kvpress``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest
import torch

from policies import make_policy
from policies.base import LayerView

torch.set_num_threads(1)

needs_kvpress = pytest.mark.skipif(importlib.util.find_spec("kvpress") is None,
                                   reason="kvpress not installed: run `tox -e kvpress`")
B, H, N, D = 2, 3, 40, 8


def random_view(seed: int, n: int = N, seen: int | None = None, attention: torch.Tensor | None = None) -> LayerView:
    """Keys/values ``[B, H, n, D]`` with random values; slots hold positions ``seen - n .. seen - 1``."""
    g = torch.Generator().manual_seed(seed)
    seen = n if seen is None else seen
    positions = torch.arange(seen - n, seen).expand(B, H, n).clone()
    return LayerView(torch.randn(B, H, n, D, generator=g), torch.randn(B, H, n, D, generator=g), positions,
                     torch.ones(B, H, n, dtype=torch.bool), seen, 0, attention=attention)


def kept(keep: torch.Tensor) -> list[list[set[int]]]:
    return [[set(torch.nonzero(keep[b, h]).flatten().tolist()) for h in range(keep.shape[1])] for b in range(keep.shape[0])]


# ---- no kvpress needed ---------------------------------------------------------------------------


def test_kvpress_missing_is_a_one_line_value_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kvpress", None)  # makes `import kvpress` fail even where installed
    with pytest.raises(ValueError, match=r"kvpress is not installed: pip install -e '\.\[kvpress\]'") as err:
        make_policy("kvpress:KnormPress:0.5")
    assert "\n" not in str(err.value)


def test_spec_parsing_and_listing(capsys):
    from harness.cli import main
    from policies.kvpress_adapter import KVPress

    assert KVPress.parse_spec("StreamingLLMPress:0.25:n_sink=40") == {
        "press": "StreamingLLMPress", "ratio": 0.25, "press_args": {"n_sink": 40}}
    with pytest.raises(ValueError, match="neither a ratio nor key=value"):
        KVPress.parse_spec("KnormPress:half")
    with pytest.raises(ValueError, match="takes no ':' options"):
        make_policy("h2o:0.5")
    assert main(["list"]) == 0
    assert "kvpress:<Press>[:ratio]" in capsys.readouterr().out


# ---- (a) the adapter against hand-computed top-k ---------------------------------------------------


@needs_kvpress
@pytest.mark.parametrize("spec,options,seen,expect_k", [
    ("kvpress:KnormPress", {"budget": 13}, None, 13),  # --cache-size
    ("kvpress:KnormPress:0.5", {}, None, 20),  # ratio of the tokens seen: int(40 * 0.5)
    ("kvpress:KnormPress:0.75", {}, 100, 25),  # after earlier evictions: int(100 * 0.25) of the 40 held
    ("kvpress:KnormPress:0.5", {"budget": 7}, None, 7),  # a budget wins over the ratio
])
def test_knorm_keeps_lowest_key_norms_per_head(spec, options, seen, expect_k):
    view = random_view(3, seen=seen)
    policy = make_policy(spec, **options)
    assert policy.attention is None
    keep = policy.select(view).keep
    norms = view.keys.norm(dim=-1)  # [B, H, N]
    for b in range(B):
        for h in range(H):
            lowest = set(torch.topk(-norms[b, h], expect_k).indices.tolist())
            assert kept(keep)[b][h] == lowest, (b, h)


@needs_kvpress
def test_tova_and_observed_attention_read_attention_rows():
    """TOVA keeps the keys the NEWEST query attends to most (mean over heads) plus the newest token;
    ObservedAttention the largest attention received, divided by kvpress's causal query count."""
    g = torch.Generator().manual_seed(5)
    rows = torch.rand(B, H, 6, N, generator=g).softmax(-1)  # [B, kv_heads, n_queries, N]
    view = random_view(4, attention=rows)
    tova = make_policy("kvpress:TOVAPress", budget=10)
    assert tova.attention == "rows"
    last = rows[:, :, -1, :-1].mean(1)  # [B, N - 1], the same ranking for every head
    for b in range(B):
        want = set(torch.topk(last[b], 9).indices.tolist()) | {N - 1}
        assert all(s == want for s in kept(tova.select(view).keep)[b])
    observed = make_policy("kvpress:ObservedAttentionPress", budget=10)
    score = rows.sum(2) / torch.arange(N, 0, -1)
    for b in range(B):
        for h in range(H):
            assert kept(observed.select(view).keep)[b][h] == set(torch.topk(score[b, h], 10).indices.tolist())


@needs_kvpress
@pytest.mark.parametrize("name,message", [
    ("Nope", "unknown kvpress press 'Nope'"),
    ("AdaKVPress", "is not a scorer press"),
    ("SnapKVPress", "needs the attention module or hidden states"),
    ("KnormPress:1.5", "ratio must be in [0, 1)"),
])
def test_unusable_presses_are_clear_errors(name, message, tmp_path, capsys):
    from harness.cli import main

    with pytest.raises(ValueError, match=re.escape(message)):
        make_policy(f"kvpress:{name}")
    assert main(["run", "--policy", f"kvpress:{name}", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ---- (b) side by side with kvpress on SmolLM2 --------------------------------------------------------


def _transformers_at_least(version: str) -> bool:
    import transformers

    return tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= tuple(int(x) for x in version.split("."))


@needs_kvpress
@pytest.mark.skipif(_transformers_at_least("5.3"), reason="kvpress's own forward hooks need transformers<5.3 "
                    "(KeyError: 'cache_position'); the adapter itself only calls score(): run `tox -e kvpress`")
def test_l2_and_adapter_keep_what_kvpress_knorm_keeps(smollm2):
    """SmolLM2 prefills one prompt in a single forward; every layer compresses once, right after it.

    kvpress's ``KnormPress(0.5)`` (its own forward hooks on a ``DynamicCache``), our ``l2`` with
    ``recent_window=0`` and ``kvpress:KnormPress:0.5`` through the eviction cache keep the same token
    positions per layer and KV head. Intended difference: ``l2`` by default also keeps a recent window
    of ``budget // 2`` newest tokens (H2O's split); kvpress's Knorm has none, hence ``recent_window=0``.
    Ties: layer 0's keys depend on the token only (RoPE keeps norms), so repeated tokens tie exactly;
    at the cut we keep the older token, kvpress's ``topk`` any — the sets may differ only among tokens
    whose norm equals the cut's.
    """
    from kvpress import KnormPress
    from transformers import DynamicCache

    from harness.attention import attach
    from harness.cache import EvictionCache

    model, tokenizer = smollm2
    attach(model)
    text = "The passkey is 71432. Remember it. " + " ".join(f"Line {i}: the grass is green." for i in range(40))
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :300]
    n = ids.shape[1]
    with torch.no_grad():
        full = DynamicCache(config=model.config)
        model(ids, past_key_values=full)
        pressed = DynamicCache(config=model.config)
        with KnormPress(compression_ratio=0.5)(model):
            model(ids, past_key_values=pressed)
        ours = {}
        for spec, options in (("l2", {"budget": n // 2, "recent_window": 0}), ("kvpress:KnormPress:0.5", {})):
            cache = EvictionCache(model.config, make_policy(spec, **options), n_up=n)
            model(ids, past_key_values=cache)
            ours[spec] = cache
    exact = 0
    for i, layer in enumerate(pressed.layers):
        assert layer.keys.shape[-2] == n // 2
        # kvpress stores kept keys in score order: find each one's position among the full keys
        same = (layer.keys[0, :, :, None] == full.layers[i].keys[0, :, None]).all(-1)  # [kv_heads, n/2, n]
        assert bool((same.sum(-1) == 1).all()), i
        theirs = [set(row.tolist()) for row in same.float().argmax(-1)]
        norms = full.layers[i].keys[0].norm(dim=-1)  # [kv_heads, n]
        cut = norms.sort(-1).values[:, n // 2 - 1]  # the largest kept norm, per head
        for spec, cache in ours.items():
            for h, row in enumerate(cache.layers[i].positions[0]):  # [n/2] kept positions of head h
                differ = sorted(set(row.tolist()) ^ theirs[h])
                assert len(row) == n // 2 and bool((norms[h, differ] == cut[h]).all()), (spec, i, h, differ)
                exact += not differ
    assert exact >= 0.9 * 2 * len(pressed.layers) * norms.shape[0]  # ties are rare beyond layer 0


# ---- (c) end to end through the CLI ---------------------------------------------------------------------


@needs_kvpress
def test_run_with_a_kvpress_policy(tiny_model_dir, tmp_path):
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "niah", "--tasks", "passkey", "--limit", "1",
                 "--suite-arg", "lengths=256", "--policy", "kvpress:KnormPress:0.5", "--n-up", "64",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    seen = record["input_tokens"] + record["new_tokens"]
    for layer in record["cache"]["layers"]:
        assert layer["updates"] >= 3
        # half of the tokens seen at the last update, plus fewer than n_up newer ones
        assert seen // 2 - 64 < layer["logical"] < seen // 2 + 64
    config = json.loads((out / "config.json").read_text())
    assert config["policy"] == {"name": "kvpress", "press": "KnormPress", "ratio": 0.5, "budget": None,
                                "recent_window": 0, "press_args": {}}
