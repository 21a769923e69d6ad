"""Runner plumbing for suites that load data: skipped tasks, malformed data, --data-dir, truncation
rules, the NIAH judge option and the length x depth grid in metrics.json."""

import re

import pytest

from harness.cli import main
from harness.errors import UsageError
from harness.metrics import summarise
from harness.runner import collect_work
from tasks.base import DataError, Sample, Suite, TaskUnavailable


class FakeSuite(Suite):
    name = "fake"
    tasks = ("ok", "missing", "broken")

    def samples(self, task, tokenizer, max_length, seed=0):
        if task == "missing":
            raise TaskUnavailable("fake/missing: no data here; pass --data-dir DIR with missing.jsonl")
        if task == "broken":
            raise DataError("data/broken.jsonl:3: not valid JSON (Expecting value); fix or remove the line")
        return iter([Sample(id=str(i), task=task, prompt="p", answers=["a"], max_new_tokens=1) for i in range(3)])


def test_unavailable_task_is_skipped_with_one_warning_line():
    lines = []
    work, skipped = collect_work(FakeSuite(), ["ok", "missing"], None, 100, 0, limit=2, warn=lines.append)
    assert [(i, s.task, s.id) for i, s in work] == [(0, "ok", "0"), (1, "ok", "1")]
    assert skipped == {"missing": "fake/missing: no data here; pass --data-dir DIR with missing.jsonl"}
    assert lines == ["warning: skipped fake/missing: no data here; pass --data-dir DIR with missing.jsonl"]


def test_malformed_data_and_nothing_runnable_are_usage_errors():
    with pytest.raises(UsageError, match=r"^data/broken.jsonl:3: not valid JSON"):
        collect_work(FakeSuite(), ["ok", "broken"], None, 100, 0, limit=None, warn=lambda line: None)
    with pytest.raises(UsageError, match="nothing to run: no task of suite fake has data here"):
        collect_work(FakeSuite(), ["missing"], None, 100, 0, limit=None, warn=lambda line: None)


def test_nothing_runnable_for_the_max_length_says_so(tiny_model_dir, tmp_path, capsys):
    from tasks.base import ContextTooSmall

    class Small(FakeSuite):
        def samples(self, task, tokenizer, max_length, seed=0):
            raise ContextTooSmall(f"fake/{task}: generated samples need a context of 300; got max_length {max_length}")

    with pytest.raises(UsageError, match=r"^nothing to run: fake/ok: generated samples need a context of 300; got "
                                         r"max_length 100; use a larger --max-length"):
        collect_work(Small(), ["ok"], None, 100, 0, limit=None, warn=lambda line: None)
    out = tmp_path / "r"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "longbench", "--tasks", "passage_count",
                 "--max-length", "100", "--out", str(out), "--quiet"]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert line.startswith("error: nothing to run: longbench/passage_count: generated samples need lengths of at least")
    assert re.search(r"got -?\d+ with max_length 100; use a larger --max-length", line), line
    assert not out.exists()


def test_data_dir_on_a_generated_suite_is_refused(tmp_path, capsys):
    assert main(["run", "--suite", "niah", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --data-dir: suite niah reads no data files (its samples are generated here)"]
    assert not (tmp_path / "r").exists()


def test_unknown_truncation_rule_is_refused(tmp_path, capsys):
    assert main(["run", "--truncation", "left", "--out", str(tmp_path / "r")]) == 2
    assert "unknown truncation rule 'left'; choose one of: longbench, paper" in capsys.readouterr().err


class CharTokenizer:
    """One token per character (ids = code points); no chat template."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        class Out:
            input_ids = [ord(c) for c in text]

        return Out()

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def _evaluator(truncation, max_length):
    from harness.evaluate import Evaluator

    ev = Evaluator.__new__(Evaluator)  # inputs() needs only the tokenizer and the settings
    ev.tokenizer, ev.max_length, ev.chat_template, ev.truncation = CharTokenizer(), max_length, "auto", truncation
    return ev


def test_paper_truncation_crops_to_max_length_minus_new_tokens():
    sample = Sample(id="0", task="t", prompt="abcdefghijklmnopqrst", answers=[], max_new_tokens=4)
    ids, cropped = _evaluator("paper", 14).inputs(sample)
    assert "".join(map(chr, ids)) == "abcdefghijklmnopqrst"
    assert "".join(map(chr, cropped)) == "abcdepqrst"  # 10 = 14 - 4 tokens: first 5, last 5


def test_longbench_truncation_leaves_room_for_the_new_tokens():
    sample = Sample(id="0", task="t", prompt="abcdefghijklmnopqrst", answers=[], max_new_tokens=4)
    _, cropped = _evaluator("longbench", 14).inputs(sample)
    assert "".join(map(chr, cropped)) == "abcdepqrst"  # 10 = 14 - 4 tokens: first 5, last 5
    short = Sample(id="1", task="t", prompt="abc", answers=[], max_new_tokens=4)
    assert _evaluator("longbench", 14).inputs(short)[1] == [97, 98, 99]


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from transformers import AutoTokenizer

    from harness.models import resolve_model

    source = resolve_model("smollm2")
    return AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)


@pytest.mark.parametrize("max_length", [200, 333, 1024])
def test_longbench_truncation_fits_template_and_answer_in_max_length(embedded_tokenizer, max_length):
    ev = _evaluator("longbench", max_length)
    ev.tokenizer = embedded_tokenizer
    assert embedded_tokenizer.chat_template  # the template's tokens must be budgeted too
    words = " ".join(f"word{i} lorem ipsum, dolor sit amet." for i in range(600))
    sample = Sample(id="0", task="t", prompt="Read this. " + words + " Question: which word came last?",
                    answers=[], max_new_tokens=64, answer_prefix="Answer:")
    ids, fed = ev.inputs(sample)
    assert len(ids) + sample.max_new_tokens > max_length  # the sample does need cropping
    assert len(fed) + sample.max_new_tokens <= max_length
    assert len(fed) + sample.max_new_tokens >= max_length - 8  # and is not cropped much further
    text = embedded_tokenizer.decode(fed)
    assert "Read this." in text and "which word came last?" in text and text.rstrip().endswith("Answer:")
    assert "<|im_start|>user" in text and "<|im_start|>assistant" in text  # the template is still there
    short = Sample(id="1", task="t", prompt="What is 2 + 2?", answers=[], max_new_tokens=64, answer_prefix="Answer:")
    ids, fed = ev.inputs(short)
    assert fed == ids and len(ids) + 64 <= max_length


def half_judge(prediction, answers, sample):
    return 0.5 if answers[0] in prediction else 0.0


def test_niah_judge_replaces_the_builtin_scorer():
    from tasks.niah import NIAH

    sample = Sample(id="x", task="needle", prompt="", answers=["sandwich"], max_new_tokens=8)
    assert NIAH().score(sample, "eat a sandwich") == 1.0
    judged = NIAH(judge=f"{__name__}:half_judge")
    assert judged.score(sample, "eat a sandwich") == 0.5 and judged.score(sample, "no") == 0.0
    for bad, msg in (("nomodule", "must look like module:function"), ("no_such_mod:f", "cannot be loaded"),
                     (f"{__name__}:missing", "cannot be loaded")):
        with pytest.raises(ValueError, match=msg):
            NIAH(judge=bad)


def test_metrics_grid_and_provenance():
    def rec(length, depth, score, source="generated"):
        return {"task": "passkey", "score": score, "input_tokens": length, "source": source, "generated_data": True,
                "cache": {"physical_mean": 1.0, "logical_mean": 1.0}, "metadata": {"length": length, "depth": depth}}

    m = summarise([rec(1024, 0.5, 1.0), rec(1024, 0.5, 0.0), rec(1024, 0.0, 1.0), rec(2048, 0.0, 0.0)],
                  skipped={"needle": "why"})
    t = m["tasks"]["passkey"]
    assert t["grid"] == {"1024": {"0.0": 100.0, "0.5": 50.0}, "2048": {"0.0": 0.0}}
    assert t["sources"] == ["generated"] and t["generated_data"] is True
    assert m["skipped"] == {"needle": "why"}


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


def _records(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def test_longbench_offline_runs_generated_tasks_and_skips_the_rest(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "lb"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "longbench", "--limit", "1", "--out", str(out),
                 "--quiet", "--max-length", "640", "--tasks", "passage_count,qasper,trec"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert err == ["warning: skipped longbench/qasper: no data here; pass --data-dir DIR with qasper.jsonl "
                   "(official LongBench format) or run with hub access",
                   "warning: skipped longbench/trec: no data here; pass --data-dir DIR with trec.jsonl "
                   "(official LongBench format) or run with hub access"]
    (rec,) = _records(out)
    assert rec["task"] == "passage_count" and rec["source"] == "generated" and rec["generated_data"] is True
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    assert set(metrics["skipped"]) == {"qasper", "trec"} and metrics["tasks"]["passage_count"]["sources"] == ["generated"]


def test_longbench_with_data_dir_runs_every_task(tiny_model_dir, tmp_path):
    from tasks.longbench import LongBench

    out = tmp_path / "lb"
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "longbench", "--limit", "1", "--out", str(out),
                 "--quiet", "--max-length", "600", "--data-dir", str(FIXTURES / "longbench")]) == 0
    recs = _records(out)
    assert sorted(r["task"] for r in recs) == sorted(LongBench.tasks) and len(recs) == 21
    assert {r["source"] for r in recs} == {"data-dir"} and not any(r["generated_data"] for r in recs)
    assert {r["task_id"] for r in recs} >= {"1-1", "5-2", "6-2"}


def test_malformed_data_dir_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "trec.jsonl").write_text('{"input": "x"}\nnot json\n')
    assert main(["run", "--model", str(tiny_model_dir), "--suite", "longbench", "--tasks", "trec", "--quiet",
                 "--data-dir", str(bad), "--out", str(tmp_path / "r")]) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad / 'trec.jsonl'}:1:"), lines
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_infinitebench_offline_generates_four_tasks_and_skips_the_others(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ib"
    assert main(["run", "--policy", "full", "--suite", "infinitebench", "--limit", "2", "--model", str(tiny_model_dir),
                 "--max-length", "640", "--out", str(out), "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: skipped")]
    recs = _records(out)
    ran = sorted({r["task"] for r in recs})
    assert ran == ["kv_retrieval", "math_find", "number_string", "passkey"]
    assert len(recs) == 8 and all(r["source"] == "generated" and r["generated_data"] for r in recs)
    assert len(warnings) == 8 and all("pass --data-dir DIR" in w for w in warnings)


def test_infinitebench_with_data_dir_runs_every_task(tiny_model_dir, tmp_path):
    from tasks.infinitebench import InfiniteBench

    out = tmp_path / "ib"
    assert main(["run", "--suite", "infinitebench", "--limit", "1", "--model", str(tiny_model_dir),
                 "--max-length", "640", "--out", str(out), "--quiet", "--data-dir", str(FIXTURES / "infinitebench")]) == 0
    recs = _records(out)
    assert sorted(r["task"] for r in recs) == sorted(InfiniteBench.tasks)
    assert {r["source"] for r in recs} == {"data-dir"}


def test_d4rl_through_the_runner(tmp_path):
    """A suite with its own model and loop (evaluate_sample): records carry the episode's return,
    the normalised score / 100 and the cache within budget + n_up; a fractional budget uses 3 x max_steps."""
    import json

    from tasks.d4rl.envs import normalized_score

    out = tmp_path / "d4rl"
    assert main(["run", "--suite", "d4rl", "--tasks", "hopper-medium", "--limit", "2", "--suite-arg", "max_steps=40",
                 "--policy", "h2o", "--cache-size", "0.25", "--n-up", "16", "--out", str(out), "--quiet"]) == 0
    recs = _records(out)
    assert [r["id"] for r in recs] == ["seed0", "seed1"]
    for r in recs:
        assert r["budget"] == 30  # 0.25 x 3 x 40 tokens
        assert abs(r["score"] - normalized_score("hopper", r["episode_return"]) / 100) < 1e-9
        assert r["prediction"] == f"return={r['episode_return']:.1f}" and r["source"] == "generated"
        assert r["input_tokens"] == 3 * r["env_steps"] - 1
        assert max(layer["physical"] for layer in r["cache"]["layers"]) <= 30 + 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["hopper-medium"]["n"] == 2
