"""The task API: a suite yields samples (prompt, answers, metadata) and scores predictions.

The runner knows nothing about prompts, data formats or metrics; a suite knows nothing about
policies. A suite module registers itself with ``@register_suite("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterator


@dataclass
class Sample:
    """One prompt to answer.

    ``id`` is unique within its task and stable across runs (resume relies on it).
    ``prompt`` is the user text; the runner applies the model's chat template when ``chat`` is
    True and the model has one. ``metadata`` is copied into the record (context length, depth,
    ``generated: True`` for data made locally, the data source).
    """

    id: str
    task: str
    prompt: str
    answers: list[str]
    max_new_tokens: int
    metadata: dict = field(default_factory=dict)
    all_classes: list[str] | None = None
    chat: bool = True


class Suite:
    """Base class for a benchmark suite.

    ``tasks`` lists task names (``--tasks`` selects a subset); ``task_ids`` maps a task name to the
    paper's id when it has one; ``generated`` is True when samples are made locally (every record
    and table then says so).
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
