"""Tests for the LongBench suite (tasks/longbench.py) and its offline paragraphs (tasks/offline_text.py).

Offline: data comes from tiny fixtures written for these tests in the official record format
(tests/fixtures/longbench/), the hub is stubbed, and generated samples use a small byte-level BPE
tokenizer trained here on the offline text.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import tasks.data
import tasks.longbench as lb
import tasks.official_data as official_data
from tasks import SUITES, get_suite, offline_text
from tasks.base import DataError, Sample, TaskUnavailable

FIXTURES = Path(__file__).parent / "fixtures" / "longbench"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(offline_text.sentences(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.fixture
def offline(monkeypatch):
    """No hub: not reachable and nothing cached."""
    monkeypatch.setattr(official_data, "hub_available", lambda repo: False)

    def no_hub(*args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("the hub must not be tried")

    monkeypatch.setattr(official_data, "load_hub", no_hub)


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def records(task):
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


def split_prompt(task, prompt):
    """``(context, input)`` of a prompt made from ``PROMPTS[task]``."""
    head, rest = lb.PROMPTS[task].split("{context}")
    mid, tail = rest.split("{input}") if "{input}" in rest else (rest, "")
    assert prompt.startswith(head) and prompt.endswith(tail)
    body = prompt[len(head): len(prompt) - len(tail)]
    if not mid:
        return body, ""
    context, _, query = body.rpartition(mid)
    return context, query


def paragraphs(context):
    """``[(label number, text)]`` of a ``Paragraph N: text`` context."""
    parts = context.split("\n\n")
    out = []
    for p in parts:
        m = re.fullmatch(r"Paragraph (\d+): (.+)", p, flags=re.S)
        assert m, p[:80]
        out.append((int(m.group(1)), m.group(2)))
    return out


# ------------------------------------------------------------------------------------------------
# registration and official constants
# ------------------------------------------------------------------------------------------------


def test_registered_and_constants():
    assert SUITES["longbench"] is lb.LongBench
    s = get_suite("longbench")
    assert s.tasks == (
        "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
        "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
        "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p",
    )
    assert [s.task_ids[t] for t in s.tasks] == [
        "1-1", "1-2", "1-3", "1-4", "2-1", "2-2", "2-3", "2-4", "3-1", "3-2", "3-3", "3-4",
        "4-1", "4-2", "4-3", "4-4", "5-1", "5-2", "5-3", "6-1", "6-2",
    ]
    assert s.generated is False
    assert lb.MAX_NEW_TOKENS == {
        "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64, "hotpotqa": 32,
        "2wikimqa": 32, "musique": 32, "dureader": 128, "gov_report": 512, "qmsum": 512, "multi_news": 512,
        "vcsum": 512, "trec": 64, "triviaqa": 32, "samsum": 128, "lsht": 64, "passage_count": 32,
        "passage_retrieval_en": 32, "passage_retrieval_zh": 32, "lcc": 64, "repobench-p": 64,
    }
    assert lb.NO_CHAT == {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}
    assert set(lb.PROMPTS) == set(s.tasks)
    for task, template in lb.PROMPTS.items():
        fields = set(re.findall(r"{(\w+)}", template))
        assert fields <= {"context", "input"} and "context" in fields, task
    assert lb.HUB_REPO == "Xnhyacinth/LongBench"


def test_options():
    s = get_suite("longbench", {"data_dir": str(FIXTURES), "source": "data-dir", "lengths": [2048, 4096],
                                "n_samples": 3})
    assert s.data_dir == FIXTURES and s.source == "data-dir" and s.lengths == (2048, 4096) and s.n_samples == 3
    assert get_suite("longbench", {"lengths": 1024}).lengths == (1024,)
    with pytest.raises(ValueError, match="source must be one of"):
        lb.LongBench(source="web")
    with pytest.raises(ValueError):
        lb.LongBench(n_samples=0)
    with pytest.raises(ValueError):
        lb.LongBench(lengths=[0])
    with pytest.raises(ValueError, match="no option"):
        get_suite("longbench", {"depths": 0.5})


# ------------------------------------------------------------------------------------------------
# data from a folder in the official format
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", list(lb.TASK_IDS))
def test_fixture_loads_with_official_prompt(task, tokenizer, offline):
    suite = lb.LongBench(data_dir=FIXTURES)
    got = list(suite.samples(task, tokenizer, max_length=4096))
    recs = records(task)
    assert len(got) == len(recs) == 2
    for s, rec in zip(got, recs):
        assert isinstance(s, Sample) and s.task == task
        assert s.id == rec["_id"]
        assert s.prompt == lb.PROMPTS[task].format(**rec)
        assert s.answers == rec["answers"]
        assert s.all_classes == rec["all_classes"]
        assert s.max_new_tokens == lb.MAX_NEW_TOKENS[task]
        assert s.chat is (task not in {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
        assert s.metadata["source"] == "data-dir" and s.metadata["generated"] is False and not s.generated
        assert s.metadata["length"] == rec["length"] and s.metadata["language"] == rec["language"]
    # a record's context is in its prompt verbatim
    assert recs[0]["context"] in got[0].prompt


def test_exact_prompt_strings(offline, tokenizer):
    suite = lb.LongBench(data_dir=FIXTURES)
    nq = next(iter(suite.samples("narrativeqa", tokenizer, 4096)))
    assert nq.prompt == (
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
        "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\n"
        "Story: The lighthouse keeper Mara rowed to the mainland every Tuesday. On the last Tuesday of winter she "
        "found a brass key in the sand and hid it in her coat.\n\n"
        "Now, answer the question based on the story asconcisely as you can, using a single phrase if possible. "
        "Do not provide any explanation.\n\nQuestion: What did Mara find in the sand?\n\nAnswer:"
    )
    trec = next(iter(suite.samples("trec", tokenizer, 4096)))
    assert trec.prompt == (
        "Please determine the type of the question below. Here are some examples of questions.\n\n"
        "Question: What city hosted the 1900 Olympics?\nType: City\nQuestion: Who wrote Hamlet?\nType: Individual\n"
        "\nQuestion: When did the war end?\nType:"
    )
    assert trec.all_classes == ["Abbreviation", "Animal", "City", "Date", "Individual", "Other number"]
    assert trec.chat is False and trec.max_new_tokens == 64
    rp = next(iter(suite.samples("repobench-p", tokenizer, 4096)))
    assert rp.prompt == ("Please complete the code given below. \n# utils.py\ndef norm(x):\n    return x / 2\n"
                         "# main.py\nfrom utils import norm\ny = Next line of code:\n")
    pr = next(iter(suite.samples("passage_retrieval_en", tokenizer, 4096)))
    assert pr.prompt.startswith("Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine "
                                "which paragraph the abstract is from.\n\nParagraph 1: Owls hunt")
    assert pr.prompt.endswith("\n\nThe following is an abstract.\n\nNocturnal birds rely on hearing to catch prey.\n\n"
                              "Please enter the number of the paragraph that the abstract is from. The answer format "
                              "must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ")
    assert pr.metadata["source"] == "data-dir"  # data beats generation


def test_official_zip_layout(tmp_path, offline, tokenizer):
    (tmp_path / "data").mkdir()
    shutil.copy(FIXTURES / "qasper.jsonl", tmp_path / "data" / "qasper.jsonl")
    got = list(lb.LongBench(data_dir=tmp_path).samples("qasper", tokenizer, 4096))
    assert [s.answers for s in got] == [["2,000"], ["yes"]]


@pytest.mark.parametrize("task,line,needle", [
    ("narrativeqa", 2, "not valid JSON"),
    ("qasper", 3, "answers must be a non-empty list of strings"),  # line 2 is blank
    ("trec", 1, "lacks field(s) all_classes"),
])
def test_malformed_file_names_file_and_line(task, line, needle, offline, tokenizer):
    suite = lb.LongBench(data_dir=FIXTURES / "malformed")
    with pytest.raises(DataError) as err:
        suite.samples(task, tokenizer, 4096)  # raised at the call
    msg = str(err.value)
    assert msg.startswith(f"{FIXTURES / 'malformed' / f'{task}.jsonl'}:{line}: ")
    assert needle in msg and "\n" not in msg


def test_bad_types_and_empty(tmp_path, offline, tokenizer):
    rec = records("lsht")[0]
    for key, value, needle in [("context", 5, "context must be a string"),
                               ("all_classes", "体育", "all_classes must be null or a list"),
                               ("length", "long", "length must be a number"),
                               ("answers", [], "answers must be a non-empty list")]:
        bad = dict(rec, **{key: value})
        (tmp_path / "lsht.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError, match=re.escape("lsht.jsonl:2: ") + ".*" + re.escape(needle)):
            lb.LongBench(data_dir=tmp_path).samples("lsht", tokenizer, 4096)
    (tmp_path / "lsht.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        lb.LongBench(data_dir=tmp_path).samples("lsht", tokenizer, 4096)


# ------------------------------------------------------------------------------------------------
# no data: TaskUnavailable; the hub
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [t for t in lb.TASK_IDS if t not in lb.GENERATED_TASKS])
def test_unavailable_offline(task, tmp_path, offline, tokenizer):
    for suite in (lb.LongBench(), lb.LongBench(data_dir=tmp_path)):
        with pytest.raises(TaskUnavailable) as err:
            suite.samples(task, tokenizer, 4096)  # at the call, not at the first next()
        assert str(err.value) == (f"longbench/{task}: no data here; pass --data-dir DIR with {task}.jsonl "
                                  "(official LongBench format) or run with hub access")


def test_explicit_sources_unavailable(tmp_path, offline, tokenizer):
    with pytest.raises(TaskUnavailable, match=r"^longbench/passage_count: no passage_count.jsonl in "):
        lb.LongBench(data_dir=tmp_path, source="data-dir").samples("passage_count", tokenizer, 4096)
    with pytest.raises(TaskUnavailable, match=r"no --data-dir given"):
        lb.LongBench(source="data-dir").samples("qasper", tokenizer, 4096)
    with pytest.raises(TaskUnavailable, match=r"^longbench/qasper: no generator here"):
        lb.LongBench(data_dir=FIXTURES, source="generated").samples("qasper", tokenizer, 4096)
    with pytest.raises(KeyError):
        lb.LongBench().samples("nope", tokenizer, 4096)


def test_hub_rows(monkeypatch, tokenizer):
    calls = []
    rows = [dict(r, answers=list(r["answers"])) for r in records("hotpotqa")]

    def fake_load_hub(repo, required=(), **kwargs):
        calls.append((repo, required, kwargs))
        return rows

    monkeypatch.setattr(official_data, "hub_available", lambda repo: True)
    monkeypatch.setattr(official_data, "load_hub", fake_load_hub)
    got = list(lb.LongBench().samples("hotpotqa", tokenizer, 4096))
    assert calls == [("Xnhyacinth/LongBench", ("input", "context", "answers"), {"name": "hotpotqa", "split": "test"})]
    assert [s.metadata["source"] for s in got] == ["hub", "hub"]
    assert got[0].prompt == lb.PROMPTS["hotpotqa"].format(**rows[0])
    # the data dir wins over the hub
    assert {s.metadata["source"] for s in lb.LongBench(data_dir=FIXTURES).samples("hotpotqa", tokenizer, 4096)} == {
        "data-dir"}
    # source=hub: tried even when the hub looks unavailable; failing → TaskUnavailable
    monkeypatch.setattr(official_data, "hub_available", lambda repo: False)
    monkeypatch.setattr(official_data, "load_hub", lambda *a, **k: None)
    with pytest.raises(TaskUnavailable, match="hub dataset Xnhyacinth/LongBench \\(hotpotqa\\) is not reachable"):
        lb.LongBench(source="hub").samples("hotpotqa", tokenizer, 4096)
    # a bad hub row names the row
    monkeypatch.setattr(official_data, "load_hub", lambda *a, **k: [dict(rows[0], answers="x")])
    with pytest.raises(DataError, match=r"hub dataset Xnhyacinth/LongBench \(hotpotqa\) row 0: answers"):
        lb.LongBench(source="hub").samples("hotpotqa", tokenizer, 4096)


def test_hub_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    assert not tasks.data.hub_cached("Xnhyacinth/LongBench")
    (tmp_path / "datasets" / "Xnhyacinth___long_bench").mkdir(parents=True)
    assert tasks.data.hub_cached("Xnhyacinth/LongBench")
    assert not tasks.data.hub_cached("SakanaAI/ChouBun")
    (tmp_path / "hub" / "datasets--SakanaAI--ChouBun").mkdir(parents=True)
    assert tasks.data.hub_cached("SakanaAI/ChouBun")


# ------------------------------------------------------------------------------------------------
# generated passage_retrieval_en / passage_count
# ------------------------------------------------------------------------------------------------


def test_offline_text_paragraph_source():
    docs = offline_text.documents()
    assert docs is offline_text.documents()
    assert any(d.name.startswith("reference:") for d in docs) and docs[-1].name == "stdlib-docstrings"
    sents = offline_text.sentences()
    assert len(sents) > 2000 and len(set(sents)) == len(sents)  # every sentence once
    assert sum(e - s for s, e in offline_text.document_spans()) == len(sents)
    for s in sents[:: max(1, len(sents) // 300)]:
        assert s[0].isupper() and s[-1] in ".!?" and ">>>" not in s and "::=" not in s
    assert offline_text.text_info()["text"] == "python-language-reference+python-stdlib-docstrings"


def test_draw_paragraphs_distinct_and_sized(tokenizer):
    import random

    counts = offline_text.TokenCounts(tokenizer)
    runs = offline_text.draw_paragraphs(random.Random(1), counts, 6000, [3, 2, 1, 1, 1])
    assert len(runs) == 5
    covered = [i for s, e in runs for i in range(s, e)]
    assert len(covered) == len(set(covered))  # disjoint
    assert all(e > s for s, e in runs)
    spans = offline_text.document_spans()
    assert all(any(a <= s and e <= b for a, b in spans) for s, e in runs)  # inside one document
    total = sum(w * counts.span(*r) for w, r in zip([3, 2, 1, 1, 1], runs))
    assert abs(total - 6000) <= 60


def check_generated(s, tokenizer, task, length):
    assert s.task == task and s.metadata["source"] == "generated" and s.metadata["generated"] is True
    assert s.generated and s.metadata["length"] == length and s.metadata["length_unit"] == "tokens"
    n = n_tokens(tokenizer, s.prompt)
    assert s.metadata["prompt_tokens"] == n
    assert length - max(16, 0.02 * length) <= n <= length, (length, n)
    assert s.max_new_tokens == 32 and s.chat is True and s.all_classes is None
    assert s.metadata["text"] == offline_text.TEXT_SOURCE


@pytest.mark.parametrize("length", [2048, 6000])
def test_retrieval_answer_consistent(length, tokenizer, offline):
    suite = lb.LongBench(lengths=[length], n_samples=4)
    got = list(suite.samples("passage_retrieval_en", tokenizer, max_length=length + 32 + 64))
    assert [s.id for s in got] == [f"passage_retrieval_en-{length}-{i}" for i in range(4)]
    for s in got:
        check_generated(s, tokenizer, "passage_retrieval_en", length)
        context, query = split_prompt("passage_retrieval_en", s.prompt)
        paras = paragraphs(context)
        assert [k for k, _ in paras] == list(range(1, 31))
        texts = [t for _, t in paras]
        assert len(set(texts)) == 30  # distinct
        assert len(query.split()) >= 8 and query in offline_text.sentences()
        holders = [k for k, t in paras if query in t]
        assert len(holders) == 1  # in exactly one paragraph ...
        assert s.answers == [f"Paragraph {holders[0]}"] == [f"Paragraph {s.metadata['target_paragraph']}"]
        assert context.count(query) == 1 and s.prompt.count(query) == 2  # ... and once more as the abstract
    assert len({s.answers[0] for s in got}) > 1


@pytest.mark.parametrize("length", [1024, 4096])
def test_count_answer_consistent(length, tokenizer, offline):
    suite = lb.LongBench(lengths=[length], n_samples=5)
    got = list(suite.samples("passage_count", tokenizer, max_length=length + 32 + 64))
    for s in got:
        check_generated(s, tokenizer, "passage_count", length)
        context, query = split_prompt("passage_count", s.prompt)
        assert query == ""
        paras = paragraphs(context)
        assert [k for k, _ in paras] == list(range(1, len(paras) + 1))
        texts = [t for _, t in paras]
        unique = len(set(texts))
        assert s.answers == [str(unique)] and s.metadata["unique_paragraphs"] == unique
        assert 2 <= unique < len(texts) == s.metadata["paragraphs"]  # some paragraph repeats
        assert len(texts) == min(64, max(4, round(length / 250)))
        # distinct paragraphs share no sentence
        sents = [set(re.split(r"(?<=[.!?]) (?=[A-Z])", t)) for t in set(texts)]
        assert sum(len(x) for x in sents) == len(set().union(*sents))


def test_generated_deterministic(tokenizer, offline):
    def run(seed, **kw):
        return [(s.id, s.prompt, s.answers) for s in
                lb.LongBench(lengths=[2048], n_samples=2, **kw).samples("passage_retrieval_en", tokenizer, 4096, seed)]

    a = run(0)
    assert a == run(0)
    assert a[0][1] != a[1][1]
    b = run(1)
    assert [x[0] for x in b] == [x[0] for x in a] and b != a
    c = [(s.prompt, s.answers) for s in lb.LongBench(lengths=[1024], n_samples=2).samples(
        "passage_count", tokenizer, 4096, seed=5)]
    assert c == [(s.prompt, s.answers) for s in lb.LongBench(lengths=[1024], n_samples=2).samples(
        "passage_count", tokenizer, 4096, seed=5)]


def test_generated_lengths_and_defaults(tokenizer, offline):
    suite = lb.LongBench(lengths=[1024, 2048, 9999], n_samples=2)
    assert suite.generated_lengths("passage_count", 3000) == [1024, 2048]
    assert suite.generated_lengths("passage_count", 1100) == [1100 - 32 - 64]  # none fits: the largest that does
    default = lb.LongBench(n_samples=1)
    assert default.generated_lengths("passage_retrieval_en", 4096) == [4096 - 32 - 64]
    s = next(iter(default.samples("passage_count", tokenizer, max_length=3000)))
    check_generated(s, tokenizer, "passage_count", 3000 - 96)
    # the sample is lazy: taking one makes one
    it = lb.LongBench(n_samples=10**6).samples("passage_count", tokenizer, max_length=1200)
    assert next(it).id == "passage_count-1104-0"


def test_generated_unavailable(tokenizer, offline, monkeypatch):
    with pytest.raises(TaskUnavailable, match=r"^longbench/passage_retrieval_en: generated samples need lengths"):
        lb.LongBench().samples("passage_retrieval_en", tokenizer, max_length=1024)
    with pytest.raises(TaskUnavailable, match="offline text .* is too short"):
        lb.LongBench(lengths=[10**7]).samples("passage_count", tokenizer, max_length=10**8)
    with pytest.raises(KeyError):
        lb.LongBench().make_sample("qasper", tokenizer, 2048, 0)


def test_generated_source_option(tokenizer, offline):
    assert next(iter(lb.LongBench(data_dir=FIXTURES).samples("passage_count", tokenizer, 4096))).metadata[
        "source"] == "data-dir"
    s = next(iter(lb.LongBench(data_dir=FIXTURES, source="generated", n_samples=1).samples(
        "passage_count", tokenizer, 1200)))
    assert s.metadata["source"] == "generated"


def test_real_tokenizer_chat_template_fits(offline):
    """With SmolLM2's tokenizer and chat template, a default-length generated prompt is not cropped."""
    from harness.evaluate import format_prompt
    from harness.models import cache_root

    found = sorted(p.parent for p in (cache_root() / "models").glob("smollm2-*/tokenizer.json"))
    if not found:
        pytest.skip("no cached SmolLM2 tokenizer on this machine (made by the first model load)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(found[0])
    max_length = 2048
    for task in lb.GENERATED_TASKS:
        s = next(iter(lb.LongBench(n_samples=1).samples(task, tok, max_length)))
        ids = format_prompt(tok, s, "auto")
        assert len(ids) <= max_length - s.max_new_tokens
        assert len(ids) > max_length - s.max_new_tokens - 2 * lb.MARGIN  # and it fills the context


# ------------------------------------------------------------------------------------------------
# scoring goes through tasks.scoring
# ------------------------------------------------------------------------------------------------


def test_score_delegates(monkeypatch):
    from tasks import scoring

    calls = []
    monkeypatch.setattr(scoring, "score", lambda *a: calls.append(a) or 0.25)
    s = Sample(id="x", task="trec", prompt="p", answers=["Date"], max_new_tokens=64, all_classes=["Date", "City"])
    assert lb.LongBench().score(s, "Date") == 0.25
    assert calls == [("longbench/trec", "Date", ["Date"], ["Date", "City"])]


def test_score_exact_answers():
    suite = lb.LongBench()
    s = Sample(id="x", task="passage_retrieval_en", prompt="p", answers=["Paragraph 7"], max_new_tokens=32)
    assert suite.score(s, "Paragraph 7") == 1.0
    s = Sample(id="y", task="passage_count", prompt="p", answers=["5"], max_new_tokens=32)
    assert suite.score(s, "5") == 1.0
    s = Sample(id="z", task="narrativeqa", prompt="p", answers=["a brass key"], max_new_tokens=128)
    assert suite.score(s, "a brass key") == 1.0
