"""RULER's metrics (NVIDIA/RULER ``scripts/eval/evaluate.py`` and ``scripts/eval/synthetic/constants.py``).

The prediction is first cleaned by ``postprocess_pred`` (strip, every character in ``\\x00``-``\\x1f``
replaced by a newline, strip again). Then, per example:

* ``string_match_all`` (niah_*, vt, cwe, fwe): the fraction of the references that occur in the
  prediction, case-insensitively (``sum(r.lower() in pred.lower()) / len(refs)``);
* ``string_match_part`` (qa_1, qa_2): 1.0 when any reference occurs in it, else 0.0.

RULER reports ``round(100 * mean, 2)`` over a task's examples; the per-example values here are not
rounded (:func:`summary` rounds the means as RULER does). kvpress's copy of these metrics deletes the
control characters instead of turning them into newlines; RULER's rule is kept.
"""

from __future__ import annotations

import re
from collections import defaultdict

_NON_PRINTABLE = re.compile(r"[\x00-\x1f]")

TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
         "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
PART_TASKS = frozenset({"qa_1", "qa_2"})


def postprocess_pred(prediction: str) -> str:
    """RULER ``postprocess_pred``: the prediction stripped, control characters made newlines, stripped."""
    return _NON_PRINTABLE.sub("\n", prediction.strip()).strip()


def _refs(answers) -> list[str]:
    return [answers] if isinstance(answers, str) else list(answers)


def string_match_all(prediction: str, answers) -> float:
    """Share of ``answers`` found in ``prediction`` (case-insensitive substring), in [0, 1]."""
    refs, pred = _refs(answers), prediction.lower()
    return sum(1.0 if r.lower() in pred else 0.0 for r in refs) / len(refs)


def string_match_part(prediction: str, answers) -> float:
    """1.0 when any of ``answers`` is in ``prediction`` (case-insensitive substring), else 0.0."""
    pred = prediction.lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in _refs(answers))


def ruler_score(task: str, prediction: str, answers) -> float:
    """RULER's per-example score of ``prediction`` for ``task`` after ``postprocess_pred``."""
    metric = string_match_part if task in PART_TASKS else string_match_all
    return metric(postprocess_pred(prediction), answers)


def _scorer(task: str):
    return lambda prediction, answers, all_classes=None: ruler_score(task, prediction, answers)


SCORERS = {task: _scorer(task) for task in TASKS}


def _by_length(item) -> tuple:
    key = item[0]
    return (0, int(key), key) if key.isdigit() else (1, 0, key)


def summary(records: list[dict]) -> dict:
    """``{"tasks": {task: {length: score}}, "average": {length: score}}`` of run records (``task``,
    ``score``, ``metadata.length``); scores are ``round(100 * mean, 2)`` as RULER reports them."""
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        length = (r.get("metadata") or {}).get("length")
        cells[r["task"]][str(length)].append(float(r["score"]))
    tasks = {t: {n: round(100 * sum(v) / len(v), 2) for n, v in sorted(by.items(), key=_by_length)}
             for t, by in cells.items()}
    per_length: dict[str, list[float]] = defaultdict(list)
    for t, by in cells.items():
        for n, v in by.items():
            per_length[n].append(sum(v) / len(v))
    average = {n: round(100 * sum(v) / len(v), 2) for n, v in sorted(per_length.items(), key=_by_length)}
    return {"tasks": tasks, "average": average}
