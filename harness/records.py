"""Run directories: ``config.json``, ``records.jsonl`` (appended per sample), ``metrics.json``.

Resume: finished samples are read back (a half-written last line is dropped and cut off the file
before anything is appended); nothing is written twice. Distributed ranks append to
``records.rank<R>.jsonl`` and rank 0 merges them into ``records.jsonl`` in sample order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORDS = "records.jsonl"


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Complete records of a jsonl file; with ``repair`` a torn last line is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def append_record(path: Path, record: dict) -> None:
    """Append one record as a single line and make it durable before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rank_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"records.rank{rank}.jsonl"


def finished_keys(run_dir: Path) -> set[tuple[str, str]]:
    """``(task, id)`` of every sample already recorded in the run (merged file and rank files)."""
    keys = set()
    for path in [run_dir / RECORDS, *sorted(run_dir.glob("records.rank*.jsonl"))]:
        keys.update((r["task"], r["id"]) for r in read_records(path, repair=True))
    return keys


def merge_rank_files(run_dir: Path) -> list[dict]:
    """Fold rank files into ``records.jsonl`` sorted by sample index; return all records."""
    merged = {(r["task"], r["id"]): r for r in read_records(run_dir / RECORDS)}
    parts = sorted(run_dir.glob("records.rank*.jsonl"))
    for part in parts:
        for r in read_records(part):
            merged.setdefault((r["task"], r["id"]), r)
    records = sorted(merged.values(), key=lambda r: r["index"])
    if parts:
        tmp = run_dir / (RECORDS + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        tmp.replace(run_dir / RECORDS)
        for part in parts:
            part.unlink()
    return records
