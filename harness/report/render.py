"""Markdown, LaTeX and CSV text of the report's tables.

A table is first laid out as a :class:`Grid` (header rows, body cells with footnote markers and
highlight flags, footnotes); Markdown and LaTeX are two spellings of the same grid, wide tables are
split into parts of at most ``wrap`` data columns (the row label repeats, as in the paper). CSV
holds the numbers at full precision, one line per row, with the reason for every missing cell.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from harness.report import paper
from harness.report.tables import Summary, Table

DASH = "—"


@dataclass
class GridCell:
    text: str
    marks: list[str] = field(default_factory=list)
    highlight: bool = False


@dataclass
class Grid:
    name: str
    title: str
    header: list[tuple[list[str], bool]]  # (text per column, merge equal neighbours)
    body: list[list[GridCell]]
    notes: list[tuple[str, str]]
    n_fixed: int = 0  # trailing columns that stay together in the last part
    header_marks: dict[int, list[str]] = field(default_factory=dict)  # column -> markers on the last header row


def _num(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _pair(x: float | None, rel: float | None, digits: int = 2, rel_shown: bool = True) -> str:
    if x is None:
        return DASH
    return f"{x:.{digits}f} ({_num(rel)})" if rel_shown else f"{x:.{digits}f}"


def table_grid(table: Table, paper_mode: bool = False) -> Grid:
    cols = table.columns
    first = {"suite": "Model/Task id", "length": "Model/Context length",
             "task_depth": "Model/Task, depth"}.get(table.kind, "Model/Task, length")
    labels = [first] + [c.label for c in cols]
    overall = [table.all_label] + (["Test tasks"] if table.show_test else []) + ["Cache size"]
    if not paper_mode:
        overall += ["Physical cache", "Samples"]
    header = []
    if any(c.category for c in cols):
        header.append(([""] + [c.category or "" for c in cols] + ["Overall"] * len(overall), True))
    header.append((labels + overall, False))
    header_marks = {j + 1: list(c.marks) for j, c in enumerate(cols) if c.marks}
    base = len(cols) + 1
    header_marks[base] = list(table.all_marks) + list(table.norm_marks)
    cache_at = base + (2 if table.show_test else 1)
    header_marks[cache_at] = list(table.cache_marks)
    if "§" in [m for m, _ in table.notes.items] and table.show_test:
        header_marks[base + 1] = ["§"]
    body = []
    has_full = table.full_row is not None
    for row in table.rows:
        line = [GridCell(row.label)]
        for j, cell in enumerate(row.cells):
            if cell.missing:
                text = DASH
            elif table.show_task_norm and has_full:
                text = f"{cell.score:.2f} ({_num(cell.norm)})"
            else:
                text = f"{cell.score:.2f}"
            line.append(GridCell(text, row.marks.get(j, []), highlight=j in row.fitted))
        line.append(GridCell(_pair(row.all_score, row.norm_all, rel_shown=has_full)))
        if table.show_test:
            line.append(GridCell(_num(row.test_norm) if row.test_norm is not None else row.test_text, row.test_marks))
        line.append(GridCell(_pair(row.cache_logical, row.cache_logical_rel, 0, rel_shown=has_full)))
        if not paper_mode:
            line.append(GridCell(_pair(row.cache_physical, row.cache_physical_rel, 0, rel_shown=has_full)))
            line.append(GridCell(str(row.n_samples) if row.all_score is not None else DASH))
        body.append(line)
    title = table.title + (f" — model {table.model}" if table.model else "")
    return Grid(table.name, title, header, body, table.notes.items, n_fixed=len(overall), header_marks=header_marks)


def summary_grid(summary: Summary) -> Grid:
    groups = [paper.layout(t.suite).title for t in summary.tables]
    top = [""] + [g for g in groups for _ in range(2)]
    second = ["Model/Eval"] + ["Performance", "Cache size"] * len(groups)
    header_marks = {}
    for i, t in enumerate(summary.tables):
        header_marks[1 + 2 * i] = summary.group_marks.get(t.name, [])
    body = []
    for label in summary.labels:
        line = [GridCell(label)]
        for t in summary.tables:
            c = summary.cells[(label, t.name)]
            line.append(GridCell(_pair(c.score, c.norm), c.marks))
            line.append(GridCell(_pair(c.cache, c.cache_rel, 0)))
        body.append(line)
    return Grid(summary.name, summary.title, [(top, True), (second, False)], body, summary.notes.items,
                header_marks=header_marks)


def _parts(grid: Grid, wrap: int | None) -> list[list[int]]:
    n = len(grid.body[0]) if grid.body else len(grid.header[-1][0])
    data = list(range(1, n - grid.n_fixed))
    fixed = list(range(n - grid.n_fixed, n))
    if not wrap or len(data) <= wrap:
        return [[0] + data + fixed]
    chunks = [data[i:i + wrap] for i in range(0, len(data), wrap)] or [[]]
    chunks[-1] = chunks[-1] + fixed
    return [[0] + c for c in chunks]


# ---- Markdown ------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_cell(cell: GridCell) -> str:
    text = _md_escape(cell.text)
    if cell.highlight:
        text = f"**{text}**"
    if cell.marks:
        text += f"<sup>{','.join(cell.marks)}</sup>"
    return text


def to_markdown(grid: Grid, wrap: int | None = 12, level: int = 3) -> str:
    out = [f"{'#' * level} {grid.title}", ""]
    for part in _parts(grid, wrap):
        rows = []
        for texts, merge in grid.header:
            line = []
            for k, j in enumerate(part):
                text = texts[j]
                if merge and k > 0 and j - 1 in part and part[k - 1] == j - 1 and texts[j - 1] == text:
                    text = ""
                line.append(f"*{_md_escape(text)}*" if merge and text else _md_escape(text))
            rows.append(line)
        last = rows[-1]
        for k, j in enumerate(part):
            if grid.header_marks.get(j):
                last[k] += f"<sup>{','.join(grid.header_marks[j])}</sup>"
        header, extra = rows[-1], rows[:-1]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join([":---"] + ["---:"] * (len(part) - 1)) + "|")
        for line in extra:  # category row: first body line, as in the paper's layout
            out.append("| " + " | ".join(line) + " |")
        for body_line in grid.body:
            out.append("| " + " | ".join(_md_cell(body_line[j]) for j in part) + " |")
        out.append("")
    for marker, text in grid.notes:
        out.append(f"- <sup>{marker}</sup> {_md_escape(text)}")
    out.append("")
    return "\n".join(out)


# ---- LaTeX ---------------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "--", "†": r"$^\dagger$",
        "‡": r"$^\ddagger$", "§": r"\S{}", "γ": r"$\gamma$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


_TEX_MARK = {"†": r"$\dagger$", "‡": r"$\ddagger$", "§": r"\S{}"}


def _tex_mark(m: str) -> str:
    return _TEX_MARK.get(m, tex_escape(m))


def _tex_marks(marks: list[str]) -> str:
    return r"\textsuperscript{" + ",".join(_tex_mark(m) for m in marks) + "}" if marks else ""


def to_latex(grid: Grid, wrap: int | None = 12) -> str:
    """A ``table`` environment per part (booktabs; shaded cells need ``\\usepackage[table]{xcolor}``)."""
    out = [f"% {grid.name}: generated by `python -m harness report`; needs \\usepackage{{booktabs}} "
           "and \\usepackage[table]{xcolor}"]
    parts = _parts(grid, wrap)
    for p, part in enumerate(parts):
        out += [r"\begin{table}[t]", r"\centering", r"\scriptsize",
                r"\caption{" + tex_escape(grid.title) + (f" (part {p + 1} of {len(parts)})" if len(parts) > 1 else "")
                + "}", r"\begin{tabular}{l" + "c" * (len(part) - 1) + "}", r"\toprule"]
        for texts, merge in grid.header:
            cells, rules = [], []
            k = 0
            while k < len(part):
                j = part[k]
                text = texts[j]
                span = 1
                if merge and k > 0:
                    while k + span < len(part) and texts[part[k + span]] == text and part[k + span] == j + span:
                        span += 1
                marks = "" if merge else _tex_marks(grid.header_marks.get(j, []))
                if span > 1:
                    cells.append(r"\multicolumn{" + str(span) + "}{c}{" + tex_escape(text) + "}")
                else:
                    cells.append(tex_escape(text) + marks)
                if merge and text and k > 0:
                    rules.append(rf"\cmidrule(lr){{{k + 1}-{k + span}}}")
                k += span
            out.append(" & ".join(cells) + r" \\")
            if rules:
                out.append(" ".join(rules))
        out.append(r"\midrule")
        for line in grid.body:
            cells = []
            for j in part:
                c = line[j]
                text = tex_escape(c.text) + _tex_marks(c.marks)
                cells.append((r"\cellcolor{gray!25}" + text) if c.highlight else text)
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if p == len(parts) - 1 and grid.notes:
            out.append(r"\par\smallskip\parbox{\linewidth}{\tiny")
            out += [r"\textsuperscript{" + _tex_mark(m) + "}" + tex_escape(t) + r"\\" for m, t in grid.notes]
            out.append("}")
        out += [r"\end{table}", ""]
    return "\n".join(out)


# ---- CSV -----------------------------------------------------------------------------------------

def _r(x, digits: int = 6):
    return "" if x is None else round(float(x), digits)


def table_csv(table: Table) -> str:
    """One line per row: per column ``<key>`` (score x 100), ``<key>_norm``, ``<key>_n``,
    ``<key>_missing`` (reason), then the overall numbers (both normalisation conventions)."""
    fields = ["row", "run_dir", "policy", "budget", "model"]
    for c in table.columns:
        fields += [c.key, f"{c.key}_norm", f"{c.key}_n", f"{c.key}_cache_logical", f"{c.key}_missing"]
    fields += ["all", "all_norm", "all_norm_mean_of_ratios", "all_norm_ratio_of_means", "test_norm",
               "cache_logical", "cache_logical_rel", "cache_physical", "cache_physical_rel", "n_samples",
               "fitted_tasks", "averaged_columns"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    averaged = ";".join(table.columns[j].key for j in table.common)
    for row in table.rows:
        run = row.run
        line = {"row": row.label, "run_dir": str(run.path), "policy": run.policy,
                "budget": "" if run.budget is None else run.budget, "model": run.model}
        for j, (c, cell) in enumerate(zip(table.columns, row.cells)):
            missing = cell.missing or ""
            if cell.detail:
                missing += f": {cell.detail}"
            line.update({c.key: _r(cell.score), f"{c.key}_norm": _r(cell.norm), f"{c.key}_n": cell.n,
                         f"{c.key}_cache_logical": _r(cell.cache_logical), f"{c.key}_missing": missing})
        line.update({"all": _r(row.all_score), "all_norm": _r(row.norm_all),
                     "all_norm_mean_of_ratios": _r(row.norm_mor),
                     "all_norm_ratio_of_means": _r(row.norm_rom), "test_norm": _r(row.test_norm),
                     "cache_logical": _r(row.cache_logical), "cache_logical_rel": _r(row.cache_logical_rel),
                     "cache_physical": _r(row.cache_physical), "cache_physical_rel": _r(row.cache_physical_rel),
                     "n_samples": row.n_samples if row.all_score is not None else "",
                     "fitted_tasks": ";".join(table.columns[j].key for j in sorted(row.fitted)),
                     "averaged_columns": averaged})
        writer.writerow(line)
    return buf.getvalue()


def summary_csv(summary: Summary) -> str:
    fields = ["row"]
    for t in summary.tables:
        fields += [f"{t.suite}", f"{t.suite}_norm", f"{t.suite}_cache_logical", f"{t.suite}_cache_logical_rel"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for label in summary.labels:
        line = {"row": label}
        for t in summary.tables:
            c = summary.cells[(label, t.name)]
            line.update({t.suite: _r(c.score), f"{t.suite}_norm": _r(c.norm), f"{t.suite}_cache_logical": _r(c.cache),
                         f"{t.suite}_cache_logical_rel": _r(c.cache_rel)})
        writer.writerow(line)
    return buf.getvalue()
