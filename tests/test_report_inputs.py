"""`python -m harness report`: bad or unusual input (not a run directory, several models, two
full-cache runs, a torn last line)."""

import re

import pytest

from harness.errors import UsageError

from tests.report_runs import write_run, make_records, full_records, report, csv_rows


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
