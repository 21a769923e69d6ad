"""The overall columns and footnotes of a report table, computed from its aligned cells.

:func:`harness.report.tables.build_table` builds the columns and rows, then calls, in order:

- :func:`cell_notes`: footnotes of missing or restricted cells and of missing normalised scores
- :func:`aggregates`: "All tasks" (mean over the columns present in every row), the normalised
  overall score (the table's convention) and the logical/physical cache sizes, relative to full
- :func:`fit_columns`: "Test tasks" of a fitted NAMM (mean normalised score on held-out columns)
- :func:`settings_notes`: footnotes when rows differ in a run setting, or a run is unfinished
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.report import align, paper

if TYPE_CHECKING:
    from harness.report.tables import Table

SETTINGS = (("max_length_used", "context limit"), ("chat_template", "chat template"), ("dtype", "dtype"),
            ("cache_mode", "cache mode"), ("n_up", "n_up"), ("seed", "seed"))


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def cell_notes(table: Table) -> None:
    details: dict[str, list[str]] = {}
    for row in table.rows:
        for j, cell in enumerate(row.cells):
            if cell.missing == align.SAMPLES_DIFFER:
                details.setdefault(cell.missing, []).append(f"{row.label} / {table.columns[j].label}: {cell.detail}")
    texts = {
        align.NOT_RUN: "missing: this run has no samples of this column (not run, or not finished)",
        align.NO_COMMON: "missing: no sample of this column is common to all rows that ran it",
        align.SAMPLES_DIFFER: "missing: this run's samples differ from the reference row's (the full-cache row), "
                              "so the score is not shown rather than averaged over different samples "
                              "(--samples common compares all rows on their common samples) — "
                              + "; ".join(details.get(align.SAMPLES_DIFFER, [])),
    }
    restricted = [f"{row.label} / {table.columns[j].label}: {cell.n} of {cell.restricted_from}"
                  for row in table.rows for j, cell in enumerate(row.cells) if cell.restricted_from]
    for row in table.rows:
        for j, cell in enumerate(row.cells):
            marks = []
            if cell.missing:
                marks.append(table.notes.add(texts[cell.missing]))
            else:
                if cell.restricted_from:
                    marks.append(table.notes.add("computed on the samples common to all rows (--samples common): "
                                                 + "; ".join(restricted)))
                if cell.norm_missing and cell.norm_missing != "no full-cache run" and table.show_task_norm:
                    marks.append(table.notes.add(f"no normalised score: {cell.norm_missing} on these samples"))
            if marks:
                row.marks[j] = marks


def aggregates(table: Table) -> None:
    cols, rows = table.columns, table.rows
    common = [j for j in range(len(cols)) if all(not r.cells[j].missing for r in rows)]
    table.common = common
    left_out = [j for j in range(len(cols)) if j not in common]
    what = {"suite": "tasks", "length": "lengths"}.get(table.kind, "cells")
    if not common:
        table.all_marks.append(table.notes.add(f"no {what[:-1]} is present in every row: nothing to average"))
    elif left_out:
        names = ", ".join(cols[j].label for j in left_out)
        table.all_marks.append(table.notes.add(
            f"averages ({table.all_label}, Test tasks, cache sizes) over the {len(common)} of {len(cols)} {what} "
            f"present in every row; left out: {names}"))
    full = table.full_row
    norm_cols = [j for j in common if full is not None and full.cells[j].score]
    if full is not None and common and len(norm_cols) < len(common):
        names = ", ".join(cols[j].label for j in common if j not in norm_cols)
        table.norm_marks.append(table.notes.add(
            f"the normalised mean leaves out {names}: the full cache scores 0 there"))
    for row in rows:
        if common:
            row.all_score = _mean(row.cells[j].score for j in common)
            row.n_samples = sum(row.cells[j].n for j in common)
            if norm_cols:
                row.norm_mor = _mean(row.cells[j].norm for j in norm_cols)
            logical = [row.cells[j].cache_logical for j in common]
            physical = [row.cells[j].cache_physical for j in common]
            row.cache_logical = _mean(logical) if None not in logical else None
            row.cache_physical = _mean(physical) if None not in physical else None
    if full is not None and full.all_score:
        for row in rows:
            row.norm_rom = row.all_score / full.all_score if row.all_score is not None else None
    if full is not None and full.all_score == 0:
        table.norm_marks.append(table.notes.add("no normalised mean: the full cache scores 0 on every task"))
    for row in rows:
        row.norm_all = row.norm_mor if table.convention == paper.MEAN_OF_RATIOS else row.norm_rom
        if full is not None:
            if row.cache_logical is not None and full.cache_logical:
                row.cache_logical_rel = row.cache_logical / full.cache_logical
            if row.cache_physical is not None and full.cache_physical:
                row.cache_physical_rel = row.cache_physical / full.cache_physical
    if full is None:
        text = "no full-cache run in this table: no normalised scores or relative cache sizes"
    elif table.convention == paper.MEAN_OF_RATIOS:
        text = f"in brackets: the mean over {what} of the per-{what[:-1]} normalised scores"
    else:
        text = "in brackets: the row's average divided by the full-cache row's average"
    table.norm_marks.insert(0, table.notes.add(text))
    table.cache_marks.append(table.notes.add(
        "cache size: tokens kept per KV head (logical), mean over evicting layers at the end of each sample, "
        f"then over samples and {what}" + ("; in brackets relative to the full cache" if full else "")
        + ". Physical: slots allocated per layer (the original cache mode pads every head to the largest)"))


def fit_columns(table: Table) -> None:
    if table.kind != "suite":
        return
    rows = table.rows
    table.show_test = any(r.run.is_namm or r.run.fit for r in rows)
    full = table.full_row
    for row in rows:
        run = row.run
        if not (run.is_namm or run.fit):
            continue
        if run.fit is None:
            row.test_text = "?"
            row.test_marks.append(table.notes.add(f"fitted tasks unknown for {row.label}: {run.fit_problem}"))
            continue
        fit_suite = run.fit.get("suite")
        fitted = {str(t) for t in run.fit.get("tasks") or []} if fit_suite in (None, table.suite) else set()
        if fit_suite not in (None, table.suite):
            row.test_marks.append(table.notes.add(
                f"{row.label} was fitted on suite {fit_suite} ({', '.join(map(str, run.fit.get('tasks', [])))}): "
                "every task here is held out"))
        row.fitted = {j for j, c in enumerate(table.columns) if c.task in fitted}
        held = [j for j in table.common if j not in row.fitted and full is not None and full.cells[j].score]
        if full is None:
            row.test_text = "—"
        elif held:
            row.test_norm = _mean(row.cells[j].norm for j in held)
        else:
            row.test_text = "—"
            row.test_marks.append(table.notes.add(f"{row.label}: every task present in every row was fitted on"))
    if any(r.fitted for r in rows):
        table.notes.add("shaded / bold: tasks the NAMM was fitted on (excluded from Test tasks, the mean "
                        "normalised score on the held-out tasks)", "§")


def settings_notes(table: Table) -> None:
    rows = table.rows
    for key, name in SETTINGS:
        values = {}
        for row in rows:
            value = row.run.config.get(key) if key == "max_length_used" else row.run.run.get(key)
            values.setdefault(str(value), []).append(row.label)
        if len(values) > 1:
            listing = "; ".join(f"{v}: {', '.join(labels)}" for v, labels in values.items())
            table.notes.add(f"the rows differ in {name} ({listing})")
    for row in rows:
        if row.run.complete is False or row.run.extra_files:
            table.notes.add(f"{row.label}: run not finished ({len(row.run.records)} samples recorded)")
