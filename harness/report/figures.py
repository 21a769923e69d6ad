"""The report's figures (matplotlib ``Figure`` + Agg canvas: no pyplot, no display), PNG + PDF.

- ``tradeoff``: score versus mean KV-cache size, one point per row, one panel per suite, lines
  joining the budgets of one policy (not in the paper; the first plot of this field)
- ``layers_<suite>``: kept tokens and token oldness per layer (paper Fig. 5 top)
- ``tasks_<suite>``: kept tokens and token oldness per task (paper Fig. 5 bottom)
- ``length_<suite>``: kept tokens and token oldness versus prompt length, per sample
- ``heatmap_<suite>_<task>``: score per context length x needle depth, one panel per row
- ``fit_<name>_training`` / ``fit_<name>_memory``: training curves and memory size of a fit
  (paper Fig. 4/9/11 and 10, drawn by :mod:`harness.fit.plots`); ``fit_memory`` puts the memory
  curves of several fits side by side (Fig. 10)

Kept tokens are the logical size (tokens per KV head, the ``logical`` field of each layer's cache
statistics); oldness is the mean age of the kept tokens (``mean_age``: queries seen since a token
entered the cache, paper footnote 3), both at the end of a sample (prompt and answer) and divided
by the mean prompt length, so the full cache sits near 1 (size) and 0.5 (oldness).
"""

from __future__ import annotations

import math
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.report import paper
from harness.report.runs import FitDir, Run
from harness.report.tables import Table

DPI = 120
TRADEOFF_PANEL = (5.0, 4.2)  # inches per suite panel
PROFILE_SIZE = (11.0, 4.0)  # layers / tasks / length figures (two panels)
HEATMAP_PANEL = 3.0  # inches per row panel, plus HEATMAP_EXTRA for the colour bar
HEATMAP_EXTRA = 1.0
HEATMAP_HEIGHT = 3.4
FIT_MEMORY_PANEL = (5.0, 3.8)
PDF_METADATA = {"CreationDate": None}  # reproducible PDFs


def new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI, format="png")
    fig.savefig(pdf, dpi=DPI, format="pdf", metadata=PDF_METADATA)
    return [png, pdf]


def _colors(labels: list[str]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _family(run: Run) -> str:
    if run.is_namm:
        return f"{run.policy}:{(run.fit or {}).get('stage')}:{run.policy_info.get('checkpoint')}"
    return run.policy


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


# ---- trade-off -----------------------------------------------------------------------------------

def tradeoff(tables: list[Table], out_dir: Path) -> list[Path]:
    """Score against cache size per row; relative to the full cache when the table has one."""
    tables = [t for t in tables if any(r.all_score is not None and r.cache_logical is not None for r in t.rows)]
    if not tables:
        return []
    fig, axes = new_figure(TRADEOFF_PANEL[0] * len(tables), TRADEOFF_PANEL[1], ncols=len(tables))
    for ax, t in zip(axes, tables):
        relative = t.full_row is not None and t.full_row.cache_logical and t.full_row.all_score
        rows = [r for r in t.rows if r.all_score is not None and r.cache_logical is not None]
        colors = _colors([_family(r.run) for r in t.rows if not r.run.is_full] or ["-"])
        families: dict[str, list] = defaultdict(list)
        for r in rows:
            x = r.cache_logical_rel if relative else r.cache_logical
            y = (r.norm_all if r.norm_all is not None else r.norm_rom) if relative else r.all_score
            if x is None or y is None:
                continue
            families["full" if r.run.is_full else _family(r.run)].append((x, y, r))
        for fam, pts in families.items():
            pts.sort(key=lambda p: p[0])
            if fam == "full":
                for x, y, r in pts:
                    ax.plot([x], [y], marker="*", markersize=14, color="black", linestyle="none", label=r.label)
                continue
            name = paper.POLICY_NAMES.get(pts[0][2].run.policy, pts[0][2].label if len(pts) == 1 else fam)
            if pts[0][2].run.is_namm:
                name = pts[0][2].label
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=6, linewidth=1.4,
                    color=colors.get(fam), label=_short(name))
            for x, y, r in pts:
                if len(pts) > 1 and r.run.budget_text():
                    ax.annotate(r.run.budget_text(), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color="0.25")
        if relative:
            ax.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")
            ax.axvline(1.0, color="0.5", linewidth=0.8, linestyle=":")
            ax.set_xlabel("KV cache size relative to the full cache (logical)")
            ax.set_ylabel(f"normalised score ({t.convention})")
        else:
            ax.set_xlabel("KV cache size (tokens per head, logical)")
            ax.set_ylabel(f"{t.all_label} score (x100)")
        ax.set_title(f"{paper.layout(t.suite).title} ({t.rows[0].run.model_name})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.suptitle("Score versus KV-cache size", fontsize=11)
    return save(fig, out_dir / "tradeoff")


# ---- cache profiles (paper Fig. 5) ---------------------------------------------------------------

def _evicting(rec: dict) -> list[dict]:
    layers = ((rec.get("cache") or {}).get("layers")) or []
    return [lay for lay in layers if lay.get("evicts", True) and "logical" in lay]


def _has_profiles(run: Run) -> bool:
    return any(_evicting(rec) and rec.get("input_tokens") for rec in run.records)


def _per_layer(run: Run) -> tuple[list[int], list[float], list[float]]:
    size, age, count = defaultdict(float), defaultdict(float), defaultdict(int)
    tokens = []
    for rec in run.records:
        layers = _evicting(rec)
        if not layers or not rec.get("input_tokens"):
            continue
        tokens.append(rec["input_tokens"])
        for lay in layers:
            size[lay["layer"]] += float(lay["logical"])
            age[lay["layer"]] += float(lay.get("mean_age", math.nan))
            count[lay["layer"]] += 1
    mean_tokens = sum(tokens) / len(tokens)
    idx = sorted(size)
    return (idx, [size[i] / count[i] / mean_tokens for i in idx], [age[i] / count[i] / mean_tokens for i in idx])


def _sample_profile(rec: dict) -> tuple[float, float, float] | None:
    layers = _evicting(rec)
    if not layers or not rec.get("input_tokens"):
        return None
    size = sum(float(lay["logical"]) for lay in layers) / len(layers)
    age = sum(float(lay.get("mean_age", math.nan)) for lay in layers) / len(layers)
    return float(rec["input_tokens"]), size, age


def profiles(runs: list[Run], suite: str, out_dir: Path) -> list[Path]:
    """``layers_<suite>``, ``tasks_<suite>`` and ``length_<suite>`` (when the records hold per-layer
    cache statistics)."""
    runs = [r for r in runs if _has_profiles(r)]
    if not runs:
        return []
    title = paper.layout(suite).title
    colors = _colors([r.label for r in runs])
    written = []

    fig, (ax_size, ax_age) = new_figure(*PROFILE_SIZE, ncols=2)
    for run in runs:
        idx, size, age = _per_layer(run)
        for ax, ys in ((ax_size, size), (ax_age, age)):
            ax.plot(idx, ys, marker="o", markersize=3, linewidth=1.4, color=colors[run.label], label=_short(run.label))
    for ax, what in ((ax_size, "kept tokens per head"), (ax_age, "mean oldness of kept tokens")):
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{what} / mean prompt length", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    ax_size.set_title("Memory size per layer", fontsize=10)
    ax_age.set_title("Token oldness per layer", fontsize=10)
    fig.suptitle(f"{title}: cache per layer at the end of each sample (mean over samples)", fontsize=11)
    written += save(fig, out_dir / f"layers_{suite}")

    tasks = []
    for run in runs:
        for rec in run.records:
            if str(rec["task"]) not in tasks:
                tasks.append(str(rec["task"]))
    fig, (ax_size, ax_age) = new_figure(*PROFILE_SIZE, ncols=2)
    width = 0.8 / max(len(runs), 3)
    for k, run in enumerate(runs):
        size, age = [], []
        for task in tasks:
            prof = [p for rec in run.records if str(rec["task"]) == task for p in [_sample_profile(rec)] if p]
            tok = sum(p[0] for p in prof) / len(prof) if prof else math.nan
            size.append(sum(p[1] for p in prof) / len(prof) / tok if prof else math.nan)
            age.append(sum(p[2] for p in prof) / len(prof) / tok if prof else math.nan)
        xs = [i - width * len(runs) / 2 + width * (k + 0.5) for i in range(len(tasks))]
        ax_size.bar(xs, size, width=width, color=colors[run.label], label=_short(run.label))
        ax_age.bar(xs, age, width=width, color=colors[run.label], label=_short(run.label))
    for ax, what in ((ax_size, "kept tokens per head"), (ax_age, "mean oldness of kept tokens")):
        tilt = len(tasks) > 4
        ax.set_xticks(range(len(tasks)), tasks, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                      fontsize=8)
        ax.set_ylabel(f"{what} / mean prompt length", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    ax_size.set_title("Memory size per task", fontsize=10)
    ax_age.set_title("Token oldness per task", fontsize=10)
    fig.suptitle(f"{title}: cache per task (mean over layers and samples)", fontsize=11)
    written += save(fig, out_dir / f"tasks_{suite}")

    fig, (ax_size, ax_age) = new_figure(*PROFILE_SIZE, ncols=2)
    top = 0.0
    for run in runs:
        prof = sorted(p for rec in run.records for p in [_sample_profile(rec)] if p)
        xs = [p[0] for p in prof]
        top = max(top, max(xs))
        for ax, k in ((ax_size, 1), (ax_age, 2)):
            ax.scatter(xs, [p[k] for p in prof], s=10, alpha=0.35, color=colors[run.label])
            bins = _bins(xs)
            means = [(sum(xs[i] for i in b) / len(b), sum(prof[i][k] for i in b) / len(b)) for b in bins]
            ax.plot([m[0] for m in means], [m[1] for m in means], marker="o", markersize=4, linewidth=1.5,
                    color=colors[run.label], label=_short(run.label))
    ax_size.plot([0, top], [0, top], color="0.5", linestyle=":", linewidth=0.9, label="every prompt token")
    ax_size.set_ylabel("kept tokens per head (mean over layers)")
    ax_age.set_ylabel("mean oldness of kept tokens (queries)")
    for ax in (ax_size, ax_age):
        ax.set_xlabel("prompt length (tokens fed to the model)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    ax_size.set_title("Memory size versus prompt length", fontsize=10)
    ax_age.set_title("Token oldness versus prompt length", fontsize=10)
    fig.suptitle(f"{title}: per sample (dots) and binned means (lines)", fontsize=11)
    written += save(fig, out_dir / f"length_{suite}")
    return written


def _bins(xs: list[float], max_bins: int = 8) -> list[list[int]]:
    """Indices of sorted ``xs`` grouped by equal value (few distinct lengths) or in equal-count bins."""
    distinct = sorted(set(xs))
    if len(distinct) <= max_bins:
        return [[i for i, x in enumerate(xs) if x == d] for d in distinct]
    size = math.ceil(len(xs) / max_bins)
    return [list(range(i, min(i + size, len(xs)))) for i in range(0, len(xs), size)]


# ---- NIAH heat-maps ------------------------------------------------------------------------------

def _grid_records(run: Run, task: str):
    for rec in run.records:
        meta = rec.get("metadata") or {}
        if str(rec["task"]) == task and isinstance(meta.get("length"), (int, float)) \
                and isinstance(meta.get("depth"), (int, float)):
            yield int(meta["length"]), float(meta["depth"]), 100.0 * float(rec["score"])


def heatmaps(runs: list[Run], suite: str, out_dir: Path) -> list[Path]:
    """One figure per task whose records carry ``metadata.length`` and ``metadata.depth``:
    mean score per (context length, needle depth), one panel per row, missing cells grey."""
    import numpy as np
    from matplotlib import colormaps

    tasks = []
    for run in runs:
        for rec in run.records:
            if str(rec["task"]) not in tasks:
                tasks.append(str(rec["task"]))
    written = []
    for task in tasks:
        data = {run.label: list(_grid_records(run, task)) for run in runs}
        data = {k: v for k, v in data.items() if v}
        if not data:
            continue
        lengths = sorted({p[0] for v in data.values() for p in v})
        depths = sorted({p[1] for v in data.values() for p in v})
        fig, axes = new_figure(HEATMAP_PANEL * len(data) + HEATMAP_EXTRA, HEATMAP_HEIGHT, ncols=len(data))
        cmap = colormaps["RdYlGn"].with_extremes(bad="0.85")
        image = None
        for ax, (label, points) in zip(axes, data.items()):
            sums = np.zeros((len(depths), len(lengths)))
            counts = np.zeros_like(sums)
            for length, depth, score in points:
                sums[depths.index(depth), lengths.index(length)] += score
                counts[depths.index(depth), lengths.index(length)] += 1
            grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100, aspect="auto")
            for i in range(len(depths)):
                for j in range(len(lengths)):
                    if counts[i, j]:
                        ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color="black")
            ax.set_xticks(range(len(lengths)), [_k(n) for n in lengths], fontsize=7)
            ax.set_yticks(range(len(depths)), [f"{d * 100:g}%" for d in depths], fontsize=7)
            ax.set_xlabel("context length (tokens)", fontsize=8)
            ax.set_title(_short(label, 34), fontsize=9)
        axes[0].set_ylabel("needle depth", fontsize=8)
        fig.colorbar(image, ax=axes, shrink=0.9, label="score (x100)")
        fig.suptitle(f"{paper.layout(suite).title} / {task}\nscore (x100) by context length and needle depth",
                     fontsize=9)
        written += save(fig, out_dir / f"heatmap_{suite}_{task}")
    return written


def _k(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


# ---- fits ----------------------------------------------------------------------------------------

@contextmanager
def _also_pdf(written: list[Path]):
    """Make :mod:`harness.fit.plots` save a PDF next to each PNG it writes (its figures, reused)."""
    from harness.fit import plots

    original = plots._save

    def both(fig, out_path):
        path = original(fig, out_path)
        pdf = Path(path).with_suffix(".pdf")
        fig.savefig(pdf, dpi=plots.DPI, format="pdf", metadata=PDF_METADATA)
        written.append(pdf)
        return path

    plots._save = both
    try:
        yield
    finally:
        plots._save = original


def fit_figures(fits: list[FitDir], out_dir: Path) -> list[Path]:
    from harness.fit import plots

    written: list[Path] = []
    names = _unique_names([f.path for f in fits])
    for fit, name in zip(fits, names):
        with _also_pdf(written):
            written.append(plots.training_curves(fit.log, out_dir / f"fit_{name}_training.png",
                                                 title=f"NAMM fit {fit.label}: training curves"))
            written.append(plots.memory_curve(fit.log, out_dir / f"fit_{name}_memory.png",
                                              title=f"NAMM fit {fit.label}: memory size"))
    if len(fits) > 1:
        fig, axes = new_figure(FIT_MEMORY_PANEL[0] * len(fits), FIT_MEMORY_PANEL[1], ncols=len(fits))
        for ax, fit in zip(axes, fits):
            recs = sorted(fit.log, key=lambda r: r.get("global_generation", 0))
            xs = [r.get("global_generation") for r in recs]
            pop = [(r.get("cache") or {}).get("logical_mean") for r in recs]
            ax.plot(xs, [math.nan if v is None else v for v in pop], color="tab:blue", linewidth=1.6,
                    label="population mean")
            val = [(r["global_generation"], r["validation"].get("cache_logical_mean")) for r in recs
                   if isinstance(r.get("validation"), dict) and r["validation"].get("cache_logical_mean") is not None]
            if val:
                ax.plot([v[0] for v in val], [v[1] for v in val], color="tab:orange", marker="s", markersize=4,
                        linestyle="--", label="CMA-ES mean (validation)")
            stages = [(r.get("global_generation"), r.get("stage")) for r in recs]
            for (x0, s0), (x1, s1) in zip(stages, stages[1:]):
                if s1 != s0 and x1 is not None:
                    ax.axvline(x1 - 0.5, color="0.35", linestyle="--", linewidth=1.0)
                    ax.text(x1 - 0.5, 0.98, f" stage {s1}", transform=ax.get_xaxis_transform(), fontsize=8,
                            va="top", color="0.25")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(fit.label, fontsize=10)
            ax.set_xlabel("CMA-ES generation (global)")
            ax.set_ylabel("KV cache size (tokens per head, logical)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("Memory size during fitting", fontsize=11)
        written += save(fig, out_dir / "fit_memory")
    return written


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name or "fit" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}{i + 1}" for i, n in enumerate(names)]
    return names
