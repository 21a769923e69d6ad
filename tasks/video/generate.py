"""Greedy generation of a video-LLM through an eviction cache, and the stock transformers path to
compare it with. :func:`run_sample` is one question about one video under the run's cache factory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tasks.base import CacheFactory, cache_kwargs, stop_token_ids
from tasks.video.inputs import VideoInputs, build_inputs
from tasks.video.modality import cache_summary
from tasks.video.vlm import VideoBundle


@dataclass
class VideoGeneration:
    tokens: list[int]
    vision_s: float
    prefill_s: float
    decode_s: float


def _stop_ids(bundle: VideoBundle) -> set[int]:
    return stop_token_ids(bundle.model, bundle.tokenizer)


@torch.inference_mode()
def generate_with_cache(bundle: VideoBundle, inputs: VideoInputs, cache, max_new_tokens: int,
                        chunk_size: int = 512, stop_ids: set[int] | None = None) -> VideoGeneration:
    """Greedy generation with the language model reading/writing ``cache``.

    The video features are computed once and scattered into the prompt embeddings; the prompt is
    then fed ``chunk_size`` tokens at a time (positions come from the cache: tokens seen).
    """
    model = bundle.model
    stop_ids = _stop_ids(bundle) if stop_ids is None else stop_ids
    device, dtype = bundle.device, bundle.dtype
    ids = inputs.input_ids.to(device)
    start = time.perf_counter()
    feats = model.get_video_features(pixel_values_videos=inputs.pixel_values_videos.to(device, dtype))
    feats = getattr(feats, "pooler_output", feats)
    feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, feats.shape[-1])
    embeds = model.get_input_embeddings()(ids)
    mask = ids == bundle.video_token_id
    if int(mask.sum()) != feats.shape[0]:
        raise RuntimeError(f"{int(mask.sum())} video placeholders but {feats.shape[0]} video features; "
                           "tokens_per_frame does not match the model")
    embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), feats.to(embeds.dtype))
    vision_s = time.perf_counter() - start

    start = time.perf_counter()
    logits = None
    for s in range(0, embeds.shape[1], chunk_size):
        out = model(inputs_embeds=embeds[:, s : s + chunk_size], **cache_kwargs(model, cache), use_cache=True,
                    logits_to_keep=1)
        logits = out.logits[:, -1]
    prefill_s = time.perf_counter() - start
    tokens: list[int] = []
    start = time.perf_counter()
    for step in range(max_new_tokens):
        token = int(logits[0].argmax(-1))
        if token in stop_ids:
            break
        tokens.append(token)
        if step + 1 == max_new_tokens:
            break
        out = model(input_ids=torch.tensor([[token]], device=device), **cache_kwargs(model, cache), use_cache=True)
        logits = out.logits[:, -1]
    return VideoGeneration(tokens, vision_s, prefill_s, time.perf_counter() - start)


@torch.inference_mode()
def generate_unwrapped(bundle: VideoBundle, inputs: VideoInputs, max_new_tokens: int) -> list[int]:
    """The stock transformers path: ``model.generate`` (greedy, sdpa attention, its own cache)."""
    model = bundle.model
    current = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        ids = inputs.input_ids.to(bundle.device)
        stop = sorted(_stop_ids(bundle))
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values_videos=inputs.pixel_values_videos.to(bundle.device, bundle.dtype),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=stop or None, pad_token_id=stop[0] if stop else None)
    finally:
        model.set_attn_implementation(current)
    new = out[0, ids.shape[1] :].tolist()
    cut = next((i for i, t in enumerate(new) if t in set(stop)), len(new))
    return new[:cut]


def run_sample(bundle: VideoBundle, frames, question: str, caches: CacheFactory, max_new_tokens: int,
               prefill_chunk: int | None = None) -> dict:
    """One question about one video, the language model reading and writing a fresh cache from
    ``caches``: prediction, new_tokens, cache, timing, tokens. The prompt is prefilled in chunks of
    ``prefill_chunk`` tokens (default: the factory's ``n_up``)."""
    caches.attach(bundle.model)
    inputs = build_inputs(bundle, frames, question)
    cache = caches.new(bundle.model.config)
    gen = generate_with_cache(bundle, inputs, cache, max_new_tokens, prefill_chunk or caches.n_up)
    return {
        "prediction": bundle.tokenizer.decode(gen.tokens, skip_special_tokens=True),
        "tokens": gen.tokens,
        "new_tokens": len(gen.tokens),
        "cache": cache_summary(cache, inputs.frame_of),
        "timing": {"vision_s": round(gen.vision_s, 4), "prefill_s": round(gen.prefill_s, 4),
                   "decode_s": round(gen.decode_s, 4), "policy_s": round(cache.policy_seconds(), 4)},
        "input_tokens": int(inputs.input_ids.shape[1]),
        "image_tokens": int(inputs.image_mask.sum()),
        "text_tokens": int((~inputs.image_mask).sum()),
    }
