"""`python -m harness report`: the other tables (summary across suites, per length, per task and
length), the paper layout, wide tables split into parts, Test tasks and row labels."""

import json
import random

import pytest

from tests.report_runs import record, write_run, make_records, full_records, report, md_table, csv_rows, mean, expected_cells


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
    # per (task, depth), the lengths pooled: where in the context the needle is lost
    header, rows = md_table(out / "tables" / "niah_by_task_depth.md")
    cells = [(t, d) for t in ("needle", "passkey") for d in (0.0, 0.5, 1.0)]
    assert header[:6] == ["needle 0%", "needle 50%", "needle 100%", "passkey 0%", "passkey 50%", "passkey 100%"]
    for k, (task, depth) in enumerate(cells):
        pick = lambda recs: [r["score"] for r in recs if r["task"] == task and r["metadata"]["depth"] == depth]  # noqa: E731
        s, f = 100 * mean(pick(n_h2o)), 100 * mean(pick(n_full))
        assert rows["H2O"][k] == (f"{s:.2f} ({s / f:.2f})" if f else f"{s:.2f} (—)")
