"""The report's tables: per suite (one column per task, paper Tables 2-7 and 12-17), per context
length (NIAH, Table 18) and the summary across suites (Tables 1 and 8).

A row is one run. Per task: mean score x 100 and, in brackets, that score divided by the full-cache
row's on the same samples (:mod:`harness.report.align`). Overall columns:

- "All tasks": the mean over the columns present in EVERY row (a footnote names any left out);
  in brackets the normalised overall score (``convention``, see :mod:`harness.report.paper`)
- "Test tasks": for a NAMM whose fitting tasks are known, the mean normalised score over the
  columns it was not fitted on (paper Tables 2, 12, 16)
- "Cache size": the mean over the same columns of the per-task mean KV-cache size — logical, i.e.
  tokens kept per KV head, averaged over evicting layers, at the end of each sample — and, in
  brackets, relative to the full-cache row; the physical size (slots allocated per layer, which
  the ``original`` cache mode pads to the largest head) is its own column

This module holds the tables' structure and builds them (columns, rows of aligned cells, data
provenance marks) and the summary; the overall columns and footnotes computed from a table's cells
are in :mod:`harness.report.overall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from harness.errors import UsageError
from harness.report import align, paper
from harness.report.overall import SETTINGS, aggregates, cell_notes, fit_columns, settings_notes
from harness.report.runs import Run, check_models

__all__ = ["GENERATED_MARK", "GENERATED_NOTE", "MIXED_MARK", "SETTINGS", "Column", "Notes", "Row", "Summary",
           "SummaryCell", "Table", "build_summary", "build_table", "has_lengths", "order_rows"]

GENERATED_MARK = "†"
GENERATED_NOTE = ("generated data: made locally by the benchmark's public construction recipe, NOT the "
                  "official benchmark data")
MIXED_MARK = "‡"


class Notes:
    """Footnotes in order of first use; the same text gets the same marker."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, text: str, marker: str | None = None) -> str:
        for m, t in self.items:
            if t == text:
                return m
        if marker is None:
            used = {m for m, _ in self.items}
            marker = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in used)
        self.items.append((marker, text))
        return marker


@dataclass
class Column:
    key: str  # CSV name: the task, or "len<N>"
    label: str  # header: the task's paper id, or the context length
    select: Callable[[dict], bool]
    task: str | None = None
    task_id: str | None = None
    category: str | None = None
    generated: bool = False
    marks: list[str] = field(default_factory=list)


@dataclass
class Row:
    run: Run
    cells: list[align.Cell]
    marks: dict[int, list[str]] = field(default_factory=dict)  # column index -> footnote markers
    fitted: set[int] = field(default_factory=set)  # column indices the row's NAMM was fitted on
    all_score: float | None = None
    norm_mor: float | None = None  # mean of per-column normalised scores
    norm_rom: float | None = None  # all_score / full row's all_score
    norm_all: float | None = None  # the table's convention
    test_norm: float | None = None
    test_text: str = "N/A"  # shown when test_norm is None
    test_marks: list[str] = field(default_factory=list)
    cache_logical: float | None = None
    cache_logical_rel: float | None = None
    cache_physical: float | None = None
    cache_physical_rel: float | None = None
    n_samples: int = 0

    @property
    def label(self) -> str:
        return self.run.label


@dataclass
class Table:
    name: str  # file stem
    title: str
    suite: str
    model: str
    columns: list[Column]
    rows: list[Row]
    convention: str
    notes: Notes
    kind: str = "suite"  # suite | length | task_length | task_depth
    all_label: str = "All tasks"
    show_task_norm: bool = True
    show_test: bool = False
    all_marks: list[str] = field(default_factory=list)
    norm_marks: list[str] = field(default_factory=list)
    cache_marks: list[str] = field(default_factory=list)
    common: list[int] = field(default_factory=list)  # column indices averaged in "All tasks"

    @property
    def full_row(self) -> Row | None:
        return next((r for r in self.rows if r.run.is_full), None)


def order_rows(runs: list[Run], paper_order: bool) -> list[Run]:
    """Full cache first; then the given order, or (``--paper``) baselines then NAMMs by stage."""
    if not paper_order:
        return sorted(runs, key=lambda r: not r.is_full)

    def key(r: Run):
        kind = paper.POLICY_ORDER.index(r.policy) if r.policy in paper.POLICY_ORDER else len(paper.POLICY_ORDER)
        stage = (r.fit or {}).get("stage")
        return (kind, stage if isinstance(stage, int) else 10**6, runs.index(r))

    return sorted(runs, key=key)


def _task_columns(suite: str, runs: list[Run], paper_mode: bool) -> list[Column]:
    task_ids: dict[str, str] = {}
    for run in runs:
        for rec in run.records:
            task_ids.setdefault(str(rec["task"]), str(rec.get("task_id") or rec["task"]))
    tasks = list(task_ids)
    if len(set(task_ids.values())) == len(tasks):  # paper order by task id
        by_id = {tid: t for t, tid in task_ids.items()}
        tasks = [by_id[tid] for tid in paper.order_task_ids(suite, list(by_id))]
    columns = []
    for task in tasks:
        tid = task_ids[task]
        label = tid if paper_mode or tid == task else f"{tid} ({task})"
        columns.append(Column(key=task, label=label, select=lambda r, t=task: str(r["task"]) == t, task=task,
                              task_id=tid, category=paper.category(suite, tid)))
    return columns


def _length_columns(runs: list[Run]) -> list[Column]:
    lengths = sorted({int(rec["metadata"]["length"]) for run in runs for rec in run.records})
    return [Column(key=f"len{n}", label=f"{n} tok",
                   select=lambda r, n=n: int(r["metadata"]["length"]) == n) for n in lengths]


def _task_length_columns(runs: list[Run]) -> list[Column]:
    """One column per (task, context length): a NIAH-like grid's cells, e.g. ``passkey 2048``."""
    keys = sorted({(str(rec["task"]), int(rec["metadata"]["length"])) for run in runs for rec in run.records})
    return [Column(key=f"{t}-len{n}", label=f"{t} {n}", task=t,
                   select=lambda r, t=t, n=n: str(r["task"]) == t and int(r["metadata"]["length"]) == n)
            for t, n in keys]


def _task_depth_columns(runs: list[Run]) -> list[Column]:
    """One column per (task, needle depth), all context lengths pooled, e.g. ``needle 2.5%``: where in
    the context a policy loses the needle (query-agnostic eviction loses the early ones first)."""
    keys = sorted({(str(rec["task"]), float(rec["metadata"]["depth"])) for run in runs for rec in run.records})
    return [Column(key=f"{t}-depth{d:g}", label=f"{t} {d * 100:g}%", task=t,
                   select=lambda r, t=t, d=d: str(r["task"]) == t and float(r["metadata"]["depth"]) == d)
            for t, d in keys]


def _varies(runs: list[Run], key: str) -> bool:
    """Every record carries a numeric ``metadata[key]`` and it takes at least two values (NIAH-like)."""
    values = set()
    for run in runs:
        for rec in run.records:
            value = (rec.get("metadata") or {}).get(key)
            if not isinstance(value, (int, float)):
                return False
            values.add(float(value))
    return len(values) > 1


def has_depths(runs: list[Run]) -> bool:
    """Every record carries a numeric ``metadata.depth`` and there are at least two depths."""
    return _varies(runs, "depth")


def has_lengths(runs: list[Run]) -> bool:
    """Every record carries ``metadata.length`` and there are at least two lengths."""
    return _varies(runs, "length")


def build_table(runs: list[Run], kind: str = "suite", paper_mode: bool = False, samples: str = "strict",
                convention: str | None = None) -> Table:
    """The table of one suite's runs (``kind`` ``suite``: a column per task; ``length``: per
    context length, all tasks together; ``task_length``: per task and context length; ``task_depth``:
    per task and needle depth, lengths pooled)."""
    suite = runs[0].suite
    check_models(runs, f"suite {suite}")
    fulls = [r for r in runs if r.is_full]
    if len(fulls) > 1:
        raise UsageError(f"suite {suite} has {len(fulls)} full-cache runs ({', '.join(str(r.path) for r in fulls)}); "
                         "give one per report (it is the normalisation reference)")
    lay = paper.layout(suite)
    convention = convention or (lay.convention if paper_mode else paper.MEAN_OF_RATIOS)
    runs = order_rows(runs, paper_mode)
    columns = {"suite": lambda: _task_columns(suite, runs, paper_mode), "length": lambda: _length_columns(runs),
               "task_length": lambda: _task_length_columns(runs), "task_depth": lambda: _task_depth_columns(runs)}[kind]()
    notes = Notes()
    title = f"{lay.title}: " + {"suite": "score per task", "length": "score per context length, all tasks pooled",
                                "task_length": "score per task and context length",
                                "task_depth": "score per task and needle depth, all context lengths pooled"}[kind]
    name = {"suite": suite, "length": f"{suite}_by_length", "task_length": f"{suite}_by_task_length",
            "task_depth": f"{suite}_by_task_depth"}[kind]
    table = Table(name=name, title=title, suite=suite,
                  model=runs[0].model, columns=columns, rows=[], convention=convention, notes=notes, kind=kind,
                  all_label="All lengths" if kind == "length" else "All tasks",
                  show_task_norm=lay.task_norm or not paper_mode)
    full_index = next((i for i, r in enumerate(runs) if r.is_full), None)
    per_column = [align.column_cells([r.records for r in runs], c.select, full_index, samples) for c in columns]
    table.rows = [Row(run=r, cells=[per_column[j][i] for j in range(len(columns))]) for i, r in enumerate(runs)]

    # data provenance per column
    for j, col in enumerate(columns):
        recs = [rec for r in runs for rec in r.records if col.select(rec)]
        gen = [align.is_generated(rec) for rec in recs]
        col.generated = any(gen)
        if col.generated:
            col.marks.append(notes.add(GENERATED_NOTE, GENERATED_MARK))
        if any(gen) and not all(gen):
            col.marks.append(notes.add("mixed data sources: some samples of this column are generated, some are "
                                       "official data (they never count as the same samples)", MIXED_MARK))
    cell_notes(table)
    aggregates(table)
    fit_columns(table)
    settings_notes(table)
    return table


# ---- summary across suites ---------------------------------------------------------------------

@dataclass
class SummaryCell:
    score: float | None = None
    norm: float | None = None
    cache: float | None = None
    cache_rel: float | None = None
    marks: list[str] = field(default_factory=list)


@dataclass
class Summary:
    name: str
    title: str
    tables: list[Table]  # one column group per suite table
    labels: list[str]
    cells: dict[tuple[str, str], SummaryCell]  # (label, table name) -> cell
    notes: Notes
    group_marks: dict[str, list[str]] = field(default_factory=dict)


def build_summary(tables: list[Table], labels: list[str] | None = None, name: str = "summary",
                  title: str = "Summary across suites") -> Summary:
    """Paper Tables 1/8: per suite the overall score (normalised in brackets, the suite table's
    convention) and cache size (relative to full in brackets); rows matched by label."""
    notes = Notes()
    if labels is None:
        labels = []
        for t in tables:
            for r in t.rows:
                if r.label not in labels:
                    labels.append(r.label)
        full_labels = [r.label for t in tables for r in t.rows if r.run.is_full]
        labels.sort(key=lambda lab: lab not in full_labels)
    cells, group_marks = {}, {}
    models = {t.model for t in tables}
    for t in tables:
        marks = []
        if any(c.generated for c in t.columns):
            marks.append(notes.add(GENERATED_NOTE + " (at least one task of this suite)", GENERATED_MARK))
        if len(t.common) < len(t.columns):
            marks.append(notes.add(f"{paper.layout(t.suite).title}: averages over the {len(t.common)} of "
                                   f"{len(t.columns)} tasks present in every row (see its table)"))
        marks.append(notes.add(f"{paper.layout(t.suite).title}: normalised as {t.convention}"))
        if len(models) > 1:
            marks.append(notes.add(f"{paper.layout(t.suite).title}: model {t.model}"))
        group_marks[t.name] = marks
        rows = {r.label: r for r in t.rows}
        for label in labels:
            row = rows.get(label)
            if row is None:
                cells[(label, t.name)] = SummaryCell(marks=[notes.add("no run of this row on this suite")])
            elif row.all_score is None:
                cells[(label, t.name)] = SummaryCell(marks=[notes.add("no task present in every row of this suite")])
            else:
                cells[(label, t.name)] = SummaryCell(row.all_score, row.norm_all, row.cache_logical,
                                                     row.cache_logical_rel)
    notes.add("performance: the suite table's All tasks average (normalised in brackets); cache size: logical "
              "tokens kept per KV head (relative to the full cache in brackets)")
    return Summary(name=name, title=title, tables=tables, labels=labels, cells=cells, notes=notes,
                   group_marks=group_marks)
