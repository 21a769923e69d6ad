"""With the `full` policy the eviction cache is exactly the stock model (SmolLM2, real weights)."""

import torch

from harness.attention import attach
from harness.cache import EvictionCache
from harness.generation import greedy_generate
from policies import make_policy
from tasks.base import cache_kwargs
from tasks.niah import haystack_text

N_UP = 64
NEW = 150  # > 2 x n_up decoding steps


def test_full_policy_matches_model_generate_token_for_token(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(haystack_text()[:9000], return_tensors="pt").input_ids[:, :1600]
    assert ids.shape[1] == 1600
    model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        want = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)[0, ids.shape[1] :].tolist()
    attach(model)
    cache = EvictionCache(model.config, make_policy("full"), n_up=N_UP)
    got = greedy_generate(model, ids, cache, NEW, chunk_size=N_UP).tokens  # 25 prefill chunks
    assert got == want
    assert cache.get_seq_length() == 1600 + NEW - 1  # the last token is never fed back
    assert all(s["physical"] == 1600 + NEW - 1 for s in cache.stats())


def test_generate_runs_on_an_evicted_cache(smollm2):
    """transformers' own generate() drives the eviction cache (positions from tokens seen)."""
    model, tokenizer = smollm2
    ids = tokenizer(haystack_text()[:4000], return_tensors="pt").input_ids[:, :600]
    attach(model)
    cache = EvictionCache(model.config, make_policy("h2o", budget=128), n_up=N_UP)
    with torch.inference_mode():
        out = model.generate(ids, **cache_kwargs(model, cache), max_new_tokens=70, min_new_tokens=70, do_sample=False)
    assert out.shape[1] == 600 + 70
    layer = cache.eviction_layers[0]
    # one update after generate's single-shot 600-token prefill, one when decoding crosses 640
    assert layer.seen == 669 and layer.n_updates == 2
    assert layer.keys.shape[-2] <= 128 + N_UP
