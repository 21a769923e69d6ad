"""``python -m harness report RUN_DIRS... --out DIR``: tables and figures from run directories alone.

Writes into ``--out``:

- ``report.md`` / ``report.tex``: every table (with footnotes) and the list of figures;
  ``report.md`` opens with the runs (each one's code revision · dtype · device, from
  ``config.json``'s ``provenance``, and a footnote with the library versions)
- ``tables/<name>.md|.tex|.csv``: one file per table — ``<suite>`` (a column per task),
  ``<suite>_by_length`` and, with several tasks, ``<suite>_by_task_length``, and ``<suite>_by_task_depth``
  (NIAH-like suites: records with ``metadata.length`` / ``metadata.depth``), ``summary`` (across suites; with ``--paper``
  ``table1`` and, with several NAMMs, ``table8``)
- ``figures/*.png|.pdf``: see :mod:`harness.report.figures`

Files of those kinds already in ``tables/`` and ``figures/`` are replaced, so nothing stale stays.
"""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from pathlib import Path

from harness.errors import UsageError


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by `python -m harness run`")
    p.add_argument("--out", required=True, help="report folder (e.g. results/report/)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's layout: task ids as headers with category rows, 'Base model' row, baselines "
                        "then NAMMs by stage, each suite's own overall normalisation, Tables 1/8 as summaries")
    p.add_argument("--fit", action="append", nargs="+", metavar="FIT_DIR", default=[],
                   help="fit folders (with fit.jsonl) for training-curve and memory figures")
    p.add_argument("--samples", default="strict", choices=("strict", "common"),
                   help="strict (default): a cell whose samples differ from the full-cache row's is missing; "
                        "common: compare all rows on the samples they share")
    p.add_argument("--overall", choices=("mean-of-ratios", "ratio-of-means"),
                   help="normalised 'All tasks' score: mean of per-task normalised scores (default; with --paper "
                        "each suite as in the paper) or average score / full-cache average score")
    p.add_argument("--label", action="append", default=[], metavar="RUN_DIR=TEXT", help="row label for a run")
    p.add_argument("--wrap", type=int, default=12, help="data columns per table part (default 12, as the paper)")
    p.add_argument("--no-figures", action="store_true", help="tables only")


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--label takes RUN_DIR=TEXT, got {item!r}")
        key, text = item.split("=", 1)
        if not text.strip():
            raise UsageError(f"--label {item!r}: empty label")
        out[key] = text.strip()
    return out


def _clean(folder: Path, suffixes: tuple[str, ...]) -> None:
    if folder.is_dir():
        for f in folder.iterdir():
            if f.is_file() and f.suffix in suffixes:
                f.unlink()


def _final_namm(rows) -> list:
    namms = [r for r in rows if r.run.is_namm]
    if len(namms) < 2:
        return namms
    def key(r):
        stage = (r.run.fit or {}).get("stage")
        return (r.run.policy == "namm_bam", stage if isinstance(stage, int) else -1)
    return [max(namms, key=key)]


def build(args):
    """Load, check and lay out everything; returns (runs, tables, summaries, fits). No files written."""
    from harness.report import paper, runs as runs_mod, tables as tables_mod

    if args.wrap is not None and args.wrap < 1:
        raise UsageError(f"--wrap must be a positive number of columns, got {args.wrap}")
    runs = runs_mod.load_runs(args.runs)
    runs_mod.assign_labels(runs, paper_names=args.paper, overrides=_labels(args.label))
    fits = [runs_mod.load_fit(p) for group in args.fit for p in group]
    suites: dict[str, list] = {}
    for run in runs:
        suites.setdefault(run.suite, []).append(run)
    tables, suite_tables = [], []
    for suite in sorted(suites, key=paper.suite_sort_key):
        table = tables_mod.build_table(suites[suite], "suite", args.paper, args.samples, args.overall)
        tables.append(table)
        suite_tables.append(table)
        if tables_mod.has_lengths(suites[suite]):
            tables.append(tables_mod.build_table(suites[suite], "length", args.paper, args.samples, args.overall))
            if len({str(rec["task"]) for run in suites[suite] for rec in run.records}) > 1:
                tables.append(tables_mod.build_table(suites[suite], "task_length", args.paper, args.samples,
                                                     args.overall))
        if tables_mod.has_depths(suites[suite]):
            tables.append(tables_mod.build_table(suites[suite], "task_depth", args.paper, args.samples, args.overall))
    summaries = []
    if len(suite_tables) > 1 or args.paper:
        runs_mod.check_models(runs, "the summary across suites")
    if args.paper:
        labels = []
        for t in suite_tables:
            for r in t.rows:
                if r.label not in labels:
                    labels.append(r.label)
        all_rows = [r for t in suite_tables for r in t.rows]
        namm_labels = {r.label for r in all_rows if r.run.is_namm}
        final = {r.label for r in _final_namm(all_rows)}
        table1 = [lab for lab in labels if lab not in namm_labels or lab in final]
        summaries.append(tables_mod.build_summary(suite_tables, table1, "table1",
                                                  "Summary across suites (paper Table 1 layout)"))
        if len(namm_labels) > 1:
            table8 = [lab for lab in labels if lab in namm_labels or any(r.label == lab and r.run.is_full
                                                                         for r in all_rows)]
            summaries.append(tables_mod.build_summary(suite_tables, table8, "table8",
                                                      "NAMMs compared across suites (paper Table 8 layout)"))
    elif len(suite_tables) > 1:
        summaries.append(tables_mod.build_summary(suite_tables))
    return runs, tables, summaries, fits


RANDOM_WEIGHTS = " (random weights: speed/memory only)"  # a --model random:<arch> run: its scores mean nothing


def _inputs_md(runs) -> list[str]:
    """The runs table (a row per run, its code · dtype · device; models with random weights marked) and a
    footnote with the library versions."""
    from harness import provenance
    from harness.report.align import source_of

    out = ["| Row | Suite | Policy | Model | Samples | Data | Code · dtype · device | Run directory |",
           "|:---|:---|:---|:---|---:|:---|:---|:---|"]
    versions: dict[str, list[str]] = {}
    for run in runs:
        sources = Counter(source_of(r) for r in run.records)
        data = ", ".join(f"{k} ({v})" for k, v in sorted(sources.items()))
        status = "" if run.complete is not False and not run.extra_files else " (unfinished)"
        prov = run.config.get("provenance")
        code = provenance.short_text(prov)
        resumed = [provenance.commit_text(p) for p in run.config.get("provenance_resumed") or []]
        if resumed:
            code += f" (resumed under {', '.join(dict.fromkeys(resumed))})"
        versions.setdefault(provenance.versions_text(prov), []).append(run.label)
        model = run.model + (RANDOM_WEIGHTS if (run.config.get("model") or {}).get("random_weights") else "")
        out.append(f"| {run.label} | {run.suite} | {run.policy} | {model} | {len(run.records)}{status} | {data} | "
                   f"{code} | `{run.path}` |")
    out.append("")
    if len(versions) == 1:
        out.append(f"Versions: {next(iter(versions))}.")
    else:
        out += [f"- Versions of {', '.join(labels)}: {text}." for text, labels in versions.items()]
    return out


def main(args) -> int:
    from harness.report import figures, render
    from harness.report.leaderboard import leaderboard_markdown

    runs, tables, summaries, fits = build(args)
    out = Path(args.out)
    table_dir, figure_dir = out / "tables", out / "figures"
    table_dir.mkdir(parents=True, exist_ok=True)
    _clean(table_dir, (".md", ".tex", ".csv"))
    command = "python -m harness report " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "report" else None

    md = ["# KV-cache eviction report", ""]
    if command:
        md += [f"Made by `{command}`.", ""]
    md += ["Scores are means x 100; in brackets the score divided by the full-cache row's on the same samples. "
           "Missing cells (—) are explained in each table's footnotes; no average mixes different samples.", "",
           "## Runs", ""] + _inputs_md(runs) + ["", "## Tables", ""]
    tex = ["% generated by `python -m harness report`; needs \\usepackage{booktabs} and "
           "\\usepackage[table]{xcolor}", ""]
    grids = [render.summary_grid(s) for s in summaries] + [render.table_grid(t, args.paper) for t in tables]
    for grid in grids:
        md_text = render.to_markdown(grid, args.wrap)
        tex_text = render.to_latex(grid, args.wrap)
        (table_dir / f"{grid.name}.md").write_text(md_text, encoding="utf-8")
        (table_dir / f"{grid.name}.tex").write_text(tex_text, encoding="utf-8")
        md.append(md_text)
        tex.append(tex_text)
    board = leaderboard_markdown(runs)
    if board:
        (table_dir / "leaderboard.md").write_text(board + "\n", encoding="utf-8")
        md.append(board)
    for s in summaries:
        (table_dir / f"{s.name}.csv").write_text(render.summary_csv(s), encoding="utf-8")
    for t in tables:
        (table_dir / f"{t.name}.csv").write_text(render.table_csv(t), encoding="utf-8")

    written = []
    if not args.no_figures:
        figure_dir.mkdir(parents=True, exist_ok=True)
        _clean(figure_dir, (".png", ".pdf"))
        suite_tables = [t for t in tables if t.kind == "suite"]
        written += figures.tradeoff(suite_tables, figure_dir)
        for t in suite_tables:
            rows = [r.run for r in t.rows]
            written += figures.profiles(rows, t.suite, figure_dir)
            written += figures.heatmaps(rows, t.suite, figure_dir)
        written += figures.fit_figures(fits, figure_dir)
        pngs = [p for p in written if p.suffix == ".png"]
        if pngs:
            md += ["## Figures", ""]
            for p in pngs:
                rel = p.relative_to(out)
                pdf = rel.with_suffix(".pdf").as_posix()
                md += [f"### {p.stem}", "", f"![{p.stem}]({rel.as_posix()}) ([PDF]({pdf}))", ""]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "report.tex").write_text("\n".join(tex) + "\n", encoding="utf-8")
    print(out / "report.md")
    return 0
