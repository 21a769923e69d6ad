"""RULER ``prepare.py`` output read from ``--data-dir`` (``metadata["source"] == "data-dir"``).

Layouts (``<split>`` is ``validation.jsonl``, RULER's default ``--subset``, or ``test.jsonl``):

* ``<data-dir>/<length>/<task>/<split>``: one ``prepare.py --max_seq_length <length>`` run per
  length (``--save_dir <data-dir>/<length>``, as kvpress's ``generate.sh`` lays them out); each file
  replaces the generated samples of that (task, length) when ``length`` is one of the suite's
  ``lengths`` and fits the run;
* ``<data-dir>/<task>/<split>``: a single ``prepare.py`` run (``--save_dir <data-dir>``): it replaces
  every generated sample of the task; its target length is unknown, so each sample's ``length`` is
  the record's own (RULER: its tokens plus ``tokens_to_generate`` in RULER's tokenizer).

Records are read as RULER writes them (``index``, ``input``, ``outputs``, ``length``, and
``answer_prefix`` in current RULER; older RULER left the prefix inside ``input``, it is cut off then
the way RULER cuts it). Prepare with ``--model_template_type base``: the runner applies the model's
chat template itself. ``question`` is split off with kvpress's pattern (``""`` when it is absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from tasks.base import DataError, Sample
from tasks.data import read_jsonl
from tasks.ruler import templates

SPLITS = ("validation.jsonl", "test.jsonl")


def _first(folder: Path) -> Path | None:
    return next((folder / s for s in SPLITS if (folder / s).is_file()), None)


def length_file(data_dir, length: int, task: str) -> Path | None:
    """``<data-dir>/<length>/<task>/<split>`` when it exists."""
    return _first(Path(data_dir) / str(length) / task) if data_dir else None


def flat_file(data_dir, task: str) -> Path | None:
    """``<data-dir>/<task>/<split>`` when it exists."""
    return _first(Path(data_dir) / task) if data_dir else None


def _validate(rec: dict, where: str) -> None:
    problems = []
    if not isinstance(rec["input"], str):
        problems.append("input must be a string")
    outs = rec["outputs"]
    if not isinstance(outs, list) or not outs or not all(isinstance(o, str) for o in outs):
        problems.append("outputs must be a non-empty list of strings")
    if "answer_prefix" in rec and not isinstance(rec["answer_prefix"], str):
        problems.append("answer_prefix must be a string")
    if problems:
        raise DataError(f"{where}: {'; '.join(problems)} (RULER prepare.py records)")


def read_prepared(path: Path, task: str, length: int | None, n_samples: int) -> Iterator[Sample]:
    """The first ``n_samples`` records of ``path`` as samples of ``task`` (``length``: the folder's
    target length, ``None`` for the single-run layout); :class:`DataError` names a bad line."""
    records = read_jsonl(path, ("input", "outputs"), validate=_validate)
    if not records:
        raise DataError(f"{path}:1: no records in the file")
    return _samples(records[:n_samples], path, task, length)


def _samples(records: list[dict], path: Path, task: str, length: int | None) -> Iterator[Sample]:
    kind = templates.kind(task)
    for i, rec in enumerate(records):
        if "answer_prefix" in rec:
            text, prefix = rec["input"], rec["answer_prefix"]
        else:
            text, prefix = templates.split_answer_prefix(kind, rec["input"])
        prompt, question, prefix = templates.finish(kind, text, prefix)
        yield Sample(
            id=f"{task}-{length}-{i}" if length is not None else f"{task}-data-{i}",
            task=task,
            prompt=prompt,
            answers=list(rec["outputs"]),
            max_new_tokens=templates.max_new_tokens(task),
            metadata={
                "source": "data-dir",
                "generated": False,
                "length": length if length is not None else rec.get("length"),
                "ruler_length": rec.get("length"),
                "ruler_index": rec.get("index"),
                "file": str(path),
                "config": dict(templates.CONFIGS[task]),
            },
            chat=True,
            answer_prefix=prefix,
            question=question,
        )
