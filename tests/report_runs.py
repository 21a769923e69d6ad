"""Fake run directories and table readers shared by the `report` tests (test_report_*.py)."""

import argparse
import csv
import json
import random
import re

from harness.report import command

TASKS = {  # task -> (paper id, number of samples, data source)
    "qa": ("1-1", 4, "hub"),
    "sum": ("3-1", 3, "hub"),
    "key": ("5-1", 2, "generated"),
}


# ---- fake run directories -------------------------------------------------------------------------

def record(task, sid, score, logical, physical, tokens, task_id, source="hub", metadata=None):
    meta = {"source": source, "generated": source == "generated", **(metadata or {})}
    return {"index": 0, "task": task, "task_id": task_id, "id": sid, "prediction": "x", "answers": ["x"],
            "score": score, "prompt_tokens": tokens, "input_tokens": tokens, "new_tokens": 3,
            "generated_data": source == "generated", "budget": None,
            "cache": {"physical_mean": physical, "logical_mean": logical,
                      "layers": [{"layer": 0, "physical": physical, "logical": logical, "mean_age": tokens / 3},
                                 {"layer": 1, "physical": physical, "logical": logical, "mean_age": tokens / 2}]},
            "metadata": meta, "timing": {}}


def write_run(path, policy, records, suite="longbench", model="smollm2", cache_size=None, policy_info=None,
              complete=True):
    path.mkdir(parents=True)
    config = {"run": {"policy": policy, "suite": suite, "cache_size": cache_size, "cache_mode": "original",
                      "n_up": 512, "chat_template": "auto", "dtype": "float32", "seed": 0, "tasks": None},
              "model": {"name": model, "gguf_file": None, "location": "/somewhere", "chat_template": True},
              "max_length_used": 8192, "suite_generated": False,
              "policy": {"name": policy, **(policy_info or {})}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "metrics.json").write_text(json.dumps({"complete": complete}))
    return path


def make_records(seed, keep=None, tasks=TASKS, zero=()):
    """One record per sample of ``tasks``; ``keep[task]`` = sample indices to keep (default all)."""
    rng = random.Random(seed)
    out = []
    for task, (tid, n, source) in tasks.items():
        for i in range(n):
            score = 0.0 if task in zero else round(rng.random(), 3)
            tokens = 1000 + 100 * i
            logical = round(tokens * rng.uniform(0.2, 1.0), 1)
            physical = round(logical + rng.uniform(0, 50), 1)
            if keep is None or i in keep.get(task, range(n)):
                out.append(record(task, f"{task}-{i}", score, logical, physical, tokens, tid, source))
    return out


def full_records(seed=0, **kw):
    recs = make_records(seed, **kw)
    for r in recs:  # the full cache keeps every token
        r["cache"]["logical_mean"] = r["cache"]["physical_mean"] = r["input_tokens"] + 3
    return recs


# ---- running the command ----------------------------------------------------------------------------

def report(*argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args([str(a) for a in argv]))


def md_table(path):
    """{row label: [cell texts]} and the header of a one-part Markdown table (markers stripped)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ")]
    strip = lambda s: re.sub(r"<sup>.*?</sup>", "", s).replace("**", "").strip()  # noqa: E731
    header = [strip(c) for c in lines[0].strip("| ").split(" | ")]
    rows = {}
    for ln in lines[1:]:
        cells = [strip(c) for c in ln[2:-2].split(" | ")]
        rows[cells[0]] = cells[1:]
    return header[1:], rows


def csv_rows(path):
    with open(path, newline="") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def by_key(recs):
    return {(r["task"], r["id"]): r for r in recs}


def expected_cells(recs, full, tasks, keys=None):
    """Independent per-task numbers: score x100, normalised, logical and physical cache."""
    out = {}
    for task in tasks:
        sel = [r for r in recs if r["task"] == task and (keys is None or (r["task"], r["id"]) in keys)]
        fsel = [r for r in full if r["task"] == task and (keys is None or (r["task"], r["id"]) in keys)]
        s = 100 * mean(r["score"] for r in sel)
        fs = 100 * mean(r["score"] for r in fsel)
        out[task] = {"score": s, "norm": s / fs if fs else None,
                     "logical": mean(r["cache"]["logical_mean"] for r in sel),
                     "physical": mean(r["cache"]["physical_mean"] for r in sel), "n": len(sel)}
    return out


def three_run_dirs(tmp_path):
    """Run directories of a full cache, h2o and a NAMM (the ``three_runs`` fixture of conftest.py)."""
    full = full_records(0)
    h2o = make_records(1)
    namm = make_records(2)
    dirs = {
        "full": write_run(tmp_path / "full", "full", full),
        "h2o": write_run(tmp_path / "h2o", "h2o", h2o, cache_size=1024, policy_info={"budget": 1024}),
        "namm": write_run(tmp_path / "namm", "namm_bam", namm, policy_info={
            "architecture": "bam", "checkpoint": None,
            "fitted_on": {"suite": "longbench", "tasks": ["qa"], "stage": 2}}),
    }
    return dirs, {"full": full, "h2o": h2o, "namm": namm}
