"""Training-curve figures for a NAMM fit, drawn from its ``fit.jsonl`` log.

The fit appends one JSON object per CMA-ES generation::

    {"stage": 1, "generation": 3, "global_generation": 3, "tasks": ["passkey"],
     "fitness": {"mean": .., "std": .., "min": .., "max": ..},   # population's normalised fitness
     "task_fitness": {"passkey": ..},                            # population mean per task
     "cache": {"logical_mean": .., "physical_mean": ..},         # population mean KV cache size
     "validation": null | {"tasks": {..}, "mean": .., "cache_logical_mean": .., "best": bool},
     "wall_s": ..}

Figures (paper: Fig. 4 / 9 / 11 training curves, Fig. 10 memory size):

* ``training_curves``: left, the population's normalised fitness (mean, +-std band,
  min/max) per generation; right, the validation score of the CMA-ES mean per task
  (and their average) at the generations where it was evaluated.
* ``memory_curve``: the population's mean logical KV-cache size per generation, and
  the CMA-ES mean's validation cache size at evaluated generations.

Figures are drawn with ``matplotlib.figure.Figure`` + the Agg canvas: no pyplot, no
global backend switch, safe to call from any thread or a headless process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["read_log", "training_curves", "memory_curve", "write_figures", "TRAINING_FIGURE", "MEMORY_FIGURE"]

DPI = 120
TRAINING_FIGSIZE = (10.0, 4.0)
MEMORY_FIGSIZE = (6.0, 4.0)
TRAINING_FIGURE = "training_curves.png"
MEMORY_FIGURE = "memory_size.png"
_MARKER_MAX_POINTS = 40  # draw point markers on population curves up to this many generations


# --------------------------------------------------------------------------- reading


def read_log(path: str | Path) -> list[dict]:
    """Read a ``fit.jsonl`` log: one dict per complete line, in file order.

    Blank lines are ignored. A torn last line (a fit interrupted mid-write, or a log
    read while the fit is appending) is skipped; a malformed line anywhere else is an
    error. Raises ``ValueError`` if the log holds no complete record.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records: list[dict] = []
    for k, (lineno, line) in enumerate(numbered):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if k == len(numbered) - 1:
                break  # torn last line
            raise ValueError(f"{path}:{lineno}: malformed JSON line in fit log: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        records.append(obj)
    if not records:
        raise ValueError(f"fit log {path} holds no complete records (empty, or only a torn line)")
    return records


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float:
    """A finite float, or NaN for missing / non-numeric / non-finite values."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _gen(rec: dict, fallback: int) -> int:
    g = rec.get("global_generation", rec.get("generation"))
    try:
        return int(g)
    except (TypeError, ValueError):
        return fallback


def _prepare(records: Iterable[dict]) -> list[dict]:
    """Records ordered by global generation; for a repeated generation (a resumed fit
    that re-ran it) the last one written wins. Raises ValueError if there are none."""
    by_gen: dict[int, dict] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"fit record {i} is not a dict: {type(rec).__name__}")
        by_gen[_gen(rec, i + 1)] = rec
    if not by_gen:
        raise ValueError("no fit records to plot (the fit log is empty)")
    return [by_gen[g] | {"_x": g} for g in sorted(by_gen)]


def _stage_starts(recs: Sequence[dict]) -> list[tuple[int, Any]]:
    """(first global generation, stage) for each run of equal ``stage`` values."""
    starts: list[tuple[int, Any]] = []
    prev = object()
    for rec in recs:
        stage = rec.get("stage", 1)
        if stage != prev:
            starts.append((rec["_x"], stage))
            prev = stage
    return starts


def _draw_stages(ax, starts: Sequence[tuple[int, Any]]) -> None:
    """Dashed vertical line at each stage boundary; a "stage k" label at each stage start."""
    if len(starts) > 1:  # headroom above the data for the labels
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0, y1 + 0.09 * (y1 - y0))
    trans = ax.get_xaxis_transform()  # x in data units, y in axes fraction
    for i, (x, stage) in enumerate(starts):
        if i > 0:
            ax.axvline(x - 0.5, color="0.35", linestyle="--", linewidth=1.0, zorder=1)
        if len(starts) > 1:
            ax.text(x - 0.5, 0.985, f" stage {stage}", transform=trans, ha="left", va="top",
                    fontsize=8, color="0.25", clip_on=True, zorder=5)


def _task_order(recs: Sequence[dict]) -> list[str]:
    """Task names in order of first appearance (stage task lists, then validation)."""
    order: list[str] = []
    for rec in recs:
        names = list(rec.get("tasks") or [])
        names += list((rec.get("task_fitness") or {}).keys())
        val = rec.get("validation") or {}
        names += list((val.get("tasks") or {}).keys())
        for name in names:
            if name not in order:
                order.append(name)
    return order


def _task_colors(tasks: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(tasks) <= 10 else "tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(tasks)}


def _new_figure(figsize: tuple[float, float], ncols: int = 1):
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _finish_axis(ax, xs: Sequence[int], ylabel: str, title: str) -> None:
    ax.set_xlabel("CMA-ES generation (global)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = min(xs), max(xs)
    pad = max(0.5, 0.02 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ax.grid(True, alpha=0.3)


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9}, zorder=6)


def _legend(ax, n_entries: int) -> None:
    if n_entries:
        ax.legend(loc="best", fontsize=7, ncol=2 if n_entries > 5 else 1, framealpha=0.85)


def _save(fig: Figure, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, format="png")
    return out_path


# --------------------------------------------------------------------------- figures


def training_curves(records: Iterable[dict], out_path: str | Path, title: str | None = None) -> Path:
    """Fig. 4-style training curves (PNG, 10x4 in at 120 dpi); returns ``out_path``.

    Left: the population's normalised fitness per generation, mean with a +-std band
    and min/max as thin lines. Right: the normalised validation score of the CMA-ES
    mean per task (markers at evaluated generations) and their average; the best
    validation so far (``best: true``) is starred. Stage boundaries are dashed lines.
    """
    recs = _prepare(records)
    xs = [r["_x"] for r in recs]
    starts = _stage_starts(recs)
    fig, (ax_pop, ax_val) = _new_figure(TRAINING_FIGSIZE, ncols=2)
    marker = "o" if len(recs) <= _MARKER_MAX_POINTS else None

    # ---- left: population fitness
    fit = [r.get("fitness") or {} for r in recs]
    mean = [_num(f.get("mean")) for f in fit]
    std = [_num(f.get("std")) for f in fit]
    fmin = [_num(f.get("min")) for f in fit]
    fmax = [_num(f.get("max")) for f in fit]
    n_left = 0
    if any(not math.isnan(v) for v in mean):
        std0 = [0.0 if math.isnan(s) else s for s in std]
        lo = [m - s for m, s in zip(mean, std0)]
        hi = [m + s for m, s in zip(mean, std0)]
        if any(not math.isnan(s) for s in std):
            if len(xs) > 1:
                ax_pop.fill_between(xs, lo, hi, color="tab:blue", alpha=0.22, linewidth=0, label="mean ± std")
            else:  # a band needs two points: show the single std as an error bar
                ax_pop.errorbar(xs, mean, yerr=std0, color="tab:blue", capsize=4, linewidth=1.2, label="± std")
            n_left += 1
        ax_pop.plot(xs, mean, color="tab:blue", linewidth=1.8, marker=marker, markersize=3, label="population mean")
        n_left += 1
    for vals, name, style in ((fmax, "max", "-"), (fmin, "min", ":")):
        if any(not math.isnan(v) for v in vals):
            ax_pop.plot(xs, vals, color="0.3", linewidth=0.8, linestyle=style,
                        marker="." if marker else None, markersize=3, label=f"population {name}")
            n_left += 1
    if n_left == 0:
        _no_data(ax_pop, "no population fitness logged")
    _finish_axis(ax_pop, xs, "normalised fitness", "CMA-ES population fitness")
    _draw_stages(ax_pop, starts)
    _legend(ax_pop, n_left)

    # ---- right: validation of the CMA-ES mean, per task
    tasks = _task_order(recs)
    colors = _task_colors(tasks)
    evals = [(r["_x"], r["validation"]) for r in recs if isinstance(r.get("validation"), dict)]
    n_right = 0
    for task in tasks:
        pts = [(x, _num((v.get("tasks") or {}).get(task))) for x, v in evals]
        pts = [(x, y) for x, y in pts if not math.isnan(y)]
        if pts:
            ax_val.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[task], marker="o",
                        markersize=4, linewidth=1.4, label=task)
            n_right += 1
    avg = [(x, _num(v.get("mean"))) for x, v in evals]
    avg = [(x, y) for x, y in avg if not math.isnan(y)]
    if avg:
        ax_val.plot([p[0] for p in avg], [p[1] for p in avg], color="black", linestyle="--", marker="s",
                    markersize=3.5, linewidth=1.3, label="task mean")
        n_right += 1
        best = [(x, _num(v.get("mean"))) for x, v in evals if v.get("best") and not math.isnan(_num(v.get("mean")))]
        if best:
            bx, by = best[-1]
            ax_val.plot([bx], [by], linestyle="none", marker="*", markersize=12, color="gold",
                        markeredgecolor="black", markeredgewidth=0.7, zorder=6, label="best (checkpoint)")
            n_right += 1
    if n_right == 0:
        _no_data(ax_val, "no validation evaluations logged")
    _finish_axis(ax_val, xs, "normalised score", "CMA-ES mean: validation per task")
    _draw_stages(ax_val, starts)
    _legend(ax_val, n_right)

    fig.suptitle(title or _default_title(recs), fontsize=11)
    return _save(fig, out_path)


def memory_curve(records: Iterable[dict], out_path: str | Path, title: str | None = None) -> Path:
    """Fig. 10-style memory size curve (PNG, 6x4 in at 120 dpi); returns ``out_path``.

    The population's mean logical KV-cache size (tokens, mean over layers) per
    generation (physical size, if logged, as a thin dotted line), plus the CMA-ES
    mean's validation cache size at evaluated generations. Stage boundaries dashed.
    """
    recs = _prepare(records)
    xs = [r["_x"] for r in recs]
    fig, (ax,) = _new_figure(MEMORY_FIGSIZE)
    marker = "o" if len(recs) <= _MARKER_MAX_POINTS else None

    cache = [r.get("cache") or {} for r in recs]
    logical = [_num(c.get("logical_mean")) for c in cache]
    physical = [_num(c.get("physical_mean")) for c in cache]
    n = 0
    if any(not math.isnan(v) for v in logical):
        ax.plot(xs, logical, color="tab:blue", linewidth=1.8, marker=marker, markersize=3,
                label="population mean (logical)")
        n += 1
    if any(not math.isnan(v) for v in physical):
        ax.plot(xs, physical, color="tab:blue", linewidth=0.9, linestyle=":", alpha=0.8,
                marker="." if marker else None, markersize=3, label="population mean (physical)")
        n += 1
    val = [(r["_x"], _num(r["validation"].get("cache_logical_mean")))
           for r in recs if isinstance(r.get("validation"), dict)]
    val = [(x, y) for x, y in val if not math.isnan(y)]
    if val:
        ax.plot([p[0] for p in val], [p[1] for p in val], color="tab:orange", linestyle="--", marker="s",
                markersize=4, linewidth=1.3, label="CMA-ES mean (validation)")
        n += 1
    if n == 0:
        _no_data(ax, "no cache sizes logged")
    _finish_axis(ax, xs, "KV cache size (tokens, mean over layers)", title or "Memory size during training")
    _draw_stages(ax, _stage_starts(recs))
    _legend(ax, n)
    return _save(fig, out_path)


def _default_title(recs: Sequence[dict]) -> str:
    stages = {r.get("stage", 1) for r in recs}
    n = len(recs)
    return f"NAMM CMA-ES training: {n} generation{'s' if n != 1 else ''}, {len(stages)} stage{'s' if len(stages) != 1 else ''}"


def write_figures(log_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Read ``log_path`` (a ``fit.jsonl``) and write ``training_curves.png`` and
    ``memory_size.png`` into ``out_dir`` (created if needed). Returns both paths.
    Raises ``ValueError`` if the log holds no complete record."""
    records = read_log(log_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        training_curves(records, out_dir / TRAINING_FIGURE),
        memory_curve(records, out_dir / MEMORY_FIGURE),
    ]
