"""One sample through the model under a policy: the only evaluation loop (``run`` and ``fit`` use it).

A sample can be evaluated as a batch of copies of its prompt, batch element i scored under
parameter vector i of a NAMM policy (CMA-ES population members share one forward pass).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from harness.cache import EvictionCache
from harness.errors import UsageError
from harness.generation import greedy_generate, middle_crop
from tasks.base import stop_token_ids


def uses_chat(tokenizer, sample, chat_template: str) -> bool:
    """Whether ``sample`` is fed in the chat template (``auto``: when the sample asks for it and the
    tokenizer has one; ``on`` without a template is a :class:`UsageError`)."""
    use_chat = chat_template == "on" or (chat_template == "auto" and sample.chat and tokenizer.chat_template)
    if use_chat and not tokenizer.chat_template:
        raise UsageError("--chat-template on, but the model's tokenizer has no chat template; use auto or off")
    return bool(use_chat)


def format_prompt(tokenizer, sample, chat_template: str) -> list[int]:
    """Token ids of ``sample``: its prompt, in the chat template when ``chat_template`` says so
    (``auto``: when the sample asks for it and the tokenizer has one), then its answer prefix."""
    prefix = sample.answer_prefix
    if uses_chat(tokenizer, sample, chat_template):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": sample.prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids) + (tokenizer(prefix, add_special_tokens=False).input_ids if prefix else [])
    return tokenizer(sample.prompt + prefix).input_ids


@dataclass
class Evaluator:
    model: object
    tokenizer: object
    suite: object
    max_length: int
    n_up: int = 512
    cache_mode: str = "original"
    prefill_chunk: int | None = None
    chat_template: str = "auto"
    device: str = "cpu"
    truncation: str = "paper"
    protocol: str = "paper"  # or "kvpress": the context compressed once (harness/kvpress_protocol.py)
    compression_ratio: float = 0.0  # kvpress protocol: the fraction of the context's tokens evicted
    query_aware: bool = False  # kvpress protocol: the question is part of the compressed context

    def __post_init__(self):
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)

    def inputs(self, sample) -> tuple[list[int], list[int]]:
        """``(prompt ids, ids fed to the model)``.

        ``truncation="paper"``: the templated prompt's tokens are middle-cropped to
        ``max_length - max_new_tokens``. ``"longbench"`` (LongBench ``pred.py``): the plain prompt's
        tokens are middle-cropped (first half + last half, decoded back to text) so that, once the
        chat template is applied, prompt + ``max_new_tokens`` fit in ``max_length`` (pred.py's
        ``model2maxlen`` likewise leaves the model's context less room for the answer).
        """
        ids = format_prompt(self.tokenizer, sample, self.chat_template)
        if self.truncation == "longbench":
            # pred.py crops the plain prompt to model2maxlen, the context less room for the answer (3500
            # for a 4k model); here that room is the chat template's tokens plus max_new_tokens
            budget = self.max_length - sample.max_new_tokens
            if len(ids) <= budget:
                return ids, ids
            raw = self.tokenizer(sample.prompt).input_ids
            keep = budget - (len(ids) - len(raw))
            for _ in range(8):  # decoding and re-encoding can shift a few tokens: shrink until it fits
                if keep < 1:
                    break
                head = keep // 2
                text = (self.tokenizer.decode(raw[:head], skip_special_tokens=True)
                        + self.tokenizer.decode(raw[len(raw) - (keep - head):], skip_special_tokens=True))
                fed = format_prompt(self.tokenizer, dataclasses.replace(sample, prompt=text), self.chat_template)
                if len(fed) <= budget:
                    return ids, fed
                keep -= len(fed) - budget
            return ids, middle_crop(ids, budget)
        return ids, middle_crop(ids, self.max_length - sample.max_new_tokens)

    def evaluate(self, sample, policy, batch: int = 1, cropped: list[int] | None = None,
                 target: list[int] | None = None) -> list[dict]:
        """Generate and score; one result per batch element (prediction, score, cache, timing; with
        ``target`` token ids also ``progress``: how far greedy decoding followed them, see
        :func:`~harness.generation.greedy_generate`)."""
        if self.protocol == "kvpress":
            return self._evaluate_kvpress(sample, policy, batch, target)
        cropped = cropped if cropped is not None else self.inputs(sample)[1]
        chunk = self.prefill_chunk or self.n_up
        # streamed NAMM features need every n_up-th token to end a forward chunk; greedy_generate
        # feeds the prompt and all but the last new token
        cache = EvictionCache(self.model.config, policy, n_up=self.n_up, mode=self.cache_mode,
                              stream_rows=self.n_up % chunk == 0, max_tokens=len(cropped) + sample.max_new_tokens - 1)
        return self._generate(sample, cache, cropped, batch, chunk, target=target)

    def kvpress_inputs(self, sample, policy) -> tuple[EvictionCache, list[int], int, dict]:
        """The kvpress protocol's ``(cache, ids fed, context tokens, record info)`` for ``sample``: the
        cache compresses the context once, at its end, to ``int(n_context * (1 - R))`` tokens per KV
        head ranked by the policy's scores; the question after it is never compressed."""
        from harness.kvpress_protocol import context_and_question, kept_tokens, with_budget

        context, question = context_and_question(self.tokenizer, sample, self.chat_template, self.query_aware,
                                                 self.max_length)
        keep = kept_tokens(len(context), self.compression_ratio) if policy.evicts else len(context)  # full: all
        cache = EvictionCache(self.model.config, with_budget(policy, keep), mode=self.cache_mode, stream_rows=True,
                              once_at=len(context), keep_tokens=keep)
        info = {"context_tokens": len(context), "question_tokens": len(question), "kept_tokens": keep,
                "compression_ratio": self.compression_ratio, "query_aware": self.query_aware}
        return cache, context + question, len(context), info

    def _evaluate_kvpress(self, sample, policy, batch: int, target: list[int] | None = None) -> list[dict]:
        cache, ids, n_context, info = self.kvpress_inputs(sample, policy)
        results = self._generate(sample, cache, ids, batch, self.prefill_chunk or self.n_up, split=n_context,
                                 target=target)
        return [{**r, "kvpress": info} for r in results]

    def _generate(self, sample, cache, ids: list[int], batch: int, chunk: int, split: int | None = None,
                  target: list[int] | None = None) -> list[dict]:
        input_ids = torch.tensor([ids], device=self.device).expand(batch, -1)
        gen = greedy_generate(self.model, input_ids, cache, sample.max_new_tokens, chunk,
                              self.stop_ids, shared_prefix=batch > 1, split=split, target=target)
        results = []
        for i, tokens in enumerate(gen.batch_tokens):
            prediction = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append({
                "prediction": prediction,
                "score": float(self.suite.score(sample, prediction)),
                "new_tokens": len(tokens),
                "cache": cache.summary(i if batch > 1 else None),
                "timing": {
                    "prefill_s": round(gen.prefill_s, 4),
                    "decode_s": round(gen.decode_s, 4),
                    "policy_s": round(cache.policy_seconds(), 4),
                },
                **({"progress": gen.progress[i]} if gen.progress is not None else {}),
            })
        return results

