"""A kvpress-style leaderboard: score against compression ratio, per policy, per context length.

NVIDIA kvpress's public leaderboard reports, per press, RULER's average score at compression ratios
such as 0.25, 0.5, 0.75 and 0.875. Here, per suite and context length (``metadata.length``):

- one row per policy run under ``--protocol kvpress`` (the policy's name, with its recent window
  when one was given), one column per ``--compression-ratio``; a cell is the mean over the suite's
  tasks of each task's mean score (x 100) — RULER's average over its tasks at that length;
- the full cache (``full``, any protocol) as the reference row;
- the paper's periodic schedule (``--protocol paper``) in rows of their own, with the mean cache
  they kept (logical tokens per head over tokens seen), to set beside the ratio columns.

Runs whose records lack a length are grouped under "all lengths".
"""

from __future__ import annotations

from collections import defaultdict

from harness.report.runs import Run

ALL = "all lengths"


def _protocol(run: Run) -> str:
    return str(run.run.get("protocol") or "paper")


def _name(run: Run) -> str:
    """The policy, with the settings that tell its rows apart (recent window, paper-schedule budget)."""
    parts = [f"recent window {run.run['recent_window']}"] if run.run.get("recent_window") is not None else []
    if _protocol(run) == "paper" and run.run.get("cache_size") is not None:
        parts.append(f"cache-size {run.run['cache_size']:g}")
    return run.policy + (f" ({', '.join(parts)})" if parts else "")


def _by_length(run: Run) -> dict:
    """``{length: {task: [scores]}}`` of a run's records."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for rec in run.records:
        length = (rec.get("metadata") or {}).get("length")
        out[length if length is not None else ALL][rec["task"]].append(float(rec["score"]))
    return out


def task_average(tasks: dict[str, list[float]]) -> float:
    """Mean over tasks of each task's mean score, x 100 (every task weighs the same)."""
    return 100 * sum(sum(v) / len(v) for v in tasks.values()) / len(tasks)


def _kept_fraction(run: Run) -> float | None:
    fractions = [r["cache"]["logical_mean"] / (r["input_tokens"] + r["new_tokens"])
                 for r in run.records if r.get("cache") and r.get("input_tokens")]
    return sum(fractions) / len(fractions) if fractions else None


def leaderboard_markdown(runs: list[Run]) -> str | None:
    """The leaderboard section (markdown), or None when no run used ``--protocol kvpress``."""
    if not any(_protocol(r) == "kvpress" for r in runs):
        return None
    lines = ["### Leaderboard: score against compression ratio (kvpress protocol)", "",
             "Mean over each suite's tasks of the task's mean score (x 100) at each context length: the "
             "context compressed once to int(n_context x (1 - R)) tokens per KV head, the question never. "
             "Paper-schedule rows give the mean cache they kept instead of a ratio.", ""]
    suites = sorted({r.suite for r in runs})
    for suite in suites:
        mine = [r for r in runs if r.suite == suite]
        kv = [r for r in mine if _protocol(r) == "kvpress" and r.policy != "full"]
        if not kv:
            continue
        ratios = sorted({float(r.run["compression_ratio"]) for r in kv})
        grouped = {id(r): _by_length(r) for r in mine}  # each run's records grouped once
        lengths = sorted({k for g in grouped.values() for k in g}, key=lambda x: (x == ALL, x if x != ALL else 0))
        for length in lengths:
            head = [f"#### {suite}, {length if length == ALL else f'{length:,} tokens'}", "",
                    "| Policy | " + " | ".join(f"R = {r:g}" for r in ratios) + " | paper schedule (mean cache) | samples |",
                    "|:---|" + "---:|" * (len(ratios) + 2)]
            body = []
            for run in [r for r in mine if r.policy == "full"]:
                tasks = grouped[id(run)].get(length)
                if tasks:
                    cell = f"{task_average(tasks):.1f}"
                    body.append(f"| full cache ({_protocol(run)}) | " + " | ".join(cell for _ in ratios)
                                + f" | {cell} | {sum(map(len, tasks.values()))} |")
            cells: dict[str, dict[float, tuple[float, int]]] = defaultdict(dict)
            for run in kv:
                tasks = grouped[id(run)].get(length)
                if tasks:
                    cells[_name(run)][float(run.run["compression_ratio"])] = (
                        task_average(tasks), sum(map(len, tasks.values())))
            for name, row in cells.items():
                counts = sorted({n for _, n in row.values()})
                body.append(f"| {name} | " + " | ".join(f"{row[r][0]:.1f}" if r in row else "—" for r in ratios)
                            + f" | — | {'/'.join(map(str, counts))} |")
            for run in [r for r in mine if _protocol(r) == "paper" and r.policy != "full"]:
                tasks = grouped[id(run)].get(length)
                kept = _kept_fraction(run)
                if tasks:
                    where = f"{kept:.2f}" if kept is not None else "?"
                    body.append(f"| {_name(run)} | " + " | ".join("—" for _ in ratios)
                                + f" | {task_average(tasks):.1f} ({where}) | {sum(map(len, tasks.values()))} |")
            if body:
                lines += head + body + [""]
    return "\n".join(lines)
