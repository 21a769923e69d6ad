"""The interface every RULER task generator implements, and the per-sample random streams.

A generator is built once per (task, target length) and makes RULER's full text (``template +
answer_prefix``, formatted) for a haystack size ``n`` (sentences, words, documents: its ``unit``).
The suite sizes ``n`` with :func:`tasks.ruler.haystack.fit_size` and splits the text with
:mod:`tasks.ruler.templates`.

Randomness: RULER seeds Python's and numpy's global generators once per run. Here every draw of a
sample comes from ``random.Random(key)`` with ``key = f"{seed}:{task}:{length}:{index}"`` (see
:func:`sample_key`), re-created for each haystack size tried, so a sample's needles, keys and answers
do not depend on the size search and the same seed gives the same samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Draft:
    """One formatted RULER text: ``text`` (template + answer prefix, as RULER's generators make it),
    ``answers`` (RULER's ``outputs``) and ``info`` (extra metadata: needle depths, the question's id...)."""

    text: str
    answers: list[str]
    info: dict = field(default_factory=dict)


class Generator:
    """Base class of the RULER generators.

    ``unit``: what the haystack size counts; ``n_min``: the smallest size that makes a valid sample;
    ``incremental``: RULER's step for the size search and for shrinking a sample that does not fit;
    ``labels``: metadata every sample carries (e.g. ``haystack``).
    """

    unit: str = "sentences"
    n_min: int = 1
    incremental: int = 25
    labels: dict = {}

    def min_size(self, index: int) -> int:
        """The smallest haystack size sample ``index`` can have (default ``n_min``)."""
        return self.n_min

    def draft(self, n: int, key: str, index: int) -> Draft:
        """Sample ``index``'s text with a haystack of size ``n``, drawn from ``random.Random(key)``."""
        raise NotImplementedError


def sample_key(seed: int, task: str, length: int, index: int) -> str:
    """The random-stream key of one sample (stable across runs: resume relies on it)."""
    return f"{seed}:{task}:{length}:{index}"


def rng_for(key: str, stream: str = "") -> random.Random:
    """A ``random.Random`` seeded by ``key`` (and an optional sub-stream name)."""
    return random.Random(f"{key}:{stream}" if stream else key)
