"""Aggregate records into ``metrics.json``: per-task score (100 x mean, as LongBench reports),
sample count, mean cache sizes, data provenance, the average over tasks, and for samples with a
context length and needle depth (NIAH-style) a length x depth grid ready for a heat-map."""

from __future__ import annotations

from collections import defaultdict


def summarise(records: list[dict], expected: int | None = None, skipped: dict | None = None) -> dict:
    """Per-task and overall aggregates of ``records`` (scores in [0, 1] → reported x 100).

    ``cache_physical``/``cache_logical``: mean over samples of the final per-layer KV length
    averaged over evicting layers (physical slots, or per-head kept tokens). ``sources``: where the
    task's samples came from (``hub``, ``data-dir``, ``generated``). ``skipped``: tasks that could
    not run, with the reason.
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
            "sources": sorted({r.get("source") or ("generated" if r.get("generated_data") else "unknown") for r in rs}),
        }
        grid = length_depth_grid(rs)
        if grid:
            tasks[task]["grid"] = grid
    scores = [t["score"] for t in tasks.values()]
    return {
        "tasks": tasks,
        "average": round(sum(scores) / len(scores), 4) if scores else None,
        "n_samples": len(records),
        "complete": expected is None or len(records) == expected,
        "skipped": dict(skipped or {}),
    }


def length_depth_grid(records: list[dict]) -> dict:
    """``{length: {depth: 100 x mean score}}`` over records whose metadata has ``length`` and
    ``depth`` (keys as strings, sorted numerically); empty when none has both."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        meta = r.get("metadata") or {}
        if "length" in meta and "depth" in meta:
            cells[(meta["length"], meta["depth"])].append(r["score"])
    grid: dict[str, dict[str, float]] = {}
    for (length, depth) in sorted(cells):
        scores = cells[(length, depth)]
        grid.setdefault(str(length), {})[str(depth)] = round(100 * sum(scores) / len(scores), 4)
    return grid
