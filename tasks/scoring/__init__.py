"""The one scoring entry point for the language benchmarks' official metrics.

``score("longbench/<name>" | "infinitebench/<name>" | "choubun/<name>" | "ruler/<name>", prediction,
answers, all_classes=None) -> float`` in [0, 1], reproducing the official scorers' per-example values
(LongBench ``metrics.py`` + ``eval.py``, InfiniteBench ``compute_scores.py``, ChouBun's metrics,
RULER ``evaluate.py``'s ``postprocess_pred`` + ``string_match_all`` / ``string_match_part``).
``answers`` is the record's answers / ground_truth exactly as the official data stores them.

Each benchmark module registers ``{name: fn(prediction, answers, all_classes) -> float}`` in
:data:`SCORERS` under its benchmark prefix.
"""

from __future__ import annotations

import importlib

BENCHMARKS = ("longbench", "infinitebench", "choubun", "ruler")


def _scorers(benchmark: str) -> dict:
    return importlib.import_module(f"tasks.scoring.{benchmark}").SCORERS


def score(task_id: str, prediction: str, answers, all_classes=None) -> float:
    """Official per-example score of ``prediction`` for ``task_id`` (``"<benchmark>/<task>"``)."""
    benchmark, sep, name = task_id.partition("/")
    if not sep or benchmark not in BENCHMARKS:
        raise KeyError(f"task id {task_id!r} must look like <benchmark>/<task> with benchmark one of "
                       f"{', '.join(BENCHMARKS)}")
    scorers = _scorers(benchmark)
    if name not in scorers:
        raise KeyError(f"no {benchmark} task {name!r}; tasks: {', '.join(sorted(scorers))}")
    return float(scorers[name](prediction, answers, all_classes))


def task_names(benchmark: str) -> list[str]:
    """Task names with an official scorer in ``benchmark``."""
    return sorted(_scorers(benchmark))
