"""Cells of a table over the SAME samples: one (row, column) cell = the row's records that fall in the
column (a task, a context length), compared with the full-cache row's records of that column.

A sample is ``(task, id, data source)``: two runs share it only when they answered the same prompt
from the same data (official vs generated data with equal ids are different samples).

Sample-set rules (``samples``):

- ``strict`` (default): a cell is shown only when its row answered exactly the reference row's
  samples of that column (the full-cache row; without one, the first row that has the column);
  otherwise it is missing with the reason ("samples differ").
- ``common``: every cell of a column is computed on the samples common to all rows that ran the
  column; a footnote says how many samples that leaves.

Nothing is ever averaged over different samples. Scores are reported x 100 (as LongBench does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SAMPLE_MODES = ("strict", "common")

# missing-cell reasons (the footnote texts are built in tables.py)
NOT_RUN = "not run"
SAMPLES_DIFFER = "samples differ"
NO_COMMON = "no common samples"


def source_of(rec: dict) -> str:
    meta = rec.get("metadata") or {}
    if meta.get("source"):
        return str(meta["source"])
    if meta.get("generated") or rec.get("generated_data"):
        return "generated"
    return "unrecorded"


def sample_key(rec: dict) -> tuple[str, str, str]:
    return (str(rec["task"]), str(rec["id"]), source_of(rec))


def is_generated(rec: dict) -> bool:
    meta = rec.get("metadata") or {}
    return bool(meta.get("generated") or meta.get("source") == "generated" or rec.get("generated_data"))


@dataclass
class Cell:
    """Aggregates of one row's records in one column; ``missing`` holds the reason when not shown."""

    n: int = 0
    score: float | None = None  # mean score x 100
    norm: float | None = None  # score / full-cache score on the same samples
    cache_logical: float | None = None  # mean over samples of the mean over evicting layers
    cache_physical: float | None = None
    prompt_tokens: float | None = None
    missing: str | None = None
    detail: str = ""  # e.g. "5 samples vs 15 in the reference row"
    norm_missing: str | None = None  # why ``norm`` is None although the cell is shown
    restricted_from: int | None = None  # ``common`` mode: the row had this many samples before


def aggregate(records: list[dict]) -> Cell:
    n = len(records)
    cache = [r.get("cache") or {} for r in records]

    def mean(values):
        values = [float(v) for v in values if v is not None]
        return sum(values) / len(values) if len(values) == n and n else None

    return Cell(
        n=n,
        score=100.0 * sum(r["score"] for r in records) / n,
        cache_logical=mean(c.get("logical_mean") for c in cache),
        cache_physical=mean(c.get("physical_mean") for c in cache),
        prompt_tokens=mean(r.get("input_tokens") for r in records),
    )


def column_cells(rows: list[list[dict]], select: Callable[[dict], bool], full_index: int | None,
                 samples: str = "strict") -> list[Cell]:
    """One cell per row: ``rows[i]`` are row i's records, ``select`` picks the column's records,
    ``full_index`` is the full-cache row (the normalisation reference) or None."""
    picked = [{sample_key(r): r for r in recs if select(r)} for recs in rows]
    present = [i for i, p in enumerate(picked) if p]
    cells: list[Cell] = []
    if samples == "common":
        common = set.intersection(*(set(picked[i]) for i in present)) if present else set()
        for p in picked:
            if not p:
                cells.append(Cell(missing=NOT_RUN))
            elif not common:
                cells.append(Cell(n=len(p), missing=NO_COMMON))
            else:
                cell = aggregate([p[k] for k in sorted(common)])
                if len(p) > len(common):
                    cell.restricted_from = len(p)
                cells.append(cell)
    else:
        ref = full_index if full_index is not None and picked[full_index] else (present[0] if present else None)
        for i, p in enumerate(picked):
            if not p:
                cells.append(Cell(missing=NOT_RUN))
            elif set(p) != set(picked[ref]):
                n_common = len(set(p) & set(picked[ref]))
                cells.append(Cell(n=len(p), missing=SAMPLES_DIFFER,
                                  detail=f"{len(p)} samples vs {len(picked[ref])} in the reference row, "
                                         f"{n_common} in common"))
            else:
                cells.append(aggregate(list(p.values())))
    full = cells[full_index] if full_index is not None else None
    for cell in cells:
        if cell.missing:
            continue
        if full is None:
            cell.norm_missing = "no full-cache run"
        elif full.missing:
            cell.norm_missing = "full cache not on these samples"
        elif full.score == 0:
            cell.norm_missing = "full cache scores 0"
        else:
            cell.norm = cell.score / full.score
    return cells
