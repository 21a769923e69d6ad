"""Suites of official benchmark tasks read from ``--data-dir`` or the hub (LongBench, ChouBun), with
optional generators for the tasks whose construction recipe is public."""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Iterator

from tasks.base import DataError, Sample, Suite, TaskUnavailable, question_after
from tasks.data import find_file, hub_available, load_hub, read_jsonl

SOURCES = ("auto", "hub", "data-dir", "generated")


def _is_str_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def validate_record(rec: dict, where: str, fields: tuple[str, ...]) -> None:
    """Types of the official fields present in ``rec`` (``where`` names the file:line or hub row)."""
    missing = [k for k in fields if k not in rec]
    if missing:
        raise DataError(f"{where}: record lacks field(s) {', '.join(missing)}; expected the official fields "
                        f"{', '.join(fields)}")
    problems = []
    for key in ("input", "context"):
        if key in rec and not isinstance(rec[key], str):
            problems.append(f"{key} must be a string")
    if "answers" in rec and (not _is_str_list(rec["answers"]) or not rec["answers"]):
        problems.append("answers must be a non-empty list of strings")
    if rec.get("all_classes") is not None and not _is_str_list(rec["all_classes"]):
        problems.append("all_classes must be null or a list of strings")
    if rec.get("length") is not None and (isinstance(rec["length"], bool) or not isinstance(rec["length"], Real)):
        problems.append("length must be a number")
    for key in ("dataset", "language", "_id"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            problems.append(f"{key} must be a string")
    if problems:
        raise DataError(f"{where}: {'; '.join(problems)}")


def read_records(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """Records of a JSON-lines file in the official format; a bad line → :class:`DataError` (file:line)."""
    records = read_jsonl(path, fields, validate=lambda rec, where: validate_record(rec, where, fields))
    if not records:
        raise DataError(f"{path}:1: no records in the file")
    return records


class OfficialDataSuite(Suite):
    """A suite of official tasks read from ``--data-dir`` or the hub, with optional generators.

    Subclasses set ``benchmark`` (the scoring prefix), ``prompts``, ``max_new_tokens``, ``no_chat``,
    ``hub_repo``, ``fields`` and ``format_hint``; they may generate some tasks (``generated_tasks``
    with :meth:`generated_samples`).
    """

    benchmark = ""
    prompts: dict[str, str] = {}
    max_new_tokens: dict[str, int] = {}
    no_chat: frozenset = frozenset()
    hub_repo = ""
    fields: tuple[str, ...] = ()
    hub_fields: tuple[str, ...] = ()
    generated_tasks: tuple[str, ...] = ()
    format_hint = ""

    def __init__(self, data_dir=None, source="auto"):
        if source not in SOURCES:
            raise ValueError(f"{self.benchmark} source must be one of {', '.join(SOURCES)}, got {source!r}")
        if source == "generated" and not self.generated_tasks:
            raise ValueError(f"{self.benchmark} has no generated tasks; source must be auto, hub or data-dir")
        self.data_dir = None if data_dir in (None, "") else Path(data_dir)
        self.source = source
        self._records: dict[str, tuple[str, list[dict]]] = {}

    # -- loading ---------------------------------------------------------------------------------

    def no_data(self, task: str) -> TaskUnavailable:
        return TaskUnavailable(f"{self.benchmark}/{task}: no data here; pass --data-dir DIR with {task}.jsonl "
                               f"({self.format_hint}) or run with hub access")

    def data_file(self, task: str) -> Path | None:
        return find_file(self.data_dir, [f"{task}.jsonl", f"data/{task}.jsonl"])

    def load(self, task: str) -> tuple[str, list[dict]] | None:
        """``(source, records)`` of ``task`` from the configured sources, or ``None`` when none has it
        (``source="data-dir"``/``"hub"`` raise :class:`TaskUnavailable` instead)."""
        if task in self._records:
            return self._records[task]
        found = None
        if self.source in ("auto", "data-dir"):
            path = self.data_file(task)
            if path is not None:
                found = ("data-dir", read_records(path, self.fields))
            elif self.source == "data-dir":
                where = f"in {self.data_dir}" if self.data_dir else "(no --data-dir given)"
                raise TaskUnavailable(f"{self.benchmark}/{task}: no {task}.jsonl {where}; "
                                      f"pass --data-dir DIR with {task}.jsonl ({self.format_hint})")
        if found is None and self.source in ("auto", "hub"):
            if self.source == "hub" or hub_available(self.hub_repo):
                rows = load_hub(self.hub_repo, self.hub_fields, name=task, split="test")
                if rows is not None:
                    for i, rec in enumerate(rows):
                        validate_record(rec, f"hub dataset {self.hub_repo} ({task}) row {i}", self.hub_fields)
                    found = ("hub", rows)
            if found is None and self.source == "hub":
                raise TaskUnavailable(f"{self.benchmark}/{task}: hub dataset {self.hub_repo} ({task}) is not "
                                      "reachable and not cached; run with hub access or pass --data-dir DIR")
        if found is not None:
            self._records[task] = found
        return found

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        if task not in self.prompts:  # raised at the call, not at the first next()
            raise KeyError(f"unknown {self.benchmark} task {task!r}; tasks: {', '.join(self.tasks)}")
        if self.source != "generated":
            found = self.load(task)
            if found is not None:
                return self.record_samples(task, *found)
        if task in self.generated_tasks:
            return self.generated_samples(task, tokenizer, max_length, seed)
        if self.source == "generated":
            raise TaskUnavailable(f"{self.benchmark}/{task}: no generator here (generated: "
                                  f"{', '.join(self.generated_tasks)}); pass --data-dir DIR with {task}.jsonl "
                                  f"({self.format_hint}) or run with hub access")
        raise self.no_data(task)

    def generated_samples(self, task: str, tokenizer, max_length: int, seed: int) -> Iterator[Sample]:
        raise self.no_data(task)

    # -- samples from records ------------------------------------------------------------------

    def prompt(self, task: str, record: dict) -> str:
        """The official prompt: the task template formatted with the record's fields."""
        return self.prompts[task].format(**record)

    def length_unit(self, task: str, record: dict) -> str | None:
        return None

    def record_samples(self, task: str, source: str, records: list[dict]) -> Iterator[Sample]:
        seen: set[str] = set()
        for i, rec in enumerate(records):
            sid = str(rec.get("_id") or f"{task}-{i}")
            if sid in seen:
                sid = f"{sid}-{i}"
            seen.add(sid)
            classes = rec.get("all_classes")
            prompt = self.prompt(task, rec)
            yield Sample(
                id=sid,
                task=task,
                prompt=prompt,
                question=question_after(prompt, rec.get("context")),
                answers=list(rec["answers"]),
                max_new_tokens=self.max_new_tokens[task],
                metadata={
                    "source": source,
                    "generated": False,
                    "length": rec.get("length"),
                    "length_unit": self.length_unit(task, rec),
                    "language": rec.get("language"),
                    "dataset": rec.get("dataset"),
                },
                all_classes=list(classes) if classes is not None else None,
                chat=task not in self.no_chat,
            )

    def score(self, sample: Sample, prediction: str) -> float:
        from tasks import scoring

        return scoring.score(f"{self.benchmark}/{sample.task}", prediction, sample.answers, sample.all_classes)


# --------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------
