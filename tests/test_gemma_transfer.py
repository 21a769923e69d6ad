"""Gemma 3 270M (the zero-shot transfer model, real weights): only global layers evict."""

import pytest
import torch

from harness.attention import attach
from harness.cache import EvictionCache, EvictionLayer
from harness.generation import greedy_generate
from policies import make_policy
from tasks.niah import haystack_text


@pytest.fixture(scope="module")
def gemma():
    from harness.models import load_model

    model, tokenizer, source = load_model("gemma")
    assert source.name == "gemma" and source.chat_template is False
    return model, tokenizer


def test_only_global_layers_evict_and_full_matches_generate(gemma):
    model, tokenizer = gemma
    ids = tokenizer(haystack_text()[:6000], return_tensors="pt").input_ids[:, :700]
    model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        want = model.generate(ids, max_new_tokens=20, min_new_tokens=20, do_sample=False)[0, 700:].tolist()
    attach(model)
    full = EvictionCache(model.config, make_policy("full"), n_up=64)
    assert greedy_generate(model, ids, full, 20, chunk_size=64).tokens == want

    cache = EvictionCache(model.config, make_policy("h2o", budget=128), n_up=64)
    assert [i for i, layer in enumerate(cache.layers) if isinstance(layer, EvictionLayer)] == [5, 11, 17]
    greedy_generate(model, ids, cache, 20, chunk_size=64)
    stats = cache.stats()
    for i, s in enumerate(stats):
        if i in (5, 11, 17):
            assert s["updates"] == (700 + 19) // 64 and 128 <= s["physical"] < 128 + 64
        else:  # transformers' sliding-window layer, untouched: it keeps its own window
            assert s.get("evicts") is False and s["physical"] == model.config.sliding_window - 1
