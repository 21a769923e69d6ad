"""Tests for the official LongBench (v1) per-example scorers (tasks/scoring/longbench.py).

Expected values are derived by hand from the official definitions (THUDM/LongBench
``LongBench/metrics.py`` + ``eval.py``): tokens are counted in the comments. Chinese cases first
assert jieba's segmentation (a precondition of the hand count), then check the arithmetic.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from tasks.scoring import score, task_names
from tasks.scoring import longbench as lb

needs_rouge = pytest.mark.skipif(importlib.util.find_spec("rouge") is None, reason="needs the `rouge` package")
needs_jieba = pytest.mark.skipif(importlib.util.find_spec("jieba") is None, reason="needs jieba")

ALL_TASKS = {
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
    "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
    "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p",
}


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


def rouge_f(p: float, r: float) -> float:
    """The `rouge` package's F: 2pr / (p + r + 1e-8)."""
    return 2.0 * (p * r) / (p + r + 1e-8)


# ------------------------------------------------------------------ registry / dispatch


def test_registry_has_exactly_the_21_tasks():
    assert set(lb.SCORERS) == ALL_TASKS
    assert set(task_names("longbench")) == ALL_TASKS


@pytest.mark.parametrize("task_id", ["longbench/nope", "longbench/", "longbench", "nobench/trec", "trec"])
def test_unknown_task_id_raises_keyerror(task_id):
    with pytest.raises(KeyError):
        score(task_id, "x", ["x"])


# ------------------------------------------------------------------ English QA F1


def test_qa_f1_counts_normalised_tokens():
    # pred -> "cat sat on mat" (articles + punctuation gone), gt -> "cat on mat": 3 common
    assert score("longbench/narrativeqa", "The cat sat on the mat.", ["a cat on a mat"]) == pytest.approx(
        f1(3 / 4, 3 / 3), abs=1e-12
    )
    # case and punctuation inside words: "U.S.A." -> "usa"
    assert score("longbench/hotpotqa", "U.S.A.", ["usa"]) == 1.0
    # multiset overlap: pred has paris twice, gt once -> 1 common; P = 1/2, R = 1
    assert score("longbench/qasper", "Paris, Paris", ["Paris"]) == pytest.approx(2 / 3)
    # paris x2 on both sides -> 2 common (a set overlap would give 1): P = 2/2, R = 2/3
    assert score("longbench/qasper", "Paris Paris", ["Paris, Paris, London"]) == pytest.approx(0.8)
    # "an" only removed as a whole word: "Anna" survives
    assert score("longbench/musique", "Anna", ["an Anna"]) == 1.0
    assert score("longbench/2wikimqa", "London", ["Paris"]) == 0.0
    assert score("longbench/multifieldqa_en", "", ["Paris"]) == 0.0


def test_max_over_answers_and_answer_shapes():
    # F1 with "paris france" (2 tokens; gt "paris" -> P 1/2, R 1 = 2/3; gt "paris france" -> 1)
    assert score("longbench/narrativeqa", "Paris France", ["Paris", "Paris, France", "Lyon"]) == 1.0
    assert score("longbench/narrativeqa", "Paris France", ["Paris", "Lyon"]) == pytest.approx(2 / 3)
    assert score("longbench/narrativeqa", "Paris", []) == 0.0  # official loop starts at 0
    assert score("longbench/narrativeqa", "Paris", "Paris") == 1.0  # a bare string is one answer
    out = score("longbench/narrativeqa", "Paris", ("Paris",))
    assert isinstance(out, float) and out == 1.0


# ------------------------------------------------------------------ Chinese F1


@needs_jieba
def test_qa_f1_zh_on_jieba_words():
    import jieba

    assert jieba.lcut("北京是中国的首都。") == ["北京", "是", "中国", "的", "首都", "。"]
    assert jieba.lcut("中国的首都是北京") == ["中国", "的", "首都", "是", "北京"]
    # "。" normalises to "" and is dropped: same 5 words on both sides
    assert score("longbench/multifieldqa_zh", "北京是中国的首都。", ["中国的首都是北京"]) == 1.0

    assert jieba.lcut("今天天气很好，我们去公园散步。") == ["今天天气", "很", "好", "，", "我们", "去", "公园", "散步", "。"]
    assert jieba.lcut("今天我们去公园。") == ["今天", "我们", "去", "公园", "。"]
    # 7 vs 4 words, common {我们, 去, 公园}: P = 3/7, R = 3/4 -> F1 = 6/11
    got = score("longbench/multifieldqa_zh", "今天天气很好，我们去公园散步。", ["今天我们去公园。"])
    assert got == pytest.approx(6 / 11, abs=1e-12)


@needs_jieba
def test_qa_f1_zh_official_punctuation_list_lacks_opening_guillemet():
    import jieba

    assert jieba.lcut("《红楼梦》") == ["《", "红楼梦", "》"]
    # "》" is removed but "《" is not in the official list: [《, 红楼梦] vs [红楼梦] -> P 1/2, R 1
    assert score("longbench/multifieldqa_zh", "《红楼梦》", ["红楼梦"]) == pytest.approx(2 / 3)
    # full-width letters are lower-cased too, whitespace deleted
    assert lb.normalize_zh_answer(" ＡＢ！c ") == "ａｂc"


# ------------------------------------------------------------------ ROUGE-L (rouge package)


@needs_rouge
def test_rouge_l_counts_unique_words_case_sensitively():
    # hyp words {the, cat, sat, on, mat} (5 unique), ref {the, cat, is, on, mat} (5 unique);
    # LCS = the cat on the mat, as a *set* {the, cat, on, mat} = 4 -> P = R = 4/5
    got = score("longbench/gov_report", "the cat sat on the mat", ["the cat is on the mat"])
    assert got == pytest.approx(rouge_f(4 / 5, 4 / 5), abs=1e-12)
    # order matters (an LCS, not a bag of words): "b a" vs "a b" -> LCS 1 of 2 words each
    assert score("longbench/gov_report", "b a", ["a b"]) == pytest.approx(rouge_f(1 / 2, 1 / 2), abs=1e-12)
    # no lower-casing: only "cat" in common; P = R = 1/2
    assert score("longbench/qmsum", "The cat", ["the cat"]) == pytest.approx(rouge_f(1 / 2, 1 / 2), abs=1e-12)


@needs_rouge
def test_rouge_l_is_summary_level_over_dot_sentences():
    # hyp sentences "a b" and "c d"; the ref sentence "a c" gets LCS {a} and {c}: union 2.
    # m = |{a, c}| = 2, n = |{a, b, c, d}| = 4 -> R = 1, P = 1/2
    assert score("longbench/multi_news", "a b. c d", ["a c"]) == pytest.approx(rouge_f(1 / 2, 1), abs=1e-12)


@needs_rouge
def test_rouge_failures_score_zero_and_max_over_answers():
    assert score("longbench/gov_report", "", ["a summary"]) == 0.0  # package raises on empty hyp
    assert score("longbench/gov_report", "...", ["a summary"]) == 0.0  # only dots -> no sentence
    assert score("longbench/gov_report", "a summary", [""]) == 0.0  # empty reference
    assert score("longbench/gov_report", "x y", ["x z", "x y"]) == pytest.approx(rouge_f(1, 1), abs=1e-12)


def _long_case(extra: int) -> tuple[str, str]:
    ref = " ".join(f"w{i}" for i in range(10))
    return ref + " " + " ".join(f"x{i}" for i in range(extra)), ref


def _nested(levels: int, fn):
    return _nested(levels - 1, fn) if levels else fn()


@needs_rouge
def test_rouge_long_sentence_recursion_is_official_and_caller_independent():
    # The reference is fully recovered: R = 1, P = 10 / (10 + extra)
    hyp, ref = _long_case(500)
    expected = rouge_f(10 / 510, 1.0)
    assert score("longbench/gov_report", hyp, [ref]) == pytest.approx(expected, abs=1e-12)
    # same value when the caller is already 900 frames deep (the package recurses ~500 levels)
    assert _nested(900, lambda: score("longbench/gov_report", hyp, [ref])) == pytest.approx(expected, abs=1e-12)
    # rouge 1.0.1's recursive LCS overflows on a 1210-word sentence: the official value is 0.0,
    # also when this process has raised its recursion limit
    hyp, ref = _long_case(1200)
    assert score("longbench/gov_report", hyp, [ref]) == 0.0
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        assert score("longbench/gov_report", hyp, [ref]) == 0.0
    finally:
        sys.setrecursionlimit(old)


# A minimal stand-in for the official run: `python eval.py` calls scorer() from a module-level
# loop, scorer calls the metric, the metric calls Rouge().get_scores inside a bare try/except.
_OFFICIAL_CHAIN = textwrap.dedent(
    """
    import json, sys
    from rouge import Rouge
    def rouge_score(prediction, ground_truth, **kwargs):
        rouge = Rouge()
        try:
            scores = rouge.get_scores([prediction], [ground_truth], avg=True)
        except:
            return 0.0
        return scores["rouge-l"]["f"]
    def scorer(predictions, answers):
        out = []
        for (prediction, ground_truths) in zip(predictions, answers):
            score = 0.
            for ground_truth in ground_truths:
                score = max(score, rouge_score(prediction, ground_truth, all_classes=None))
            out.append(score)
        return out
    data = json.loads(sys.stdin.read())
    for key in data:
        result = scorer(data[key][0], data[key][1])
        print(json.dumps(result))
    """
)


@needs_rouge
def test_rouge_recursion_cutoff_matches_an_official_style_run():
    import json

    cases = [_long_case(n) for n in range(972, 990)]
    preds, answers = [c[0] for c in cases], [[c[1]] for c in cases]
    run = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_CHAIN], input=json.dumps({"x": [preds, answers]}),
        capture_output=True, text=True, check=True,
    )
    official = json.loads(run.stdout)
    assert 0.0 in official and official[0] > 0  # the cut-off lies inside the swept range
    assert [score("longbench/gov_report", p, a) for p, a in zip(preds, answers)] == official


@needs_rouge
@needs_jieba
def test_rouge_zh_on_space_joined_jieba_words():
    import jieba

    assert jieba.lcut("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert jieba.lcut("我爱上海") == ["我", "爱", "上海"]
    # LCS = 我 爱 (2); n = 4, m = 3 -> P = 2/4, R = 2/3
    got = score("longbench/vcsum", "我爱北京天安门", ["我爱上海"])
    assert got == pytest.approx(rouge_f(2 / 4, 2 / 3), abs=1e-12)
    assert score("longbench/dureader", "我爱上海", ["我爱上海"]) == pytest.approx(rouge_f(1, 1), abs=1e-12)
    assert score("longbench/dureader", "", ["我爱上海"]) == 0.0


# ------------------------------------------------------------------ classification


CLASSES = ["Animal", "Animal species", "Color", "Human", "Human being", "Human being individual"]


@pytest.mark.parametrize(
    "prediction, truth, expected",
    [
        ("Animal", "Animal", 1.0),
        # both "Animal" and "Animal species" match; "Animal" is a proper substring of the truth -> removed
        ("Animal species", "Animal species", 1.0),
        # truth "Animal" is not removed (equal), "Animal species" is not in "Animal": 2 left
        ("Animal species", "Animal", 0.5),
        ("Color or Animal", "Animal", 0.5),
        ("Color", "Animal", 0.0),
        ("no class at all", "Animal", 0.0),
        # official removal-while-iterating: removing "Human" shifts "Human being" under the
        # iterator, so it is skipped and survives next to the truth -> 1/2, not 1
        ("Human being individual", "Human being individual", 0.5),
    ],
)
def test_classification_all_classes_matching(prediction, truth, expected):
    assert score("longbench/trec", prediction, [truth], CLASSES) == expected


def test_classification_needs_all_classes():
    with pytest.raises(ValueError):
        score("longbench/lsht", "Animal", ["Animal"], None)


# ------------------------------------------------------------------ first-line rule


def test_first_line_rule_only_for_trec_triviaqa_samsum_lsht():
    # leading newlines stripped, then only the first line counts
    assert score("longbench/trec", "\n\nColor\nAnimal", ["Animal"], CLASSES) == 0.0
    assert score("longbench/trec", "\n\nAnimal\nColor", ["Animal"], CLASSES) == 1.0
    assert score("longbench/lsht", "Color\nAnimal", ["Animal"], CLASSES) == 0.0
    assert score("longbench/triviaqa", "\nParis\nLondon", ["London"]) == 0.0
    # narrativeqa keeps both lines: "paris london" vs "london" -> P 1/2, R 1
    assert score("longbench/narrativeqa", "\nParis\nLondon", ["London"]) == pytest.approx(2 / 3)


@needs_rouge
def test_first_line_rule_samsum():
    assert score("longbench/samsum", "x y\nz", ["z"]) == 0.0
    assert score("longbench/qmsum", "x y\nz", ["z"]) > 0.0  # not cut: "x y z" is one sentence


# ------------------------------------------------------------------ retrieval / count


def test_retrieval_and_count():
    assert score("longbench/passage_retrieval_en", "Paragraph 3", ["Paragraph 3"]) == 1.0
    assert score("longbench/passage_retrieval_en", "Paragraph 3 or Paragraph 12", ["Paragraph 12"]) == 0.5
    assert score("longbench/passage_retrieval_en", "It is paragraph thirty", ["Paragraph 3"]) == 0.0
    assert score("longbench/passage_retrieval_en", "Paragraph 30", ["Paragraph 3"]) == 0.0  # whole numbers
    assert score("longbench/passage_retrieval_zh", "段落5", ["段落5"]) == 1.0
    assert score("longbench/passage_retrieval_zh", "答案是段落5，不是段落6和段落7", ["段落5"]) == pytest.approx(1 / 3)
    # 12 and 20 found, one right
    assert score("longbench/passage_count", "There are 12 unique paragraphs out of 20.", ["12"]) == 0.5
    assert score("longbench/passage_count", "twelve", ["12"]) == 0.0
    assert lb.count_score("7", 7) == 1.0  # ground truth compared as str, like the official code


# ------------------------------------------------------------------ code similarity


def test_code_sim_picks_first_line_without_comment_or_fence():
    pred = "\n```python\n# comment\nx = 1  # set x\ny = foo(1)\nz = 2\n"
    # the code line is "y = foo(1)"; vs "y = foo(2)": matching blocks "y = foo(" (8) + ")" (1)
    # -> ratio 2*9/20 = 0.9 -> 90
    assert score("longbench/lcc", pred, ["y = foo(2)"]) == 0.9
    assert score("longbench/repobench-p", "// c\nreturn a;", ["return a;"]) == 1.0
    # an empty line after a skipped one is a valid (empty) code line -> ratio("", gt) = 0
    assert score("longbench/lcc", "# c\n\nfoo()", ["foo()"]) == 0.0
    # nothing usable -> "" ; ratio("", "") is 100 (equality is checked before emptiness)
    assert score("longbench/lcc", "# only a comment", [""]) == 1.0


def test_fuzz_ratio_rounds_half_to_even():
    # one matching char out of 8 + 8: 100 * 2/16 = 12.5 -> round() -> 12 (not 13)
    assert lb.fuzz_ratio("abcdefgh", "aijklmno") == 12
    assert score("longbench/lcc", "abcdefgh", ["aijklmno"]) == 0.12
    # 100 * 2*3/8 = 75
    assert lb.fuzz_ratio("abcd", "abce") == 75
    assert lb.fuzz_ratio("", "x") == 0 and lb.fuzz_ratio("x", "x") == 100


def test_fuzz_ratio_matches_fuzzywuzzy_difflib_backend():
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")
    if importlib.util.find_spec("Levenshtein") is not None:
        pytest.skip("python-Levenshtein installed: fuzzywuzzy would not use difflib")
    import random

    rng = random.Random(1)
    alphabet = "abc def(x);=+_1\t#"
    for _ in range(400):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 250)))  # >200 exercises autojunk
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 250)))
        assert lb.fuzz_ratio(a, b) == fuzz.ratio(a, b)


# ------------------------------------------------------------------ range


@needs_rouge
@needs_jieba
def test_every_task_returns_a_float_in_unit_interval():
    answers = {
        "passage_retrieval_en": ["Paragraph 1"], "passage_retrieval_zh": ["段落1"], "passage_count": ["1"],
        "trec": ["Animal"], "lsht": ["Animal"],
    }
    for task in ALL_TASKS:
        got = score(f"longbench/{task}", "Animal 1 Paragraph 1 段落1", answers.get(task, ["Animal 1"]), CLASSES)
        assert isinstance(got, float) and 0.0 <= got <= 1.0, task
