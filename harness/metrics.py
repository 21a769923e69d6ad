"""Aggregate records into ``metrics.json``: per-task score (100 x mean, as LongBench reports),
sample count, mean cache sizes, and the average over tasks."""

from __future__ import annotations

from collections import defaultdict


def summarise(records: list[dict], expected: int | None = None) -> dict:
    """Per-task and overall aggregates of ``records`` (scores in [0, 1] → reported x 100).

    ``cache_physical``/``cache_logical``: mean over samples of the final per-layer KV length
    averaged over evicting layers (physical slots, or per-head kept tokens).
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    tasks = {}
    for task, rs in by_task.items():
        n = len(rs)
        tasks[task] = {
            "task_id": rs[0].get("task_id", task),
            "n": n,
            "score": round(100 * sum(r["score"] for r in rs) / n, 4),
            "cache_physical": round(sum(r["cache"]["physical_mean"] for r in rs) / n, 3),
            "cache_logical": round(sum(r["cache"]["logical_mean"] for r in rs) / n, 3),
            "prompt_tokens": round(sum(r["input_tokens"] for r in rs) / n, 1),
            "generated_data": any(r.get("generated_data", False) for r in rs),
        }
    scores = [t["score"] for t in tasks.values()]
    return {
        "tasks": tasks,
        "average": round(sum(scores) / len(scores), 4) if scores else None,
        "n_samples": len(records),
        "complete": expected is None or len(records) == expected,
    }
