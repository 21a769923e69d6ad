"""Metrics for user data (the ``jsonl`` suite): ``exact``, ``contains``, ``first_int``, ``f1``, ``rouge_l``.

Each takes ``(prediction, answer)`` and returns a score in [0, 1]; :func:`score_user` takes the max
over a record's answers. Definitions:

* ``exact``: the SQuAD-normalised prediction (lower case, no punctuation, no articles, single
  spaces) equals the normalised answer.
* ``contains``: the answer, lower-cased with whitespace collapsed, is a substring of the
  prediction treated the same way (RULER's ``string_match`` style).
* ``first_int``: the first integer in the prediction equals the first integer in the answer
  (passkey style; 0 when either has none).
* ``f1``: SQuAD-normalised token F1 (LongBench's ``qa_f1_score``).
* ``rouge_l``: ROUGE-L F of the ``rouge`` package (LongBench's ``rouge_score``).
"""

from __future__ import annotations

import re

from tasks.scoring.longbench import normalize_answer, qa_f1_score, rouge_score

_INT = re.compile(r"-?\d+")


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def exact(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def contains(prediction: str, answer: str) -> float:
    return float(_squash(answer) in _squash(prediction))


def first_int(prediction: str, answer: str) -> float:
    got, want = _INT.search(prediction), _INT.search(answer)
    return float(got is not None and want is not None and int(got.group()) == int(want.group()))


def f1(prediction: str, answer: str) -> float:
    return qa_f1_score(prediction, answer)


def rouge_l(prediction: str, answer: str) -> float:
    return rouge_score(prediction, answer)


METRICS = {"exact": exact, "contains": contains, "first_int": first_int, "f1": f1, "rouge_l": rouge_l}


def score_user(metric: str, prediction: str, answers: list[str]) -> float:
    """Max over ``answers`` of ``metric`` (a name in :data:`METRICS`)."""
    fn = METRICS[metric]
    return max(fn(prediction, a) for a in answers)
