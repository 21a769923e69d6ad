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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from harness.errors import UsageError
from harness.report import align, paper
from harness.report.runs import Run, check_models

GENERATED_MARK = "†"
GENERATED_NOTE = ("generated data: made locally by the benchmark's public construction recipe, NOT the "
                  "official benchmark data")
MIXED_MARK = "‡"
SETTINGS = (("max_length_used", "context limit"), ("chat_template", "chat template"), ("dtype", "dtype"),
            ("cache_mode", "cache mode"), ("n_up", "n_up"), ("seed", "seed"))


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


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
    kind: str = "suite"  # suite | length
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


def has_lengths(runs: list[Run]) -> bool:
    """Every record carries ``metadata.length`` and there are at least two lengths (NIAH-like)."""
    lengths = set()
    for run in runs:
        for rec in run.records:
            meta = rec.get("metadata") or {}
            if not isinstance(meta.get("length"), (int, float)):
                return False
            lengths.add(int(meta["length"]))
    return len(lengths) > 1


def build_table(runs: list[Run], kind: str = "suite", paper_mode: bool = False, samples: str = "strict",
                convention: str | None = None) -> Table:
    """The table of one suite's runs (``kind`` ``suite``: a column per task; ``length``: per
    context length, all tasks together)."""
    suite = runs[0].suite
    check_models(runs, f"suite {suite}")
    fulls = [r for r in runs if r.is_full]
    if len(fulls) > 1:
        raise UsageError(f"suite {suite} has {len(fulls)} full-cache runs ({', '.join(str(r.path) for r in fulls)}); "
                         "give one per report (it is the normalisation reference)")
    lay = paper.layout(suite)
    convention = convention or (lay.convention if paper_mode else paper.MEAN_OF_RATIOS)
    runs = order_rows(runs, paper_mode)
    columns = _task_columns(suite, runs, paper_mode) if kind == "suite" else _length_columns(runs)
    notes = Notes()
    title = f"{lay.title}: " + ("score per task" if kind == "suite" else "score per context length, all tasks pooled")
    table = Table(name=f"{suite}" if kind == "suite" else f"{suite}_by_length", title=title, suite=suite,
                  model=runs[0].model, columns=columns, rows=[], convention=convention, notes=notes, kind=kind,
                  all_label="All tasks" if kind == "suite" else "All lengths",
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
    _cell_notes(table)
    _aggregates(table)
    _fit_columns(table)
    _settings_notes(table)
    return table


def _cell_notes(table: Table) -> None:
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


def _aggregates(table: Table) -> None:
    cols, rows = table.columns, table.rows
    common = [j for j in range(len(cols)) if all(not r.cells[j].missing for r in rows)]
    table.common = common
    left_out = [j for j in range(len(cols)) if j not in common]
    what = "tasks" if table.kind == "suite" else "lengths"
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


def _fit_columns(table: Table) -> None:
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


def _settings_notes(table: Table) -> None:
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
