"""`python -m harness report`: every number of the per-task table checked against values computed
here independently (normalisation on the same samples, averages over the tasks present in every row,
the full cache scoring 0), missing cells and the generated-data marks."""

import re

import pytest

from tests.report_runs import TASKS, write_run, make_records, full_records, report, md_table, csv_rows, mean, expected_cells


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
