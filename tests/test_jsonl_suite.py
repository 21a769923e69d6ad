"""The ``jsonl`` suite (your own records): metrics, prompt assembly, end-to-end runs on the embedded
model, and the validation errors (one line, exit 2, nothing written)."""

import json

import pytest

from harness.cli import main
from harness.evaluate import format_prompt
from tasks import get_suite
from tasks.user_metrics import METRICS, score_user

RECORDS = [
    {"context": "The secret code is 4721. The sky is blue. Grass is green.", "question": "\nWhat is the secret code?",
     "answer_prefix": "\nThe secret code is", "answer": "4721", "metric": "first_int", "task": "code",
     "max_new_tokens": 6},
    {"context": "Alice lives in Paris. Bob lives in Rome.", "question": "\nWhere does Bob live? Answer in one word.",
     "answer_prefix": "", "answer": ["Rome", "rome, italy"], "task": "city", "max_new_tokens": 8, "id": "bob"},
    {"context": "Alice lives in Paris. Bob lives in Rome.", "question": "\nWhere does Alice live? Answer in one word.",
     "answer_prefix": "", "answer": "Paris", "task": "city", "max_new_tokens": 8},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- metrics (hand-derived) ----------------------------------------------------------------------

@pytest.mark.parametrize("metric,prediction,answer,expected", [
    ("exact", "The Rome!", "rome", 1.0),          # SQuAD normalisation drops case, punctuation, articles
    ("exact", "Rome, Italy", "rome", 0.0),
    ("contains", "I think ROME  is it", "rome is", 1.0),
    ("contains", "Romeo", "rome", 1.0),            # a plain substring test, as RULER's string_match
    ("contains", "Paris", "rome", 0.0),
    ("first_int", "The code is 04721 or 12", "4721", 1.0),
    ("first_int", "12 then 4721", "4721", 0.0),
    ("first_int", "no digits", "4721", 0.0),
    ("f1", "red big cat", "the big red dog", 2 * (2 / 3) * (2 / 3) / (4 / 3)),  # 2 of 3 tokens each way
    ("rouge_l", "a b c d", "a b c d", 1.0),
])
def test_metric_values(metric, prediction, answer, expected):
    assert METRICS[metric](prediction, answer) == pytest.approx(expected)


def test_score_is_the_max_over_answers():
    assert score_user("exact", "rome", ["paris", "Rome"]) == 1.0
    assert score_user("f1", "big red", ["red", "big red"]) == 1.0


# ---- the suite ----------------------------------------------------------------------------------

def test_records_become_samples_grouped_by_task(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", RECORDS + [{**RECORDS[2], "task": None, "answer": "x"}])
    suite = get_suite("jsonl", {"data": str(path), "metric": "exact"})
    assert suite.tasks == ("code", "city", "mine")  # `task` absent/null → the file's stem
    code, = suite.samples("code", None, 1000)
    assert code.prompt == RECORDS[0]["context"] + RECORDS[0]["question"]
    assert code.answer_prefix == "\nThe secret code is" and code.max_new_tokens == 6
    assert code.metadata["metric"] == "first_int" and code.metadata["source"] == "user"
    bob, alice = suite.samples("city", None, 1000)
    assert (bob.id, alice.id) == ("bob", "mine-3")
    assert bob.answers == ["Rome", "rome, italy"] and alice.metadata["metric"] == "exact"  # the --metric default
    assert suite.score(code, " 4721.") == 1.0 and suite.score(alice, "Paris.") == 1.0


def test_parquet_file_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: RECORDS[1][k] for k in ("context", "question", "answer_prefix", "answer")}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    write_jsonl(tmp_path / "a.jsonl", [RECORDS[0]])
    (tmp_path / "notes.txt").write_text("ignored")
    suite = get_suite("jsonl", {"data": str(tmp_path)})
    assert suite.tasks == ("code", "b")
    sample, = suite.samples("b", None, 1000)
    assert sample.id == "b-0" and sample.answers == ["Rome", "rome, italy"]


class PlainTokenizer:
    """One token per character; optionally a chat template that wraps the user text in [ ]."""

    def __init__(self, chat):
        self.chat_template = "x" if chat else None

    def __call__(self, text, add_special_tokens=True):
        class Out:
            input_ids = ([0] if add_special_tokens else []) + [ord(c) for c in text]
        return Out()

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, return_dict):
        return [0] + [ord(c) for c in "[" + messages[0]["content"] + "]"]


def test_answer_prefix_follows_the_chat_template(tmp_path):
    suite = get_suite("jsonl", {"data": str(write_jsonl(tmp_path / "d.jsonl", [RECORDS[0]]))})
    sample, = suite.samples("code", None, 1000)
    prompt = RECORDS[0]["context"] + RECORDS[0]["question"]
    chat = format_prompt(PlainTokenizer(chat=True), sample, "auto")
    assert chat == [0] + [ord(c) for c in "[" + prompt + "]" + "\nThe secret code is"]
    plain = format_prompt(PlainTokenizer(chat=True), sample, "off")
    assert plain == [0] + [ord(c) for c in prompt + "\nThe secret code is"]


# ---- end to end on the embedded model -----------------------------------------------------------

@pytest.mark.parametrize("policy", [["--policy", "full"], ["--policy", "h2o", "--cache-size", "24", "--n-up", "16"]])
def test_run_end_to_end_scores_equal_the_metric(tmp_path, policy, capsys):
    data = write_jsonl(tmp_path / "mine.jsonl", RECORDS)
    out = tmp_path / "run"
    assert main(["run", "--suite", "jsonl", "--data", str(data), "--metric", "contains", *policy,
                 "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [(r["task"], r["id"]) for r in records] == [("code", "mine-1"), ("city", "bob"), ("city", "mine-3")]
    for r, rec in zip(records, RECORDS):
        metric = rec.get("metric", "contains")
        assert r["source"] == "user" and r["metadata"]["metric"] == metric and r["generated_data"] is False
        assert r["score"] == score_user(metric, r["prediction"], r["answers"])
        assert r["new_tokens"] <= rec["max_new_tokens"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"code", "city"}
    assert metrics["tasks"]["city"]["score"] == pytest.approx(100 * (records[1]["score"] + records[2]["score"]) / 2)
    assert metrics["tasks"]["city"]["sources"] == ["user"]
    if policy[1] == "h2o":  # the prompt (~60 tokens) went through eviction to the 24-token budget
        assert all(r["cache"]["logical_mean"] < r["input_tokens"] for r in records)


# ---- validation: one line, exit 2, nothing written ----------------------------------------------

def _refused(tmp_path, capsys, data, *extra):
    out = tmp_path / "run"
    assert main(["run", "--suite", "jsonl", "--data", str(data), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists()
    return err[0].removeprefix("error: ")


def test_missing_field_names_file_and_line(tmp_path, capsys):
    bad = {k: v for k, v in RECORDS[1].items() if k != "answer_prefix"}
    data = write_jsonl(tmp_path / "d.jsonl", [RECORDS[0], bad])
    assert _refused(tmp_path, capsys, data) == (f"{data}:2: record lacks field(s) answer_prefix; "
                                                "required: context, question, answer_prefix, answer")


@pytest.mark.parametrize("field,value,message", [
    ("context", 5, "context must be a string, got int"),
    ("answer", [], "answer must be a string or a non-empty list of strings"),
    ("answer", 42, "answer must be a string or a non-empty list of strings, got int"),
    ("max_new_tokens", 0, "max_new_tokens must be a positive integer"),
    ("metric", "bleu", "unknown metric 'bleu'; choose one of exact, contains, first_int, f1, rouge_l"),
    ("id", 1.5, "id must be a string or an integer"),
])
def test_wrong_types(tmp_path, capsys, field, value, message):
    data = write_jsonl(tmp_path / "d.jsonl", [{**RECORDS[0], field: value}])
    assert _refused(tmp_path, capsys, data) == f"{data}:1: {message}"


def test_empty_unreadable_and_duplicate(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert _refused(tmp_path, capsys, empty).startswith(f"{empty}: no records in the file")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"context": "caf\xe9"}\n')
    assert _refused(tmp_path, capsys, latin) == f"{latin}: not UTF-8 text; save the file as UTF-8 JSON lines"
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not a parquet file")
    assert _refused(tmp_path, capsys, garbage).startswith(f"{garbage}: cannot read the file (")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    assert _refused(tmp_path, capsys, broken).startswith(f"{broken}:2: not valid JSON")
    dup = write_jsonl(tmp_path / "dup.jsonl", [RECORDS[1], RECORDS[1]])
    assert _refused(tmp_path, capsys, dup) == (f"{dup}:2: id 'bob' appears twice in task 'city'; "
                                               "ids must be unique within a task")


def test_bad_paths_and_flags(tmp_path, capsys):
    assert _refused(tmp_path, capsys, tmp_path / "nope.jsonl") == f"--data {tmp_path / 'nope.jsonl'}: no such file or folder"
    (tmp_path / "d.csv").write_text("a,b\n")
    assert "expected a .jsonl or .parquet file" in _refused(tmp_path, capsys, tmp_path / "d.csv")
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    assert _refused(tmp_path, capsys, data, "--metric", "bleu") == (
        "unknown --metric 'bleu'; choose one of exact, contains, first_int, f1, rouge_l")
    assert main(["run", "--suite", "jsonl", "--out", str(tmp_path / "r")]) == 2
    assert "suite jsonl needs --data PATH" in capsys.readouterr().err
    assert main(["run", "--suite", "niah", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "--data is for --suite jsonl" in capsys.readouterr().err

