"""Official ChouBun per-example scorers (SakanaAI/evo-memory: ``choubun_metrics.py``, ``utils_longbench.py``).

ChouBun is scored by the NAMM authors' LongBench-style loop (``utils_longbench.get_score``): per
record, ``max(0, metric(prediction, answer) for answer in answers)`` (no first-line cut), with a
MeCab tagger ``fugashi.Tagger('-Owakati')`` as the tokenizer. Task score = ``100 * mean``.

* ``wiki_qa``, ``edinet_qa``, ``corp_sec_qa`` — ``qa_f1_ja_score``: token F1 over MeCab word
  surfaces, each surface normalised like LongBench's Chinese answers (lower-case, ASCII + CJK
  punctuation removed, whitespace deleted) and empty ones dropped.
* ``corp_sec_sum`` — ``rouge_ja_score``: ROUGE-L F of the ``rouge`` package (the same official
  ``rouge_score`` as LongBench, *not* Google's rouge-score, whose default tokenizer would drop
  Japanese) on the MeCab surfaces joined by single spaces; the 5 reference summaries are
  aggregated by the max over references.

MeCab runs with the ``unidic-lite`` dictionary, named explicitly (fugashi would otherwise prefer the
full ``unidic`` package when that is installed, which splits words differently).
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from tasks.scoring.longbench import max_over_answers, normalize_zh_answer, official_rouge_l_f, token_f1

__all__ = ["SCORERS", "mecab_words", "normalize_ja_answer", "qa_f1_ja_score", "rouge_ja_score"]

#: 1-based stack position of ``Rouge.get_scores`` assumed for the official run, which only matters
#: for where ``rouge`` 1.0.1's recursive LCS overflows on very long texts. The NAMM code calls it
#: from deep inside its hydra/torch trainer (depth not recoverable); we use the depth of a plain
#: ``eval.py``-style script: ``<module>`` → ``get_score`` → ``rouge_ja_score`` → ``rouge_score`` →
#: ``get_scores``.
ROUGE_JA_OFFICIAL_DEPTH = 5

_tagger = None
_tagger_lock = threading.Lock()


def _get_tagger():
    """The wakati MeCab tagger on the unidic-lite dictionary (built once)."""
    global _tagger
    if _tagger is None:
        try:
            import fugashi  # noqa: PLC0415
            import unidic_lite  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("ChouBun scoring needs `pip install fugashi unidic-lite`") from exc
        dicdir = unidic_lite.DICDIR
        _tagger = fugashi.Tagger(f'-Owakati -d "{dicdir}" -r "{os.path.join(dicdir, "mecabrc")}"')
    return _tagger


def mecab_words(text: str) -> list[str]:
    """Surfaces of the MeCab (unidic-lite) words of ``text``; MeCab drops whitespace."""
    with _tagger_lock:  # a MeCab tagger is not safe to share between threads
        return [word.surface for word in _get_tagger()(text)]


#: The official ``normalize_ja_answer`` is the LongBench Chinese normaliser (same punctuation list).
normalize_ja_answer = normalize_zh_answer


def qa_f1_ja_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """Token F1 over normalised MeCab surfaces (empty ones — punctuation, spaces — dropped)."""

    def words(text: str) -> list[str]:
        return [w for w in (normalize_ja_answer(t) for t in mecab_words(text)) if w]

    return token_f1(words(prediction), words(ground_truth))


def rouge_ja_score(prediction: str, ground_truth: str, all_classes=None) -> float:
    """ROUGE-L F (``rouge`` package, 0.0 on failure) of the space-joined MeCab surfaces.

    Surfaces are not normalised: punctuation stays as tokens, and a ``.`` token (e.g. in ``3.5``)
    splits sentences inside the package, as in the official code.
    """
    return official_rouge_l_f(
        " ".join(mecab_words(prediction)), " ".join(mecab_words(ground_truth)), ROUGE_JA_OFFICIAL_DEPTH
    )


def _task_scorer(task: str, metric: Callable[..., float]) -> Callable[..., float]:
    def scorer(prediction: str, answers, all_classes=None) -> float:
        return max_over_answers(metric, prediction, answers, all_classes=all_classes)

    scorer.__name__ = f"score_{task}"
    scorer.__doc__ = f"Official ChouBun per-example score for {task!r}: max over answers of {metric.__name__}."
    return scorer


_TASK_METRICS: dict[str, Callable[..., float]] = {
    "wiki_qa": qa_f1_ja_score,
    "edinet_qa": qa_f1_ja_score,
    "corp_sec_qa": qa_f1_ja_score,
    "corp_sec_sum": rouge_ja_score,
}

#: ``{task: fn(prediction, answers, all_classes) -> float in [0, 1]}`` for the 4 ChouBun tasks.
SCORERS: dict[str, Callable[..., float]] = {task: _task_scorer(task, m) for task, m in _TASK_METRICS.items()}
