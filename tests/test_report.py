"""`python -m harness report`: tables from small fake run directories, every number checked against
values computed here independently (normalisation on the same samples, averages over the tasks
present in every row, Test tasks, cache sizes), missing cells, paper layout, bad input."""

import argparse
import csv
import json
import random
import re

import pytest

from harness.errors import UsageError
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


@pytest.fixture
def three_runs(tmp_path):
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


# ---- numbers --------------------------------------------------------------------------------------

def test_every_number_matches_independent_computation(tmp_path, three_runs):
    dirs, recs = three_runs
    out = tmp_path / "out"
    assert report(*dirs.values(), "--out", out, "--no-figures") == 0
    header, rows = md_table(out / "tables" / "longbench.md")
    table = csv_rows(out / "tables" / "longbench.csv")
    tasks = ["qa", "sum", "key"]
    assert header[:3] == ["1-1 (qa)", "3-1 (sum)", "5-1 (key)"]
    assert header[3:] == ["All tasks", "Test tasks", "Cache size", "Physical cache", "Samples"]
    labels = {"full": "Full cache", "h2o": "H2O", "namm": "NAMM (BAM, s2)"}
    assert list(rows)[1:] == list(labels.values())  # first body line: the category row
    full_cells = expected_cells(recs["full"], recs["full"], tasks)
    full_all = mean(full_cells[t]["score"] for t in tasks)
    full_logical = mean(full_cells[t]["logical"] for t in tasks)
    full_physical = mean(full_cells[t]["physical"] for t in tasks)
    for name, label in labels.items():
        cells = expected_cells(recs[name], recs["full"], tasks)
        md, line = rows[label], table[label]
        for k, t in enumerate(tasks):
            c = cells[t]
            assert md[k] == f"{c['score']:.2f} ({c['norm']:.2f})"
            assert float(line[t]) == pytest.approx(c["score"], abs=1e-5)
            assert float(line[f"{t}_norm"]) == pytest.approx(c["norm"], abs=1e-6)
            assert int(line[f"{t}_n"]) == TASKS[t][1]
            assert float(line[f"{t}_cache_logical"]) == pytest.approx(c["logical"], abs=1e-5)
        all_score = mean(cells[t]["score"] for t in tasks)
        mor = mean(cells[t]["norm"] for t in tasks)
        rom = all_score / full_all
        logical = mean(cells[t]["logical"] for t in tasks)
        physical = mean(cells[t]["physical"] for t in tasks)
        assert md[3] == f"{all_score:.2f} ({mor:.2f})"  # default: mean of per-task normalised scores
        assert float(line["all_norm_mean_of_ratios"]) == pytest.approx(mor, abs=1e-6)
        assert float(line["all_norm_ratio_of_means"]) == pytest.approx(rom, abs=1e-6)
        assert md[5] == f"{logical:.0f} ({logical / full_logical:.2f})"
        assert md[6] == f"{physical:.0f} ({physical / full_physical:.2f})"
        assert float(line["cache_logical_rel"]) == pytest.approx(logical / full_logical, abs=1e-6)
        assert md[7] == str(sum(TASKS[t][1] for t in tasks))
        if name == "namm":  # fitted on qa: Test tasks = mean normalised score on sum and key
            test = mean(cells[t]["norm"] for t in ("sum", "key"))
            assert md[4] == f"{test:.2f}"
            assert float(line["test_norm"]) == pytest.approx(test, abs=1e-6)
            assert line["fitted_tasks"] == "qa"
        else:
            assert md[4] == "N/A"
    assert rows["Full cache"][3].endswith("(1.00)")
    # the fitted task is highlighted (bold in Markdown, shaded in LaTeX)
    raw = (out / "tables" / "longbench.md").read_text()
    assert "| NAMM (BAM, s2) | **" in raw
    assert r"\cellcolor{gray!25}" in (out / "tables" / "longbench.tex").read_text()


def test_generated_task_marked_in_every_table(tmp_path, three_runs):
    dirs, _ = three_runs
    out = tmp_path / "out"
    report(*dirs.values(), "--out", out, "--no-figures")
    text = (out / "tables" / "longbench.md").read_text()
    assert "5-1 (key)<sup>†</sup>" in text and "1-1 (qa) |" in text  # only the generated task
    assert "<sup>†</sup> generated data" in text and "NOT the official" in text
    tex = (out / "tables" / "longbench.tex").read_text()
    assert r"5-1 (key)\textsuperscript{$\dagger$}" in tex


def test_task_not_run_is_missing_and_left_out_of_averages(tmp_path, three_runs):
    dirs, recs = three_runs
    l2 = [r for r in make_records(3) if r["task"] != "sum"]
    dirs["l2"] = write_run(tmp_path / "l2", "l2", l2, cache_size=1024)
    out = tmp_path / "out"
    report(*dirs.values(), "--out", out, "--no-figures")
    _, rows = md_table(out / "tables" / "longbench.md")
    table = csv_rows(out / "tables" / "longbench.csv")
    text = (out / "tables" / "longbench.md").read_text()
    assert rows["L2"][1] == "—"
    assert table["L2"]["sum"] == "" and table["L2"]["sum_missing"] == "not run"
    marker = re.search(r"\| L2 \| [^|]+ \| —<sup>(\w)</sup>", text).group(1)
    assert f"<sup>{marker}</sup> missing: this run has no samples" in text
    assert "over the 2 of 3 tasks present in every row; left out: 3-1 (sum)" in text
    common = ["qa", "key"]
    full_logical = mean(expected_cells(recs["full"], recs["full"], common)[t]["logical"] for t in common)
    for name, label in (("full", "Full cache"), ("h2o", "H2O"), ("l2", "L2")):
        cells = expected_cells(l2 if name == "l2" else recs[name], recs["full"], common)
        all_score = mean(cells[t]["score"] for t in common)
        mor = mean(cells[t]["norm"] for t in common)
        logical = mean(cells[t]["logical"] for t in common)
        assert rows[label][3] == f"{all_score:.2f} ({mor:.2f})"
        assert rows[label][5] == f"{logical:.0f} ({logical / full_logical:.2f})"
        assert table[label]["averaged_columns"] == "qa;key"


def test_different_samples_missing_in_strict_mode_and_common_mode(tmp_path, three_runs):
    dirs, recs = three_runs
    stream = make_records(4, keep={"qa": [0, 1, 3]})
    dirs["stream"] = write_run(tmp_path / "stream", "streaming", stream, cache_size=256)
    out = tmp_path / "strict"
    report(*dirs.values(), "--out", out, "--no-figures")
    _, rows = md_table(out / "tables" / "longbench.md")
    text = (out / "tables" / "longbench.md").read_text()
    assert rows["StreamingLLM"][0] == "—"
    assert "StreamingLLM / 1-1 (qa): 3 samples vs 4 in the reference row, 3 in common" in text
    assert "left out: 1-1 (qa)" in text
    strict_csv = csv_rows(out / "tables" / "longbench.csv")
    assert strict_csv["StreamingLLM"]["qa_missing"].startswith("samples differ")
    # other rows keep their qa cell on the full 4 samples
    cells = expected_cells(recs["h2o"], recs["full"], ["qa"])
    assert rows["H2O"][0] == f"{cells['qa']['score']:.2f} ({cells['qa']['norm']:.2f})"

    out = tmp_path / "common"
    report(*dirs.values(), "--out", out, "--no-figures", "--samples", "common")
    _, rows = md_table(out / "tables" / "longbench.md")
    table = csv_rows(out / "tables" / "longbench.csv")
    keys = {("qa", f"qa-{i}") for i in (0, 1, 3)} | {(r["task"], r["id"]) for r in recs["full"] if r["task"] != "qa"}
    tasks = ["qa", "sum", "key"]
    for name, label in (("full", "Full cache"), ("h2o", "H2O"), ("namm", "NAMM (BAM, s2)"), ("stream", "StreamingLLM")):
        cells = expected_cells(stream if name == "stream" else recs[name], recs["full"], tasks, keys)
        assert cells["qa"]["n"] == 3
        assert rows[label][0] == f"{cells['qa']['score']:.2f} ({cells['qa']['norm']:.2f})"
        assert int(table[label]["qa_n"]) == 3
        all_score, mor = mean(cells[t]["score"] for t in tasks), mean(cells[t]["norm"] for t in tasks)
        assert rows[label][3] == f"{all_score:.2f} ({mor:.2f})"
    assert "computed on the samples common to all rows" in (out / "tables" / "longbench.md").read_text()


def test_full_cache_scoring_zero_gives_no_ratio(tmp_path):
    full = full_records(0, zero=("sum",))
    h2o = make_records(1)
    out = tmp_path / "out"
    report(write_run(tmp_path / "full", "full", full), write_run(tmp_path / "h2o", "h2o", h2o, cache_size=64),
           "--out", out, "--no-figures")
    _, rows = md_table(out / "tables" / "longbench.md")
    text = (out / "tables" / "longbench.md").read_text()
    cells = expected_cells(h2o, full, ["qa", "sum", "key"])
    assert rows["H2O"][1] == f"{cells['sum']['score']:.2f} (—)"
    assert "no normalised score: full cache scores 0 on these samples" in text
    assert "the normalised mean leaves out 3-1 (sum)" in text
    all_score = mean(cells[t]["score"] for t in ("qa", "sum", "key"))
    mor = mean(cells[t]["norm"] for t in ("qa", "key"))
    assert rows["H2O"][3] == f"{all_score:.2f} ({mor:.2f})"


def test_no_full_cache_run_shows_scores_only(tmp_path):
    h2o = make_records(1)
    out = tmp_path / "out"
    report(write_run(tmp_path / "h2o", "h2o", h2o, cache_size=64), "--out", out, "--no-figures")
    _, rows = md_table(out / "tables" / "longbench.md")
    cells = expected_cells(h2o, h2o, ["qa", "sum", "key"])
    assert rows["H2O"][0] == f"{cells['qa']['score']:.2f}"
    assert "no full-cache run in this table" in (out / "tables" / "longbench.md").read_text()


def test_summary_across_suites_and_length_table(tmp_path, three_runs):
    dirs, recs = three_runs
    grid = {"passkey": ("NIAH.PassKey", 4, "generated")}

    def niah(seed, full=False):
        rng = random.Random(seed)
        out = []
        for length in (1024, 2048):
            for depth in (0.0, 0.5):
                tokens = length - 20
                logical = tokens + 3 if full else min(tokens, 512) + 3
                out.append(record("passkey", f"passkey-{length}-{depth}", float(rng.random() > 0.4), logical, logical,
                                  tokens, grid["passkey"][0], "generated", {"length": length, "depth": depth}))
        return out

    n_full, n_h2o = niah(10, full=True), niah(11)
    nf = write_run(tmp_path / "nfull", "full", n_full, suite="niah")
    nh = write_run(tmp_path / "nh2o", "h2o", n_h2o, suite="niah", cache_size=1024)
    out = tmp_path / "out"
    report(*dirs.values(), nf, nh, "--out", out, "--no-figures")
    summary = csv_rows(out / "tables" / "summary.csv")
    _, srows = md_table(out / "tables" / "summary.md")
    tasks = ["qa", "sum", "key"]
    fc = expected_cells(recs["full"], recs["full"], tasks)
    hc = expected_cells(recs["h2o"], recs["full"], tasks)
    lb = mean(hc[t]["score"] for t in tasks)
    lb_norm = mean(hc[t]["norm"] for t in tasks)
    lb_cache = mean(hc[t]["logical"] for t in tasks)
    lb_rel = lb_cache / mean(fc[t]["logical"] for t in tasks)
    ns = 100 * mean(r["score"] for r in n_h2o)
    ns_full = 100 * mean(r["score"] for r in n_full)
    ncache = mean(r["cache"]["logical_mean"] for r in n_h2o)
    nrel = ncache / mean(r["cache"]["logical_mean"] for r in n_full)
    assert float(summary["H2O"]["longbench"]) == pytest.approx(lb, abs=1e-5)
    assert float(summary["H2O"]["niah_norm"]) == pytest.approx(ns / ns_full, abs=1e-6)
    assert srows["H2O"] == [f"{lb:.2f} ({lb_norm:.2f})", f"{lb_cache:.0f} ({lb_rel:.2f})",
                            f"{ns:.2f} ({ns / ns_full:.2f})", f"{ncache:.0f} ({nrel:.2f})"]
    assert srows["NAMM (BAM, s2)"][2:] == ["—", "—"]  # no NIAH run of the NAMM
    assert "no run of this row on this suite" in (out / "tables" / "summary.md").read_text()
    # NIAH per context length (paper Table 18): all tasks pooled per length
    _, lrows = md_table(out / "tables" / "niah_by_length.md")
    for k, length in enumerate((1024, 2048)):
        s = 100 * mean(r["score"] for r in n_h2o if r["metadata"]["length"] == length)
        f = 100 * mean(r["score"] for r in n_full if r["metadata"]["length"] == length)
        assert lrows["H2O"][k] == (f"{s:.2f} ({s / f:.2f})" if f else f"{s:.2f} (—)")


def test_paper_layout(tmp_path, three_runs):
    dirs, recs = three_runs
    namm1 = make_records(5)
    dirs["namm1"] = write_run(tmp_path / "namm1", "namm_bam", namm1, policy_info={
        "architecture": "bam", "fitted_on": {"suite": "longbench", "tasks": ["qa"], "stage": 1}})
    out = tmp_path / "out"
    report(dirs["namm"], dirs["h2o"], dirs["namm1"], dirs["full"], "--out", out, "--no-figures", "--paper")
    header, rows = md_table(out / "tables" / "longbench.md")
    assert header[:3] == ["1-1", "3-1", "5-1"]
    assert header[3:] == ["All tasks", "Test tasks", "Cache size"]
    assert list(rows) == ["", "Base model", "H2O", "NAMM (BAM, s1)", "NAMM (BAM, s2)"]
    assert rows[""][:3] == ["*Single-Doc QA*", "*Summarization*", "*Synthetic*"]
    assert (out / "tables" / "table1.md").exists() and (out / "tables" / "table8.md").exists()
    _, t1 = md_table(out / "tables" / "table1.md")
    _, t8 = md_table(out / "tables" / "table8.md")
    assert list(t1)[1:] == ["Base model", "H2O", "NAMM (BAM, s2)"]  # the final NAMM only
    assert list(t8)[1:] == ["Base model", "NAMM (BAM, s1)", "NAMM (BAM, s2)"]
    tex = (out / "tables" / "longbench.tex").read_text()
    assert r"\multicolumn" not in tex or r"\cmidrule" in tex
    assert r"\toprule" in tex and "Base model" in tex


def test_wide_table_splits_into_parts(tmp_path):
    tasks = {f"t{i}": (f"{1 + i // 4}-{1 + i % 4}", 1, "hub") for i in range(14)}
    full = full_records(0, tasks=tasks)
    out = tmp_path / "out"
    report(write_run(tmp_path / "full", "full", full), "--out", out, "--no-figures", "--paper")
    text = (out / "tables" / "longbench.md").read_text()
    headers = [ln for ln in text.splitlines() if ln.startswith("| Model/Task id")]
    assert len(headers) == 2 and "| 1-1 |" in headers[0] and "All tasks" in headers[1]
    assert text.count("| Base model |") == 2


def test_test_tasks_from_checkpoint_sidecar(tmp_path, three_runs):
    dirs, recs = three_runs
    ckpt = tmp_path / "ckpt" / "best.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    ckpt.with_suffix(".json").write_text(json.dumps({"fitted_on": {"suite": "longbench", "tasks": ["qa", "sum"],
                                                                   "stage": 3}}))
    side = write_run(tmp_path / "side", "namm_mlp", make_records(6), policy_info={"architecture": "mlp",
                                                                                     "checkpoint": str(ckpt)})
    lost = write_run(tmp_path / "lost", "namm_bam", make_records(7), policy_info={"architecture": "bam",
                                                                                    "checkpoint": "gone.safetensors"})
    out = tmp_path / "out"
    report(dirs["full"], side, lost, "--out", out, "--no-figures")
    _, rows = md_table(out / "tables" / "longbench.md")
    cells = expected_cells(make_records(6), recs["full"], ["key"])
    assert rows["NAMM (MLP, s3)"][4] == f"{cells['key']['norm']:.2f}"
    assert rows["NAMM (BAM)"][4] == "?"
    assert "fitted tasks unknown for NAMM (BAM): checkpoint sidecar of gone.safetensors not found" in \
        (out / "tables" / "longbench.md").read_text()


def test_same_policy_different_budgets_get_distinct_labels(tmp_path, three_runs):
    dirs, _ = three_runs
    dirs["h2o512"] = write_run(tmp_path / "h2o512", "h2o", make_records(8), cache_size=512)
    dirs["h2o25"] = write_run(tmp_path / "h2o25", "h2o", make_records(9), cache_size=0.25)
    out = tmp_path / "out"
    report(*dirs.values(), "--out", out, "--no-figures", "--label", f"{dirs['full']}=Llama full")
    _, rows = md_table(out / "tables" / "longbench.md")
    assert {"Llama full", "H2O (1024 tok)", "H2O (512 tok)", "H2O (25%)"} <= set(rows)


# ---- bad input --------------------------------------------------------------------------------------

def test_not_a_run_directory(tmp_path, three_runs):
    dirs, _ = three_runs
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=rf"{re.escape(str(empty))} is not a run directory \(no config.json and "
                                         r"records.jsonl\)"):
        report(dirs["full"], empty, "--out", tmp_path / "o")
    with pytest.raises(UsageError, match="is not a directory"):
        report(tmp_path / "nowhere", "--out", tmp_path / "o")
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "fit.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="is a fit folder, not a run directory; pass it with --fit"):
        report(fit, "--out", tmp_path / "o")
    bad = write_run(tmp_path / "bad", "h2o", make_records(1))
    (bad / "records.jsonl").write_text('{"task": "qa", "id": "1", "score": 1}\nnot json\n{"task": "qa"}\n')
    with pytest.raises(UsageError, match=r"records.jsonl:2: malformed JSON line"):
        report(bad, "--out", tmp_path / "o")


def test_different_models_in_one_table(tmp_path, three_runs):
    dirs, _ = three_runs
    gemma = write_run(tmp_path / "gemma", "l2", make_records(3), model="gemma", cache_size=64)
    with pytest.raises(UsageError, match=r"runs of different models in one table \(suite longbench\).*gemma"):
        report(*dirs.values(), gemma, "--out", tmp_path / "o")


def test_two_full_runs_in_one_suite(tmp_path, three_runs):
    dirs, _ = three_runs
    other = write_run(tmp_path / "full2", "full", full_records(1))
    with pytest.raises(UsageError, match="2 full-cache runs"):
        report(*dirs.values(), other, "--out", tmp_path / "o")


def test_torn_last_line_is_ignored(tmp_path, three_runs):
    dirs, recs = three_runs
    with open(dirs["h2o"] / "records.jsonl", "a") as f:
        f.write('{"task": "qa", "id": "qa-9", "sco')
    out = tmp_path / "out"
    assert report(*dirs.values(), "--out", out, "--no-figures") == 0
    assert int(csv_rows(out / "tables" / "longbench.csv")["H2O"]["qa_n"]) == 4


def test_different_models_across_suites_in_the_summary(tmp_path, three_runs):
    dirs, _ = three_runs
    other = write_run(tmp_path / "gemma", "full", full_records(1), suite="niah", model="gemma")
    with pytest.raises(UsageError, match=r"different models in one table \(the summary across suites\)"):
        report(*dirs.values(), other, "--out", tmp_path / "o")


def test_overall_ratio_of_means(tmp_path, three_runs):
    dirs, recs = three_runs
    out = tmp_path / "out"
    report(*dirs.values(), "--out", out, "--no-figures", "--overall", "ratio-of-means")
    _, rows = md_table(out / "tables" / "longbench.md")
    tasks = ["qa", "sum", "key"]
    full = mean(expected_cells(recs["full"], recs["full"], tasks)[t]["score"] for t in tasks)
    h2o = mean(expected_cells(recs["h2o"], recs["full"], tasks)[t]["score"] for t in tasks)
    assert rows["H2O"][3] == f"{h2o:.2f} ({h2o / full:.2f})"
    assert "the row's average divided by the full-cache row's average" in (out / "tables" / "longbench.md").read_text()


def test_task_length_table(tmp_path):
    """With two NIAH tasks the report adds a column per (task, length): each cell is that task's mean
    score at that length, normalised by the full cache's on the same samples."""
    def niah(seed, full=False):
        rng = random.Random(seed)
        out = []
        for task, tid in (("passkey", "NIAH.PassKey"), ("needle", "NIAH.Needle")):
            for length in (1024, 2048):
                for depth in (0.0, 0.5, 1.0):
                    tokens = length - 20
                    logical = tokens + 3 if full else min(tokens, 512) + 3
                    out.append(record(task, f"{task}-{length}-{depth}", float(rng.random() > 0.3), logical, logical,
                                      tokens, tid, "generated", {"length": length, "depth": depth}))
        return out

    n_full, n_h2o = niah(3, full=True), niah(4)
    nf = write_run(tmp_path / "nfull", "full", n_full, suite="niah")
    nh = write_run(tmp_path / "nh2o", "h2o", n_h2o, suite="niah", cache_size=512)
    out = tmp_path / "out"
    report(nf, nh, "--out", out, "--no-figures")
    header, rows = md_table(out / "tables" / "niah_by_task_length.md")
    cells = [(t, n) for t in ("needle", "passkey") for n in (1024, 2048)]
    assert header[:4] == [f"{t} {n}" for t, n in cells]
    for k, (task, length) in enumerate(cells):
        pick = lambda recs: [r["score"] for r in recs if r["task"] == task and r["metadata"]["length"] == length]  # noqa: E731
        s, f = 100 * mean(pick(n_h2o)), 100 * mean(pick(n_full))
        assert rows["H2O"][k] == (f"{s:.2f} ({s / f:.2f})" if f else f"{s:.2f} (—)")
