"""Tests for the official ChouBun per-example scorers (tasks/scoring/choubun.py).

Each case first asserts the MeCab (fugashi + unidic-lite) segmentation observed for its inputs — the
precondition of the hand count — then checks the value derived by hand from the official
definitions (SakanaAI/evo-memory ``choubun_metrics.py``: token F1 on normalised surfaces; ROUGE-L F
of the ``rouge`` package on space-joined surfaces; max over the references).
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fugashi") is None or importlib.util.find_spec("unidic_lite") is None,
    reason="needs fugashi + unidic-lite",
)

from tasks.scoring import score, task_names  # noqa: E402
from tasks.scoring import choubun as cb  # noqa: E402

needs_rouge = pytest.mark.skipif(importlib.util.find_spec("rouge") is None, reason="needs the `rouge` package")


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def rouge_f(p: float, r: float) -> float:
    """The `rouge` package's F: 2pr / (p + r + 1e-8)."""
    return 2.0 * (p * r) / (p + r + 1e-8)


def test_registry_and_unknown_task():
    assert set(cb.SCORERS) == {"wiki_qa", "edinet_qa", "corp_sec_qa", "corp_sec_sum"}
    assert task_names("choubun") == ["corp_sec_qa", "corp_sec_sum", "edinet_qa", "wiki_qa"]
    with pytest.raises(KeyError):
        score("choubun/jsquad", "東京", ["東京"])


def test_uses_unidic_lite():
    import unidic_lite

    info = cb._get_tagger().dictionary_info
    assert info[0]["filename"].startswith(unidic_lite.DICDIR)


def test_f1_on_mecab_surfaces():
    assert cb.mecab_words("東京都に住んでいます。") == ["東京", "都", "に", "住ん", "で", "い", "ます", "。"]
    assert cb.mecab_words("東京に住んでいる。") == ["東京", "に", "住ん", "で", "いる", "。"]
    # "。" normalises to "" and is dropped: 7 vs 5 words, common {東京, に, 住ん, で} = 4
    expected = f1(4 / 7, 4 / 5)
    assert expected == pytest.approx(2 / 3)
    for task in ("wiki_qa", "edinet_qa", "corp_sec_qa"):
        assert score(f"choubun/{task}", "東京都に住んでいます。", ["東京に住んでいる。"]) == pytest.approx(expected, abs=1e-12)


def test_f1_partial_answer_and_max_over_answers():
    assert cb.mecab_words("愛知県豊田市") == ["愛知", "県", "豊田", "市"]
    assert cb.mecab_words("トヨタ自動車の本社は愛知県豊田市にあります。") == [
        "トヨタ", "自動", "車", "の", "本社", "は", "愛知", "県", "豊田", "市", "に", "あり", "ます", "。",
    ]
    # 4 predicted words all in the 13-word (。 dropped) answer: P = 1, R = 4/13 -> 8/17
    long_answer = "トヨタ自動車の本社は愛知県豊田市にあります。"
    assert score("choubun/corp_sec_qa", "愛知県豊田市", [long_answer]) == pytest.approx(8 / 17, abs=1e-12)
    assert score("choubun/corp_sec_qa", "愛知県豊田市", ["大阪", long_answer, "愛知県豊田市"]) == 1.0
    assert score("choubun/corp_sec_qa", "愛知県豊田市", ["大阪"]) == 0.0
    assert score("choubun/corp_sec_qa", "愛知県豊田市", []) == 0.0
    assert score("choubun/corp_sec_qa", "", [long_answer]) == 0.0


def test_f1_normalisation_punctuation_case_and_guillemet_quirk():
    assert cb.mecab_words("「ＡＩ」の研究、開発") == ["「", "ＡＩ", "」", "の", "研究", "、", "開発"]
    # brackets and "、" vanish; ＡＩ lower-cases to ａｉ: [ａｉ, の, 研究, 開発] vs [ａｉ, の, 研究]
    assert cb.mecab_words("ＡＩの研究") == ["ＡＩ", "の", "研究"]
    assert score("choubun/wiki_qa", "「ＡＩ」の研究、開発", ["ＡＩの研究"]) == pytest.approx(f1(3 / 4, 1), abs=1e-12)
    # the official list removes "》" but not "《": [《, 源氏, 物語, の, 作者] vs [源氏, 物語]
    assert cb.mecab_words("《源氏物語》の作者") == ["《", "源氏", "物語", "》", "の", "作者"]
    assert score("choubun/wiki_qa", "《源氏物語》の作者", ["源氏物語"]) == pytest.approx(f1(2 / 5, 1), abs=1e-12)


@needs_rouge
def test_rouge_l_on_space_joined_surfaces_max_over_five_references():
    pred = "当社の売上高は増加した。"
    ref = "売上高が増加しました。"
    assert cb.mecab_words(pred) == ["当社", "の", "売上", "高", "は", "増加", "し", "た", "。"]
    assert cb.mecab_words(ref) == ["売上", "高", "が", "増加", "し", "まし", "た", "。"]
    assert cb.mecab_words("本社は東京にある。") == ["本社", "は", "東京", "に", "ある", "。"]
    # LCS = 売上 高 増加 し た 。 (6); 9 and 8 unique words -> P = 6/9, R = 6/8
    expected = rouge_f(6 / 9, 6 / 8)
    assert score("choubun/corp_sec_sum", pred, [ref]) == pytest.approx(expected, abs=1e-12)
    # vs "本社 は 東京 に ある 。": LCS = は 。 -> P = 2/9, R = 2/6; the max over references wins
    other = rouge_f(2 / 9, 2 / 6)
    assert score("choubun/corp_sec_sum", pred, ["本社は東京にある。"]) == pytest.approx(other, abs=1e-12)
    refs = ["本社は東京にある。", ref, "大阪", "東京", "本社は東京にある。"]
    assert score("choubun/corp_sec_sum", pred, refs) == pytest.approx(expected, abs=1e-12)
    # punctuation is kept as a token for ROUGE (not normalised): without "。" the LCS loses it
    assert score("choubun/corp_sec_sum", "当社の売上高は増加した", [ref]) == pytest.approx(
        rouge_f(5 / 8, 5 / 8), abs=1e-12
    )


@needs_rouge
def test_rouge_empty_prediction_scores_zero():
    assert score("choubun/corp_sec_sum", "", ["売上高が増加しました。"]) == 0.0
    assert score("choubun/corp_sec_sum", "。", ["。"]) == pytest.approx(rouge_f(1, 1), abs=1e-12)
