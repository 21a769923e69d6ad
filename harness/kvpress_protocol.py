"""The kvpress protocol (``run --protocol kvpress --compression-ratio R``), as NVIDIA kvpress's
``KVPressTextGenerationPipeline`` evaluates presses for its leaderboard:

- the sample's context (``Sample.prompt`` without ``Sample.question``) is put in the chat template
  with kvpress's separator trick (the user turn is ``context + "#" * (len(context) + 10)`` and the
  templated text is split at the separator), or, without a template, ``bos + context``;
- the question is ``question + <the template's text after the separator> + answer_prefix`` (without
  a template: ``question + "\\n" + answer_prefix``); both parts are tokenised apart, without special
  tokens; a context longer than the room the model has keeps its start (kvpress's truncation);
- the context is prefilled, then compressed ONCE to ``int(n_context * (1 - R))`` tokens per KV head,
  ranked by the policy's scores (:class:`harness.cache.EvictionCache` ``once_at``/``keep_tokens``);
- the question and the answer follow uncompressed, at positions continuing from the full context
  length (the cache counts tokens seen); decoding never evicts;
- ``query_aware`` (kvpress's ``--query_aware``): the question is part of the compressed context
  and the uncompressed part is only the template's tail and the answer prefix.
"""

from __future__ import annotations

import dataclasses

from harness.errors import UsageError, choose

PROTOCOLS = ("paper", "kvpress")  # the paper's periodic schedule, or kvpress's compress-the-context-once
SPLITTING_SUITES = "jsonl, niah, ruler, longbench, infinitebench"


def validate_protocol(config, suite) -> None:
    """The kvpress protocol's options: a ratio in [0, 1), no --cache-size, a suite of prompts."""
    choose("--protocol", config.protocol, PROTOCOLS)
    if config.protocol == "paper":
        if config.compression_ratio is not None or config.query_aware:
            raise UsageError("--compression-ratio and --query-aware belong to --protocol kvpress; add it, or drop them")
        return
    if config.compression_ratio is None or not 0 <= config.compression_ratio < 1:
        raise UsageError("--protocol kvpress needs --compression-ratio R with 0 <= R < 1 (the fraction of the "
                         f"context evicted, e.g. 0.5), got {config.compression_ratio}")
    if config.cache_size is not None:
        raise UsageError("--protocol kvpress sizes the cache by --compression-ratio; drop --cache-size")
    if hasattr(suite, "evaluate_sample"):
        raise UsageError(f"--protocol kvpress runs suites of text prompts; suite {config.suite} drives its own "
                         "model loop; use --protocol paper")


def check_splittable(sample, suite_name: str, query_aware: bool) -> None:
    """:class:`UsageError` unless ``sample`` can be split into context and question (or the run is
    query-aware, which compresses the whole prompt)."""
    if query_aware:
        return
    if not sample.question or not sample.prompt.endswith(sample.question) or sample.question == sample.prompt:
        raise UsageError(f"--protocol kvpress needs each sample split into context and question; suite "
                         f"{suite_name} (task {sample.task}) does not split its samples (suites that do: "
                         f"{SPLITTING_SUITES}); use --protocol paper, or --query-aware to compress the whole prompt")


def context_and_question(tokenizer, sample, chat_template: str, query_aware: bool, max_length: int
                         ) -> tuple[list[int], list[int]]:
    """``(context ids, question ids)`` of ``sample`` as kvpress's pipeline builds them (module docstring)."""
    from harness.evaluate import uses_chat

    if query_aware:
        context, question = sample.prompt, ""
    else:
        context, question = sample.prompt[: len(sample.prompt) - len(sample.question)], sample.question
    if uses_chat(tokenizer, sample, chat_template):
        separator = "#" * (len(context) + 10)
        text = tokenizer.apply_chat_template([{"role": "user", "content": context + separator}],
                                             add_generation_prompt=True, tokenize=False)
        context, suffix = text.split(separator)
    else:
        context, suffix = (tokenizer.bos_token or "") + context, "\n"
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    question_ids = tokenizer.encode(question + suffix + sample.answer_prefix, add_special_tokens=False)
    room = max_length - len(question_ids) - sample.max_new_tokens
    if room < 1:
        raise UsageError(f"--max-length {max_length} leaves no room for the context of {sample.task}/{sample.id} "
                         f"({len(question_ids)} question tokens + {sample.max_new_tokens} new tokens)")
    return context_ids[:room], question_ids


def kept_tokens(n_context: int, compression_ratio: float) -> int:
    """Tokens per KV head kept of an ``n_context``-token context, kvpress's rounding."""
    return int(n_context * (1 - compression_ratio))


def with_budget(policy, keep: int):
    """``policy`` with its budget (if it has one) set to ``keep`` tokens, so that its recent window
    and its own arithmetic follow the protocol's count; others (NAMMs) only rank by their scores."""
    if not hasattr(policy, "budget") or keep < 1:
        return policy
    try:
        return dataclasses.replace(policy, budget=keep)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from err
