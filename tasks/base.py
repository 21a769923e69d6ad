"""The task API: a suite yields samples (prompt, answers, metadata) and scores predictions.

The runner knows nothing about prompts, data formats or metrics; a suite knows nothing about
policies. A suite module registers itself with ``@register_suite("name")``.

Data sources: a sample's ``metadata["source"]`` says where its data came from — ``"hub"``
(official data through ``datasets``), ``"data-dir"`` (a local copy in the official format) or
``"generated"`` (made locally by the benchmark's public construction recipe; NOT the official
data, and every record and table says so). ``metadata["generated"]`` is True exactly for the last.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Protocol


class UsageError(Exception):
    """Bad input from the user (unknown name, missing path, invalid number, a missing optional extra).

    The CLI prints ``error: <message>`` on one line and exits with status 2. The message must say
    what to do (e.g. list the valid choices). Defined here, at the bottom of the house, so that suites
    can raise it without importing ``harness``; :mod:`harness.errors` re-exports it.
    """

    exit_code = 2


class CacheFactory(Protocol):
    """What the runner hands :meth:`Suite.evaluate_sample` of a suite that drives its own model loop
    (video, D4RL); implemented by :class:`harness.cache_factory.CacheFactory`. ``tasks/`` never
    imports ``harness/``: the policy, ``n_up`` and the cache mode travel inside the factory."""

    policy: object
    n_up: int

    def attach(self, model) -> None:
        """Route ``model``'s attention through the eviction kernel (idempotent)."""

    def new(self, config):
        """A fresh eviction cache (a transformers ``Cache``) for a model with this config."""

    def summarise(self, layer_stats: list[dict]) -> dict:
        """A record's ``cache`` entry (``physical_mean``, ``logical_mean``, ``layers``) from ``cache.stats()``."""


def question_after(prompt: str, context: str | None) -> str:
    """The part of ``prompt`` after its (last) occurrence of ``context``: :attr:`Sample.question` of
    a prompt made by formatting a template with the context verbatim; "" when it is not there."""
    if not context:
        return ""
    at = prompt.rfind(context)
    return prompt[at + len(context):] if at >= 0 else ""


def cache_kwargs(module, cache) -> dict:
    """The keyword that hands ``cache`` to ``module.forward``: ``cache`` where transformers' forward
    takes it (5.24 and later, where ``past_key_values`` is deprecated), else ``past_key_values``."""
    return {"cache": cache} if _takes_cache(type(module)) else {"past_key_values": cache}


@functools.cache
def _takes_cache(cls) -> bool:
    return "cache" in inspect.signature(cls.forward).parameters


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config (shared by the
    runner's generation and the suites that generate in their own loop)."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(source)
    return ids


class TaskUnavailable(Exception):
    """A task cannot run here (no data and no public recipe). The message is one line that says how
    to provide the data; the runner prints it as a warning and goes on with the other tasks."""


class ContextTooSmall(TaskUnavailable):
    """A task that could run here, but not in this ``max_length`` (e.g. its generated prompts need a
    longer context). Skipped like :class:`TaskUnavailable`; when nothing else runs, the runner's
    error says so instead of "no data"."""


class DataError(ValueError):
    """Malformed benchmark data (the message names the file and line), or data that failed to load
    for a reason other than "offline / not cached" (the message names the source and the cause, see
    :func:`tasks.data.hub_failure`); the CLI turns it into a one-line error with exit code 2."""


@dataclass
class Sample:
    """One prompt to answer.

    ``id`` is unique within its task and stable across runs (resume relies on it).
    ``prompt`` is the user text; the runner applies the model's chat template when ``chat`` is
    True and the model has one; ``answer_prefix`` follows the templated prompt (or the plain
    prompt). ``metadata`` is copied into the record (context length, depth,
    ``source`` and ``generated`` — see the module docstring).

    ``question`` is the final part of ``prompt`` that follows the context (the question and its
    instructions; ``prompt.endswith(question)``), for the kvpress protocol (``--protocol kvpress``):
    the context is prefilled and compressed once, the question is never compressed. Empty when a
    suite cannot split its samples.
    """

    id: str
    task: str
    prompt: str
    answers: list[str]
    max_new_tokens: int
    metadata: dict = field(default_factory=dict)
    all_classes: list[str] | None = None
    chat: bool = True
    answer_prefix: str = ""  # text the answer starts with (after the chat template's assistant opening)
    question: str = ""  # suffix of prompt after the context (kvpress protocol); "" = not splittable

    @property
    def generated(self) -> bool:
        return bool(self.metadata.get("generated", False))


class Suite:
    """Base class for a benchmark suite.

    ``tasks`` lists task names (``--tasks`` selects a subset); ``task_ids`` maps a task name to the
    paper's id when it has one; ``generated`` is True when ALL samples are made locally (per-sample
    provenance is ``Sample.metadata["source"]``).

    ``samples`` raises :class:`TaskUnavailable` (when called, not at the first ``next()``) for a
    task that cannot run here, and :class:`DataError` for malformed data.

    A suite that drives its own model loop (video, D4RL) defines ``load_model(model, device, dtype)``
    → ``(model, name)`` and ``evaluate_sample(sample, model, caches, device)`` → a record dict, where
    ``caches`` is the runner's :class:`CacheFactory`; the runner then skips tokenisation and
    generation for it.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()
    task_ids: ClassVar[dict[str, str]] = {}
    generated: ClassVar[bool] = False

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        """Yield the task's samples in a fixed order. ``max_length`` is the model context in tokens."""
        raise NotImplementedError

    def score(self, sample: Sample, prediction: str) -> float:
        """Score one prediction in [0, 1]."""
        raise NotImplementedError
