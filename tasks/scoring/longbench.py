"""Official LongBench (v1) per-example scorers.

Reproduces ``THUDM/LongBench`` ``LongBench/eval.py`` (``scorer``) on top of the metric functions of
``LongBench/metrics.py``, one record at a time:

* for ``trec``, ``triviaqa``, ``samsum`` and ``lsht`` the prediction is first ``lstrip('\\n')``-ed
  and cut to its first line;
* the record's score is ``max(0, metric(prediction, answer) for answer in answers)``.

The task score is ``100 * mean`` of these values (not computed here).

Where the official number depends on a library, that library is used: the ``rouge`` package
(pltrdy, 1.0.1) for ROUGE-L, ``jieba`` for Chinese words, ``difflib.SequenceMatcher`` for the
``fuzzywuzzy`` ratio (fuzzywuzzy falls back to difflib when python-Levenshtein is absent, which is
the official setup; the Levenshtein backend gives different numbers, so it is deliberately not
used). Official quirks reproduced on purpose are listed in each function's docstring.
"""

from __future__ import annotations

import _thread
import difflib
import re
import string
import sys
from collections import Counter
from typing import Callable, Iterable, Sequence

__all__ = [
    "SCORERS",
    "FIRST_LINE_TASKS",
    "normalize_answer",
    "normalize_zh_answer",
    "token_f1",
    "qa_f1_score",
    "qa_f1_zh_score",
    "rouge_score",
    "rouge_zh_score",
    "classification_score",
    "retrieval_score",
    "retrieval_zh_score",
    "count_score",
    "code_sim_score",
    "fuzz_ratio",
    "official_rouge_l_f",
]

# --------------------------------------------------------------------------------------------
# Normalisation and token F1
# --------------------------------------------------------------------------------------------

#: Chinese/full-width punctuation removed by the official Chinese (and ChouBun Japanese)
#: normaliser, in addition to ``string.punctuation``. Verbatim from the official list: note it
#: contains the closing ``》`` but not the opening ``《``.
CJK_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
    "–—‘’‛“”„‟…‧﹏."
)
_ASCII_PUNCT = frozenset(string.punctuation)
_CJK_PUNCT = frozenset(string.punctuation + CJK_PUNCTUATION)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation, drop articles, squeeze spaces.

    Order as in the official code: lower → remove punctuation → remove ``a|an|the`` words →
    collapse whitespace.
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _ASCII_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def normalize_zh_answer(s: str) -> str:
    """Chinese normalisation: lower-case, drop ASCII + CJK punctuation, delete all whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _CJK_PUNCT)
    return "".join(s.split())


def token_f1(prediction_tokens: Sequence[str], ground_truth_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1 (multiset overlap), 0 when nothing overlaps (including empty inputs)."""
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _jieba_words(text: str) -> list[str]:
    """``jieba.cut(text, cut_all=False)`` (precise mode) as a list; jieba is imported lazily."""
    import jieba  # noqa: PLC0415 - heavy import (dictionary load) only when a Chinese task is scored

    jieba.setLogLevel(30)  # silence the "Building prefix dict" chatter; does not change the cut
    return list(jieba.cut(text, cut_all=False))


# --------------------------------------------------------------------------------------------
# ROUGE-L through the official `rouge` package
# --------------------------------------------------------------------------------------------

#: CPython's default recursion limit, under which the official numbers were produced.
_OFFICIAL_RECURSION_LIMIT = 1000

#: 1-based stack position of ``Rouge.get_scores`` when the official ``python eval.py`` scores an
#: English rouge task: ``<module>`` → ``scorer`` → ``rouge_score`` → ``get_scores``.
ROUGE_EN_OFFICIAL_DEPTH = 4
#: Same for the Chinese tasks, which go through one more frame (``rouge_zh_score``).
ROUGE_ZH_OFFICIAL_DEPTH = 5


def _get_scores_below(levels: int, rouge, hyps: list, refs: list) -> dict:
    """``rouge.get_scores(hyps, refs, avg=True)`` called from ``levels`` nested frames of this function.

    Plain positional calls only, so every frame costs exactly what the official call chain's do.
    """
    if levels > 1:
        return _get_scores_below(levels - 1, rouge, hyps, refs)
    return rouge.get_scores(hyps, refs, avg=True)


def _rouge_at_official_depth(hypothesis: str, reference: str, official_depth: int) -> dict | None:
    """Official ``Rouge().get_scores([hyp], [ref], avg=True)``, with the official recursion head-room.

    ``rouge`` 1.0.1 rebuilds the LCS recursively, so long single "sentences" (Chinese text has no
    ``.``) raise ``RecursionError`` and the official ``rouge_score`` returns 0.0 for them. Where that
    happens depends on how deep the stack already is and on ``sys.getrecursionlimit()``, so calling
    the package from our (arbitrarily deep) stack would move the cut-off. Instead ``get_scores``
    runs on a fresh low-level thread (its entry function is the bottom frame, like the official
    script's ``<module>``), padded so that its frame sits at ``official_depth + (limit - 1000)``:
    the same head-room below the recursion limit as in the official ``python eval.py`` run under
    the default limit. Returns ``None`` when the package raised (the official ``except:`` case).
    """
    from rouge import Rouge  # noqa: PLC0415

    rouge, hyps, refs = Rouge(), [hypothesis], [reference]
    box: dict = {}
    done = _thread.allocate_lock()
    done.acquire()

    def entry() -> None:  # stack position 1 on the new thread
        try:
            levels = official_depth + (sys.getrecursionlimit() - _OFFICIAL_RECURSION_LIMIT) - 2
            if levels >= 1:
                box["result"] = _get_scores_below(levels, rouge, hyps, refs)
            else:  # only if the limit was lowered below the official one: closest we can get
                box["result"] = rouge.get_scores(hyps, refs, avg=True)
        except BaseException:  # noqa: BLE001 - the official code has a bare `except:`
            box["result"] = None
        finally:
            done.release()

    _thread.start_new_thread(entry, ())
    done.acquire()
    return box["result"]


def official_rouge_l_f(hypothesis: str, reference: str, official_depth: int = ROUGE_EN_OFFICIAL_DEPTH) -> float:
    """ROUGE-L F of the ``rouge`` package (default metrics), 0.0 whenever the package raises.

    This is the official ``rouge_score``: ``Rouge().get_scores([pred], [gt], avg=True)`` inside a
    bare ``try/except`` returning 0.0, then ``["rouge-l"]["f"]``. The package splits each text into
    "sentences" on ``.``, tokens on single spaces (no lower-casing, no punctuation stripping),
    counts *unique* words and computes summary-level union-LCS; it raises on an empty text (also
    one made only of dots) and ``RecursionError`` on very long sentences — both give 0.0, as in the
    official run (see :func:`_rouge_at_official_depth` for how the recursion cut-off is kept).
    """
    scores = _rouge_at_official_depth(hypothesis, reference, official_depth)
    if scores is None:
        return 0.0
    return float(scores["rouge-l"]["f"])


# --------------------------------------------------------------------------------------------
# Metrics: metric(prediction, ground_truth, all_classes) for ONE ground truth
# --------------------------------------------------------------------------------------------


def qa_f1_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Token F1 after SQuAD normalisation, whitespace tokens."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Token F1 on jieba words, each word normalised (:func:`normalize_zh_answer`), empties dropped."""

    def words(text: str) -> list[str]:
        return [w for w in (normalize_zh_answer(t) for t in _jieba_words(text)) if w]

    return token_f1(words(prediction), words(ground_truth))


def rouge_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """ROUGE-L F of the ``rouge`` package on the raw strings (see :func:`official_rouge_l_f`)."""
    return official_rouge_l_f(prediction, ground_truth, ROUGE_EN_OFFICIAL_DEPTH)


def rouge_zh_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """ROUGE-L F on jieba words joined with single spaces (whitespace words are kept, as officially)."""
    return official_rouge_l_f(
        " ".join(_jieba_words(prediction)), " ".join(_jieba_words(ground_truth)), ROUGE_ZH_OFFICIAL_DEPTH
    )


def classification_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Official class matching: ``1 / #matched classes`` if the true class is among them, else 0.

    Matched classes are the ``all_classes`` entries that occur as substrings of the prediction.
    Entries that are proper substrings of the ground truth are then removed *while iterating over
    the same list*, so an entry directly following a removed one is skipped and survives — the
    official behaviour, reproduced here. (The official fallback to the most similar class is dead
    code — its guard ``em_match_list != 0`` is always true — so it is not reproduced.)
    """
    if all_classes is None:
        raise ValueError("classification_score needs the record's all_classes")
    matched = [c for c in all_classes if c in prediction]
    i = 0  # replay `for term in matched: ... matched.remove(term)` (list iterator = running index)
    while i < len(matched):
        term = matched[i]
        if term in ground_truth and term != ground_truth:
            matched.remove(term)
        i += 1
    return 1.0 / len(matched) if ground_truth in matched else 0.0


def _fraction_equal(numbers: list[str], target: str) -> float:
    """Share of ``numbers`` equal to ``target`` (0 when there are none)."""
    if not numbers:
        return 0.0
    return float(sum(1 for n in numbers if n == target) / len(numbers))


def _paragraph_id(ground_truth: str, pattern: str) -> str:
    found = re.findall(pattern, ground_truth)
    if not found:  # the official code would fail with IndexError here too
        raise ValueError(f"ground truth {ground_truth!r} has no paragraph id matching {pattern!r}")
    return found[0]


def retrieval_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Share of the integers in the prediction equal to the id in ``"Paragraph N"``."""
    return _fraction_equal(re.findall(r"\d+", prediction), _paragraph_id(ground_truth, r"Paragraph (\d+)"))


def retrieval_zh_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Share of the integers in the prediction equal to the id in ``"段落N"``."""
    return _fraction_equal(re.findall(r"\d+", prediction), _paragraph_id(ground_truth, r"段落(\d+)"))


def count_score(prediction: str, ground_truth, all_classes=None) -> float:
    """Share of the integers in the prediction equal to the ground-truth count."""
    return _fraction_equal(re.findall(r"\d+", prediction), str(ground_truth))


def fuzz_ratio(s1: str, s2: str) -> int:
    """``fuzzywuzzy.fuzz.ratio`` with its pure-Python (difflib) backend.

    ``None`` → 0; equal strings → 100; an empty string → 0; else
    ``int(round(100 * difflib.SequenceMatcher(None, s1, s2).ratio()))`` (default ``autojunk``,
    Python's round-half-to-even).
    """
    if s1 is None or s2 is None:
        return 0
    if s1 == s2:
        return 100
    if len(s1) == 0 or len(s2) == 0:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, s1, s2).ratio()))


def code_sim_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """``fuzz.ratio / 100`` between the ground truth and the prediction's first code line.

    The code line is the first line (after ``lstrip('\\n')``) that *contains* none of
    `````, ``#``, ``//`` (anywhere in the line, as officially); ``""`` if there is none. An empty
    line after a skipped one is a valid (empty) code line, as officially.
    """
    code_line = ""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            code_line = line
            break
    return fuzz_ratio(code_line, ground_truth) / 100


# --------------------------------------------------------------------------------------------
# Per-task scorers (eval.py)
# --------------------------------------------------------------------------------------------

#: Tasks whose prediction is cut to its first line (after stripping leading newlines).
FIRST_LINE_TASKS = frozenset({"trec", "triviaqa", "samsum", "lsht"})

_TASK_METRICS: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "dureader": rouge_zh_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "vcsum": rouge_zh_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "lsht": classification_score,
    "passage_count": count_score,
    "passage_retrieval_en": retrieval_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}


def as_answer_list(answers) -> list:
    """The record's answers as a list; a bare string counts as one answer (not its characters)."""
    if isinstance(answers, str):
        return [answers]
    return list(answers)


def max_over_answers(metric: Callable[..., float], prediction: str, answers: Iterable, **kwargs) -> float:
    """``max(0, metric(prediction, a, **kwargs) for a in answers)`` as the official loop computes it."""
    best = 0.0
    for answer in as_answer_list(answers):
        best = max(best, metric(prediction, answer, **kwargs))
    return float(best)


def _task_scorer(task: str, metric: Callable[..., float]) -> Callable[..., float]:
    first_line = task in FIRST_LINE_TASKS

    def scorer(prediction: str, answers, all_classes=None) -> float:
        if first_line:
            prediction = prediction.lstrip("\n").split("\n")[0]
        return max_over_answers(metric, prediction, answers, all_classes=all_classes)

    scorer.__name__ = f"score_{task.replace('-', '_')}"
    scorer.__doc__ = (
        f"Official LongBench per-example score for {task!r}: "
        + ("first line of the prediction, then " if first_line else "")
        + f"max over answers of {metric.__name__}."
    )
    return scorer


#: ``{task: fn(prediction, answers, all_classes) -> float in [0, 1]}`` for the 21 LongBench tasks.
SCORERS: dict[str, Callable[..., float]] = {task: _task_scorer(task, m) for task, m in _TASK_METRICS.items()}
