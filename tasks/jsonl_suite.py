"""Bring your own data: the ``jsonl`` suite (kvpress-style normalised records).

``python -m harness run --suite jsonl --data PATH [--metric exact|contains|first_int|f1|rouge_l]``
where PATH is a ``.jsonl`` or ``.parquet`` file, or a folder of them (read in name order). Record:

=================  ========  =====================================================================
field              required  meaning
=================  ========  =====================================================================
``context``        yes       string; the long part (the cache may evict it, like every prompt token)
``question``       yes       string, appended right after the context
``answer_prefix``  yes       string (may be empty), appended after the question; with a chat
                             template it opens the assistant's turn
``answer``         yes       string or non-empty list of strings (a prediction scores the max)
``id``             no        string or integer, unique within its task (default: file stem-line)
``task``           no        group name for metrics and tables (default: the file's stem)
``max_new_tokens`` no        positive integer (default: ``--suite-arg max_new_tokens``, 64)
``metric``         no        one of :data:`tasks.user_metrics.METRICS` (default: ``--metric``)
=================  ========  =====================================================================

The fields are concatenated exactly (``context + question + answer_prefix``), as kvpress does:
put separators such as ``"\\n"`` in the fields. Other fields are ignored. Every record is checked
when the suite is built: a bad record is one line naming ``file:line`` (``file:row N`` for
parquet) before anything runs. Records carry ``source: user``.
"""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Iterator

from tasks import register_suite
from tasks.base import DataError, Sample, Suite
from tasks.data import read_jsonl
from tasks.user_metrics import METRICS, score_user

REQUIRED = ("context", "question", "answer_prefix", "answer")
EXTENSIONS = (".jsonl", ".parquet")


def data_files(path: Path) -> list[Path]:
    """The data files at ``path`` (a file, or the ``.jsonl``/``.parquet`` files of a folder)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in EXTENSIONS)
        if not files:
            raise DataError(f"--data {path}: the folder holds no .jsonl or .parquet file")
        return files
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    if path.suffix not in EXTENSIONS:
        raise DataError(f"--data {path}: expected a .jsonl or .parquet file (or a folder of them)")
    return [path]


def check_record(rec: dict, where: str) -> None:
    """Field presence and types of one record; :class:`DataError` naming ``where`` otherwise."""
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise DataError(f"{where}: record lacks field(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
    for key in ("context", "question", "answer_prefix"):
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: {key} must be a string, got {type(rec[key]).__name__}")
    answer = rec["answer"]
    if isinstance(answer, (list, tuple)):
        if not answer or not all(isinstance(a, str) for a in answer):
            raise DataError(f"{where}: answer must be a string or a non-empty list of strings")
    elif not isinstance(answer, str):
        raise DataError(f"{where}: answer must be a string or a non-empty list of strings, got {type(answer).__name__}")
    if rec.get("id") is not None and (isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, Integral))):
        raise DataError(f"{where}: id must be a string or an integer")
    if rec.get("task") is not None and (not isinstance(rec["task"], str) or not rec["task"]):
        raise DataError(f"{where}: task must be a non-empty string")
    mnt = rec.get("max_new_tokens")
    if mnt is not None and (isinstance(mnt, bool) or not isinstance(mnt, Integral) or mnt < 1):
        raise DataError(f"{where}: max_new_tokens must be a positive integer")
    if rec.get("metric") is not None and rec["metric"] not in METRICS:
        raise DataError(f"{where}: unknown metric {rec['metric']!r}; choose one of {', '.join(METRICS)}")


def read_file(path: Path) -> list[tuple[str, dict]]:
    """``[(where, record)]`` of one data file, every record checked."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            out = [(f"{path}:row {i}", rec) for i, rec in enumerate(rows)]
            for where, rec in out:
                check_record(rec, where)
        else:
            out = []

            def keep(rec, where):
                check_record(rec, where)
                out.append((where, rec))

            read_jsonl(path, validate=keep)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8 JSON lines") from None
    except Exception as err:  # OSError, pyarrow's errors: the file cannot be read as data
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise DataError(f"{path}: cannot read the file ({reason})") from None
    if not out:
        raise DataError(f"{path}: no records in the file; give one JSON object per line with "
                        f"{', '.join(REQUIRED)}")
    return out


@register_suite("jsonl")
class JsonlSuite(Suite):
    """Your own long-context records (``--data PATH``), scored by ``--metric``."""

    def __init__(self, data=None, metric="contains", max_new_tokens=64):
        if data in (None, ""):
            raise ValueError("suite jsonl needs --data PATH (a .jsonl or .parquet file, or a folder of them)")
        if metric not in METRICS:
            raise ValueError(f"unknown --metric {metric!r}; choose one of {', '.join(METRICS)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"jsonl max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.metric = metric
        self.max_new_tokens = max_new_tokens
        self.by_task: dict[str, list[Sample]] = {}
        self._ids: dict[str, set[str]] = {}  # task -> ids seen (ids are unique within a task)
        for path in data_files(Path(data)):
            for where, rec in read_file(path):
                self._add(path, where, rec)
        self.tasks = tuple(self.by_task)
        self.task_ids = {t: t for t in self.tasks}

    def _add(self, path: Path, where: str, rec: dict) -> None:
        task = rec.get("task") or path.stem
        line = where.rsplit(":", 1)[1].removeprefix("row ")
        sid = str(rec["id"]) if rec.get("id") is not None else f"{path.stem}-{line}"
        ids = self._ids.setdefault(task, set())
        if sid in ids:
            raise DataError(f"{where}: id {sid!r} appears twice in task {task!r}; ids must be unique within a task")
        answers = [rec["answer"]] if isinstance(rec["answer"], str) else list(rec["answer"])
        metric = rec.get("metric") or self.metric
        ids.add(sid)
        self.by_task.setdefault(task, []).append(Sample(
            id=sid, task=task, prompt=rec["context"] + rec["question"], answer_prefix=rec["answer_prefix"],
            question=rec["question"],
            answers=answers, max_new_tokens=int(rec.get("max_new_tokens") or self.max_new_tokens),
            metadata={"source": "user", "generated": False, "metric": metric, "file": str(path), "where": where},
        ))

    def samples(self, task: str, tokenizer, max_length: int, seed: int = 0) -> Iterator[Sample]:
        if task not in self.by_task:
            raise KeyError(f"unknown jsonl task {task!r}; tasks in the data: {', '.join(self.tasks)}")
        return iter(self.by_task[task])

    def score(self, sample: Sample, prediction: str) -> float:
        return score_user(sample.metadata["metric"], prediction, sample.answers)
