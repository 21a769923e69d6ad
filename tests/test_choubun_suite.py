"""Tests for the ChouBun suite (tasks/choubun.py): official prompts and answer lengths, data from a
folder (tiny fixtures written for these tests in the hub's record format) or the (stubbed) hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.choubun as cb
import tasks.official_data as official_data
from tasks import SUITES, get_suite
from tasks.base import DataError, Sample, TaskUnavailable

FIXTURES = Path(__file__).parent / "fixtures" / "choubun"


class CharTokenizer:
    """Never used for data tasks beyond the call signature; any tokenizer works."""

    def __call__(self, text, add_special_tokens=False):  # pragma: no cover
        return {"input_ids": list(text)}


TOK = CharTokenizer()


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(official_data, "hub_available", lambda repo: False)

    def no_hub(*args, **kwargs):  # pragma: no cover - must not be called
        raise AssertionError("the hub must not be tried")

    monkeypatch.setattr(official_data, "load_hub", no_hub)


def records(task):
    return [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_registered_and_constants():
    assert SUITES["choubun"] is cb.ChouBun
    s = get_suite("choubun")
    assert s.tasks == ("wiki_qa", "edinet_qa", "corp_sec_qa", "corp_sec_sum")
    assert s.task_ids == {"wiki_qa": "JA.WikiQA", "edinet_qa": "JA.EdinetQA", "corp_sec_qa": "JA.CorpSecQA",
                          "corp_sec_sum": "JA.CorpSecSum"}
    assert s.generated is False
    assert cb.MAX_NEW_TOKENS == {"wiki_qa": 64, "edinet_qa": 64, "corp_sec_qa": 64, "corp_sec_sum": 128}
    assert cb.HUB_REPO == "SakanaAI/ChouBun"
    assert cb.PROMPTS["wiki_qa"] == (
        "以下の文書を注意深く読み、続く質問に答えてください。"
        "回答は必ず文書内の連続した文字列（テキストスパン）から抽出してください。"
        "\n### 文書 ###\n{context}\n### 質問 ###\n{input}\n### 回答 ###\n")
    assert cb.PROMPTS["edinet_qa"] == cb.PROMPTS["wiki_qa"]
    # verbatim from the NAMM config: no newline before the document header for corp_sec_qa
    assert cb.PROMPTS["corp_sec_qa"] == cb.PROMPTS["wiki_qa"].replace("。\n### 文書 ###", "。### 文書 ###")
    assert cb.PROMPTS["corp_sec_sum"] == (
        "以下の文書を要約してください。要約は短く簡潔にしてください。"
        "また、文書の全体的な考え方、傾向、洞察を反映させてください。"
        "\n### 文書 ###\n{context}\n### 要約 ###\n")
    with pytest.raises(ValueError, match="no generated tasks"):
        cb.ChouBun(source="generated")
    with pytest.raises(ValueError, match="no option"):
        get_suite("choubun", {"lengths": 1024})


@pytest.mark.parametrize("task", list(cb.TASK_IDS))
def test_fixture_loads_with_official_prompt(task, offline):
    got = list(cb.ChouBun(data_dir=FIXTURES).samples(task, TOK, max_length=8192))
    recs = records(task)
    assert len(got) == len(recs) >= 1
    for s, rec in zip(got, recs):
        assert isinstance(s, Sample) and s.task == task and s.id == rec["_id"]
        assert s.prompt == cb.PROMPTS[task].format(**rec)
        assert s.answers == rec["answers"] and s.all_classes is None
        assert s.max_new_tokens == cb.MAX_NEW_TOKENS[task] and s.chat is True
        assert s.metadata["source"] == "data-dir" and s.metadata["generated"] is False
        assert s.metadata["language"] == "ja"


def test_exact_prompt(offline):
    s = next(iter(cb.ChouBun(data_dir=FIXTURES).samples("wiki_qa", TOK, 8192)))
    assert s.prompt == (
        "以下の文書を注意深く読み、続く質問に答えてください。"
        "回答は必ず文書内の連続した文字列（テキストスパン）から抽出してください。\n"
        "### 文書 ###\n"
        "富士山は静岡県と山梨県にまたがる活火山である。標高は三七七六メートル。\n"
        "### 質問 ###\n富士山の標高は？\n### 回答 ###\n")
    summ = next(iter(cb.ChouBun(data_dir=FIXTURES).samples("corp_sec_sum", TOK, 8192)))
    assert len(summ.answers) == 5 and summ.prompt.endswith("\n### 要約 ###\n") and summ.max_new_tokens == 128


@pytest.mark.parametrize("task", list(cb.TASK_IDS))
def test_unavailable_offline(task, tmp_path, offline):
    for suite in (cb.ChouBun(), cb.ChouBun(data_dir=tmp_path)):
        with pytest.raises(TaskUnavailable) as err:
            suite.samples(task, TOK, 8192)
        msg = str(err.value)
        assert msg.startswith(f"choubun/{task}: no data here; pass --data-dir DIR with {task}.jsonl")
        assert "run with hub access" in msg and "\n" not in msg
    with pytest.raises(TaskUnavailable, match=f"^choubun/{task}: no {task}.jsonl in "):
        cb.ChouBun(data_dir=tmp_path, source="data-dir").samples(task, TOK, 8192)


def test_malformed(tmp_path, offline):
    good = (FIXTURES / "wiki_qa.jsonl").read_text(encoding="utf-8").splitlines()[0]
    path = tmp_path / "wiki_qa.jsonl"
    path.write_text(good + "\n" + good.replace('"answers": [', '"answers": 3, "x": [') + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:2: answers must be a non-empty list of strings"):
        cb.ChouBun(data_dir=tmp_path).samples("wiki_qa", TOK, 8192)
    path.write_text(good + "\nnot json\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:2: not valid JSON"):
        cb.ChouBun(data_dir=tmp_path).samples("wiki_qa", TOK, 8192)
    rec = json.loads(good)
    del rec["_id"]
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:1: record lacks field\\(s\\) _id"):
        cb.ChouBun(data_dir=tmp_path).samples("wiki_qa", TOK, 8192)


def test_hub(monkeypatch):
    calls = []

    def fake_load_hub(repo, required=(), **kwargs):
        calls.append((repo, kwargs))
        return records("corp_sec_qa")

    monkeypatch.setattr(official_data, "hub_available", lambda repo: repo == "SakanaAI/ChouBun")
    monkeypatch.setattr(official_data, "load_hub", fake_load_hub)
    got = list(cb.ChouBun().samples("corp_sec_qa", TOK, 8192))
    assert calls == [("SakanaAI/ChouBun", {"name": "corp_sec_qa", "split": "test"})]
    assert [s.metadata["source"] for s in got] == ["hub", "hub"]


def test_score_delegates(monkeypatch):
    from tasks import scoring

    calls = []
    monkeypatch.setattr(scoring, "score", lambda *a: calls.append(a) or 0.5)
    s = Sample(id="x", task="wiki_qa", prompt="p", answers=["琵琶湖"], max_new_tokens=64)
    assert cb.ChouBun().score(s, "琵琶湖") == 0.5
    assert calls == [("choubun/wiki_qa", "琵琶湖", ["琵琶湖"], None)]


def test_score_exact_answer():
    s = Sample(id="x", task="wiki_qa", prompt="p", answers=["琵琶湖"], max_new_tokens=64)
    assert cb.ChouBun().score(s, "琵琶湖") == 1.0
