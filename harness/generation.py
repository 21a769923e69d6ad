"""Greedy generation with chunked prefill through any ``Cache`` (the runner's only decoding loop)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.measure import Clock
from tasks.base import cache_kwargs


@dataclass
class Generation:
    tokens: list[int]  # batch element 0 (the runner's single prompt)
    prefill_s: float
    decode_s: float
    batch_tokens: list[list[int]] | None = None  # every batch element's tokens
    progress: list[float] | None = None  # per batch element, with a target: see _Progress


class _Progress:
    """How far greedy decoding gets along a target continuation, per batch element (see
    :func:`greedy_generate`'s ``target``): ``(k + p) / T`` where the first ``k`` greedy tokens equal the
    target's, ``p`` is the probability the model gave the target's next token where it diverged
    (1.0 when all ``T`` match), ``T = min(len(target), max_new_tokens)``."""

    def __init__(self, target: list[int], batch: int, max_new_tokens: int):
        self.target = list(target)[:max_new_tokens]
        self.matched = [0] * batch
        self.value: list[float | None] = [None if self.target else 1.0] * batch

    def step(self, step: int, logits: torch.Tensor, chosen: list[int]) -> None:
        """Decoding step ``step`` chose ``chosen`` (``[batch]``) from ``logits`` (``[batch, vocab]``)."""
        open_rows = [i for i, v in enumerate(self.value) if v is None]
        if not open_rows or step >= len(self.target):
            return
        want = self.target[step]
        probs = None
        for i in open_rows:
            if chosen[i] == want:
                self.matched[i] += 1
                if self.matched[i] == len(self.target):
                    self.value[i] = 1.0
                continue
            if probs is None:
                probs = torch.softmax(logits.float(), dim=-1)[:, want].tolist()
            self.value[i] = (self.matched[i] + probs[i]) / len(self.target)

    def result(self) -> list[float]:
        """Rows still open (decoding ended before the target did) count what they matched."""
        return [v if v is not None else self.matched[i] / len(self.target) for i, v in enumerate(self.value)]


@torch.inference_mode()
def greedy_generate(
    model,
    input_ids: torch.Tensor,
    cache,
    max_new_tokens: int,
    chunk_size: int = 512,
    stop_ids: set[int] = frozenset(),
    shared_prefix: bool = False,
    split: int | None = None,
    target: list[int] | None = None,
) -> Generation:
    """Feed ``input_ids`` (``[batch, L]``) in ``chunk_size`` chunks, then decode greedily.

    ``split``: no chunk crosses this token index (the chunks restart there): the kvpress protocol
    feeds the context (``input_ids[:, :split]``, compressed once at its end) apart from the question.

    Positions come from the cache (tokens seen), so eviction between chunks is transparent.
    Each batch element stops after ``max_new_tokens`` or at a stop id (which is not returned);
    finished elements keep being fed their stop token until every element is done.
    ``shared_prefix``: the rows of ``input_ids`` are identical (an :class:`EvictionCache` is required);
    the first chunk is computed once for all of them.
    ``target``: token ids of a reference continuation; :attr:`Generation.progress` then says, per batch
    element, how far greedy decoding followed it (``_Progress``: a dense signal in [0, 1], 1 = the target
    reproduced), from the logits decoding computes anyway.
    """
    clock = Clock(input_ids.device)  # CUDA events on a GPU (synchronised), perf_counter on CPU
    fed = cache_kwargs(model, cache)  # how this transformers version takes the cache (once, not per token)
    logits = None
    batch = input_ids.shape[0]
    first = 0
    length = input_ids.shape[1]
    bounds = [(s, min(s + chunk_size, length)) for s in range(0, length, chunk_size)]
    if split is not None and 0 < split < length:
        bounds = ([(s, min(s + chunk_size, split)) for s in range(0, split, chunk_size)]
                  + [(s, min(s + chunk_size, length)) for s in range(split, length, chunk_size)])
    with clock.phase():
        if shared_prefix and batch > 1:  # identical rows: the first chunk runs once (EvictionCache.shared_prefill)
            end = bounds[0][1]
            out = cache.shared_prefill(lambda: model(input_ids=input_ids[:1, :end], **fed,
                                                     use_cache=True, logits_to_keep=1), batch)
            logits, first = out.logits[:, -1].expand(batch, -1), 1
        for s, e in bounds[first:]:
            out = model(input_ids=input_ids[:, s:e], **fed, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1]
    prefill_s = clock.seconds
    tokens: list[list[int]] = [[] for _ in range(batch)]
    done = [False] * batch
    progress = _Progress(target, batch, max_new_tokens) if target is not None else None
    with clock.phase():
        for step in range(max_new_tokens):
            next_tokens = logits.argmax(-1)
            chosen = next_tokens.tolist()
            if progress is not None:
                progress.step(step, logits, chosen)
            for i, token in enumerate(chosen):
                if not done[i]:
                    if token in stop_ids:
                        done[i] = True
                    else:
                        tokens[i].append(token)
            if all(done) or step + 1 == max_new_tokens:
                break
            out = model(input_ids=next_tokens[:, None], **fed, use_cache=True)
            logits = out.logits[:, -1]
    return Generation(tokens[0], prefill_s, clock.seconds, tokens, progress.result() if progress else None)


def middle_crop(ids: list[int], budget: int) -> list[int]:
    """Keep the first and last halves of ``ids`` when longer than ``budget`` (LongBench's truncation)."""
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head) :]
