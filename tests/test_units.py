"""Small pieces: middle cropping, budgets, record files, model resolution, metrics, `list`."""

import json

import pytest

from harness import records
from harness.cli import main
from harness.errors import UsageError
from harness.generation import middle_crop
from harness.metrics import summarise
from harness.models import resolve_model
from harness.runner import RunConfig, budget_for


def test_middle_crop_keeps_first_and_last_halves():
    ids = list(range(10))
    assert middle_crop(ids, 10) == ids
    assert middle_crop(ids, 4) == [0, 1, 8, 9]
    assert middle_crop(ids, 5) == [0, 1, 7, 8, 9]


def test_budget_tokens_or_fraction_of_prompt():
    assert budget_for(RunConfig(cache_size=None), 1000) is None
    assert budget_for(RunConfig(cache_size=256), 1000) == 256
    assert budget_for(RunConfig(cache_size=0.25), 1001) == 251  # ceil
    assert budget_for(RunConfig(cache_size=0.0001), 10) == 1


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / records.RECORDS
    records.append_record(path, {"task": "a", "id": "1", "index": 0})
    with open(path, "a") as f:
        f.write('{"task": "a", "id": "2", "ind')
    assert records.read_records(path) == [{"task": "a", "id": "1", "index": 0}]
    assert records.finished_keys(tmp_path) == {("a", "1")}  # repairs the file
    assert path.read_text() == '{"task": "a", "id": "1", "index": 0}\n'


def test_rank_files_merge_in_sample_order(tmp_path):
    for rank, idx in ((0, [0, 2]), (1, [1, 3])):
        for i in idx:
            records.append_record(records.rank_file(tmp_path, rank), {"task": "t", "id": str(i), "index": i})
    merged = records.merge_rank_files(tmp_path)
    assert [r["index"] for r in merged] == [0, 1, 2, 3]
    assert [json.loads(x)["index"] for x in (tmp_path / "records.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
    assert not list(tmp_path.glob("records.rank*"))


def test_model_specs(tmp_path):
    assert resolve_model(None).name == "smollm2"
    assert resolve_model("smollm2").gguf_file.endswith(".gguf")
    assert resolve_model("org/name").location == "org/name"
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_model(str(tmp_path / "m.gguf")).gguf_file == "m.gguf"
    assert resolve_model(str(tmp_path)).location == str(tmp_path.resolve())
    for bad in ("./missing", "/no/such/dir", "a/b/c", "x.gguf"):
        with pytest.raises(UsageError, match="not found"):
            resolve_model(bad)


def test_metrics_average_over_tasks():
    def rec(task, score, phys):
        return {"task": task, "score": score, "input_tokens": 100, "cache": {"physical_mean": phys, "logical_mean": phys}}

    m = summarise([rec("a", 1.0, 10), rec("a", 0.0, 20), rec("b", 1.0, 30)], expected=4)
    assert m["tasks"]["a"]["score"] == 50.0 and m["tasks"]["a"]["cache_physical"] == 15.0
    assert m["average"] == 75.0 and m["complete"] is False


def test_list_names_every_policy_and_suite(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("full", "h2o", "l2", "streaming", "namm_bam", "namm_mlp", "niah", "passkey", "needle", "generated data"):
        assert name in out


def test_suite_args_parse_and_reach_the_suite():
    from harness.suite_args import load_suite, parse_suite_args

    assert parse_suite_args(["lengths=2048,4096", "depths=0.5", "name=x"]) == {
        "lengths": [2048, 4096], "depths": 0.5, "name": "x"}
    suite = load_suite("niah", parse_suite_args(["lengths=2048", "depths=0,1"]))
    assert suite.lengths == (2048,) and suite.depths == (0.0, 1.0)
    with pytest.raises(UsageError, match="suite niah has no option 'width'; options: lengths, depths"):
        load_suite("niah", {"width": 3})
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_suite_args(["lengths"])
    with pytest.raises(UsageError, match="depths fractions in"):
        load_suite("niah", {"depths": 2})
